"""The verify job: a pruned file must equal the original with the plan's slices zeroed (the oracle).

A re-fitted file is checked through the plain prune of its plan (see ``verify_refit``), and so is a
quantized or fine-tuned one (see ``verify_rewritten``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from svtprune.checks import load_checked_model
from svtprune.errors import UserError
from svtprune.graph.analysis import analyze
from svtprune.graph.plan import Plan
from svtprune.graph.surgery import prune, zero_out
from svtprune.jobs.fold_step import refold
from svtprune.jobs.token_step import with_plan_tokens
from svtprune.jobs.verify_refit import refit_section, shape_only_groups
from svtprune.jobs.verify_rewritten import rewritten_section
from svtprune.quantization.scheme import FP32
from svtprune.recover.time_cut import as_recovered
from svtprune.runtime_layout import as_logits, logits_layout
from svtprune.spiking.compute_once import compute_once
from svtprune.spiking.neurons import find_neurons, with_taps
from svtprune.spiking.time_axis import find_time_axis
from svtprune.spiking.timesteps import shorten

TIE = 1e-4  # a membrane this close to its threshold may fire or not depending on summation order
RANDOM_SAMPLES = 8  # random images checked when the user gives no data
DATA_SAMPLES = 64  # images of the user's data checked when they do not say how many


def verify(
    original: str | Path,
    pruned: str | Path,
    plan_path: str | Path,
    x: np.ndarray | None = None,
    samples: int = RANDOM_SAMPLES,
) -> dict:
    """Run the oracle: the pruned file must equal the original with the plan's slices zeroed.

    A plan that records a least-squares re-fit (``compress --reconstruct``, the demo), weight bits
    (``quantize``, ``compress --quantize``) or a fine-tuning names weights that are no longer the
    original's, so the oracle cannot hold for the file. Then the plain prune of the same plan is
    checked against the oracle and the file against that prune: after a re-fit alone, exactly (every
    node, every weight outside the re-fitted ones, the shapes of those); after quantization or
    fine-tuning, by structure (every node, every constant's shape: each group's widths) and, if
    quantized, by its grids (``verify_rewritten``). How far the file's outputs moved from the plain
    prune is reported beside the verdict, not as part of it. ``checks`` names what was checked.
    Without ``x``, ``samples`` seeded random images.
    """
    plan = Plan.load(plan_path)
    source, time_line = at_plan_steps(load_checked_model(original), plan.meta, original)
    analysis = analyze(source)
    oracle = zero_out(analysis, plan)
    candidate, recovered = as_recovered(load_checked_model(pruned), plan.meta)  # a head re-fit after a time cut
    refit = sorted(set(plan.refit) | set(recovered))  # ... is checked as the re-fit of its layers
    x = random_input(analysis.model, samples) if x is None else x
    finetuned = bool(plan.meta.get("finetuned"))
    quantized = any(b != FP32 for b in plan.bits.values())
    if not (refit or quantized or finetuned):
        result = {**compare_with_oracle(oracle, candidate, x), "checks": "oracle", "oracle_on": "the file"}
        return {**result, "time_steps": time_line} if time_line else result
    plain = prune(analysis, plan) if plan.kept else source  # a plan of bits only (quantize) prunes nothing
    result = {**compare_with_oracle(oracle, plain, x), "oracle_on": "the plain prune of the plan"}
    plain = refold(plain, plan.meta)  # the file's BNs were folded into their layers: the plain prune's are too
    if time_line:
        result["time_steps"] = time_line + ", the head re-fitted after the cut" * bool(recovered)
    if quantized or finetuned:
        section = rewritten_section(candidate, plain, plan.bits, refit, x)
        holds = section.pop("passed")
        result["rewritten"] = {**section, "finetuned": finetuned, "refit_layers": refit}
        result["checks"] = "structure" + " + quantization grid" * ("quantization" in section)
    else:
        result["refit"] = refit_section(candidate, plain, refit, x)
        result["refit"]["groups_checked_by_width_only"] = shape_only_groups(analysis, plan)
        holds = not result["refit"]["structure_differences"]
        result["checks"] = "structure (exact outside the re-fitted layers)"
    result["passed"] = result["passed"] and holds
    return result


def at_plan_steps(model: onnx.ModelProto, meta: dict, path: str | Path) -> tuple[onnx.ModelProto, str | None]:
    """The original as the plan's time edits leave it (``timesteps``, ``stem_once`` in its meta), and a line saying so.

    Both edits are exact (the first T' steps of every neuron as before; the stem's outputs bit for bit), so
    the oracle of a time-cut plan is the original cut the same way, with the plan's slices zeroed. Channels
    and the cut commute (the cut changes only constants that spell T), so a plan pruned before the cut
    (``prune --timesteps --ratio``) and one searched after it (``compress``) are checked alike."""
    steps, once = meta.get("timesteps"), bool(meta.get("stem_once"))
    if steps is None and not once:
        return model, None
    axis = find_time_axis(model)
    if isinstance(axis, str):
        raise UserError(f"{path}: the plan runs {steps} time steps but the original has no time axis: {axis}")
    if steps is None:
        steps = axis.steps
    if not 1 <= steps <= axis.steps:
        raise UserError(f"{path}: the plan runs {steps} time steps; the original runs {axis.steps}")
    if once:
        model, _ = compute_once(model, axis, steps)
    elif steps != axis.steps:
        model = shorten(model, axis, steps)
    model, tokens = with_plan_tokens(model, meta, path)
    line = f"oracle: the original at {steps} of its {axis.steps} time steps" + ", stem once" * once
    return model, line + (f", {tokens}" if tokens else "")


VERIFY_CHUNK = 8  # at most this many images' spikes and membranes held at once
# and at most this many bytes of them: at 224 px both models' taps take ~0.9 GB per image, and 8 images at
# once took verify to 7.95 GB on a 16.8M-parameter Spikformer (docs/benchmark-log.md, "At 224 pixels")
TAP_BUDGET = 1 << 30


def compare_with_oracle(
    oracle: onnx.ModelProto, candidate: onnx.ModelProto, x: np.ndarray, chunk: int = VERIFY_CHUNK
) -> dict:
    """Per sample: identical logits (1e-4) and spike counts, a threshold tie, or a failure.

    ``firing`` is the share of the oracle's neuron outputs that are spikes: at 0 nothing fired in either
    model (or the samples would fail), so identical spike counts prove nothing about the pruned channels.

    Fewer input channels change the order in which a layer sums in float32, so a
    membrane sitting on its threshold can fire in one model and not the other; a sample whose
    first difference is such a tie (the oracle holds at least as many near-threshold membranes
    as spikes differ there) is counted as a tie, not as a failure. Images go ``chunk`` at a
    time, so memory is bounded by the model, not by the number of images checked.
    """
    from svtprune.runtime import make_session

    neurons_o, neurons_p = find_neurons(oracle), find_neurons(candidate)
    if len(neurons_o) != len(neurons_p):
        return {"passed": False, "reason": "different neuron counts", "samples": int(len(x))}
    steps = ({n.time_steps for n in neurons_o}, {n.time_steps for n in neurons_p})
    if steps[0] != steps[1]:  # a time-cut file against an oracle at other steps (a plan without its time meta)
        reason = f"the neurons run {sorted(steps[1])} time steps, the oracle's {sorted(steps[0])}"
        return {"passed": False, "reason": reason, "samples": int(len(x))}
    sessions = (
        make_session(with_taps(oracle, neurons_o, spikes=True)),
        make_session(with_taps(candidate, neurons_p, spikes=True)),
    )
    for session in sessions:
        logits_layout(session)  # unscorable logits are refused before anything runs
    outputs = (oracle.graph.output[0].name, candidate.graph.output[0].name)
    tally = {"exact": 0, "threshold_ties": 0, "failures": 0}
    spikes = [0, 0]  # the oracle's spikes, and its neuron outputs
    largest, start, size = 0.0, 0, 1  # the first image alone: its taps say how many fit in TAP_BUDGET
    while start < len(x):
        part = x[start : start + size]
        difference, per_image = _compare_chunk(sessions, outputs, (neurons_o, neurons_p), part, tally, spikes)
        largest, start = max(largest, difference), start + len(part)
        size = int(max(1, min(chunk, TAP_BUDGET // max(per_image, 1))))
    return {
        "samples": int(len(x)),
        **tally,
        "max_logit_difference_exact_samples": largest,
        "neurons": len(neurons_o),
        "firing": spikes[0] / spikes[1] if spikes[1] else None,
        "passed": tally["failures"] == 0,
    }


def _compare_chunk(
    sessions: tuple, outputs: tuple[str, str], neurons: tuple, x: np.ndarray, tally: dict, spikes: list[int]
) -> tuple[float, int]:
    """Adds one chunk's samples to ``tally`` and the oracle's spikes and neuron outputs to ``spikes``; returns
    its largest logit difference among matching samples and the bytes both models' taps took per image."""
    from svtprune.runtime import predict

    out_o, out_p = predict(sessions[0], x), predict(sessions[1], x)
    logits_o, logits_p = as_logits(sessions[0], out_o[outputs[0]]), as_logits(sessions[1], out_p[outputs[1]])
    counts_o, counts_p = _spike_counts(neurons[0], out_o), _spike_counts(neurons[1], out_p)
    spikes[0] += int(sum(c.sum() for c in counts_o))
    spikes[1] += sum(out_o[s].size for neuron in neurons[0] for s in neuron.spikes)
    for sample in range(len(x)):
        divergence = _first_divergence(counts_o, counts_p, sample)
        if divergence is None:
            close = np.abs(logits_o[sample] - logits_p[sample]).max() <= 1e-4
            tally["exact" if close else "failures"] += 1
        elif _is_tie(neurons[0][divergence[0]], divergence, out_o, sample, counts_o, counts_p):
            tally["threshold_ties"] += 1
        else:
            tally["failures"] += 1
    matched = np.abs(logits_o - logits_p).max(axis=1) <= 1e-4
    per_image = sum(v.nbytes for out in (out_o, out_p) for v in out.values()) // len(x)
    return float(np.abs(logits_o - logits_p)[matched].max(initial=0.0)), per_image


def _first_divergence(counts_o: list, counts_p: list, sample: int) -> tuple[int, int] | None:
    """(neuron, time step) where the two models' spike counts first differ, in graph order."""
    for index, (a, b) in enumerate(zip(counts_o, counts_p, strict=True)):
        steps = np.flatnonzero(a[:, sample] != b[:, sample])
        if len(steps):
            return index, int(steps[0])
    return None


def _is_tie(neuron, where: tuple[int, int], outputs: dict, sample: int, counts_o: list, counts_p: list) -> bool:  # noqa: ANN001
    index, step = where
    membrane = outputs[neuron.membranes[step]][sample]
    near = int((np.abs(membrane - neuron.thresholds[step]) <= TIE * max(1.0, abs(neuron.thresholds[step]))).sum())
    return near >= abs(int(counts_o[index][step, sample]) - int(counts_p[index][step, sample])) > 0


def _spike_counts(neurons: list, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [
        np.stack([outputs[s].reshape(outputs[s].shape[0], -1).sum(axis=1) for s in neuron.spikes]) for neuron in neurons
    ]


def random_input(model: onnx.ModelProto, samples: int = RANDOM_SAMPLES) -> np.ndarray:
    """``samples`` seeded random images of the input's size (a fixed batch runs them in chunks of its size)."""
    value = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else samples for d in value.type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal([samples, *dims[1:]]).astype(np.float32)


def verify_files(
    original: str | Path,
    pruned: str | Path,
    plan: str | Path,
    data: str | Path | None = None,
    samples: int | None = None,
    preprocess: str | Path | None = None,
) -> dict:
    """``verify`` on the first ``samples`` images of ``data`` (default 64), or ``samples`` random images (default 8)."""
    from svtprune.data_sources import check_preprocess_used, load_data

    if samples is not None and samples < 1:
        raise UserError(f"must be at least 1, got {samples}", option="samples")
    check_preprocess_used(preprocess, [data])
    if data is None:
        return verify(original, pruned, plan, None, samples or RANDOM_SAMPLES)
    return verify(original, pruned, plan, load_data(data, preprocess).x[: samples or DATA_SAMPLES])
