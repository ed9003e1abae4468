"""The analyze / prune / verify jobs as library calls; the CLI is a thin layer over these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.graph.analysis import Analysis, analyze, constants_of
from svtprune.graph.io import load_model, param_bytes, save_model, write_text_atomic
from svtprune.graph.plan import Plan, keep_mask, uniform_plan
from svtprune.graph.surgery import prune, zero_out
from svtprune.importance import group_scores
from svtprune.runtime import make_session, predict
from svtprune.spiking.neurons import find_neurons, with_taps


def group_table(analysis: Analysis) -> list[dict]:
    """One row per group: what a person needs to decide what to prune."""
    weights = constants_of(analysis.model)
    rows = []
    for group in analysis.groups:
        params = 0
        atoms = set(np.flatnonzero(np.isin(analysis.channel_of_atom, group.channels)).tolist())
        for member in group.members:
            tensor = weights[member.initializer]
            per_slice = tensor.size // max(tensor.shape[member.axis], 1)
            params += per_slice * sum(1 for a in member.ids.tolist() if a in atoms)
        rows.append(
            {
                "group": group.name,
                "channels": group.size,
                "heads": len(group.head_rows),
                "params": int(params),
                "members": sorted({f"{m.initializer}[{m.axis}]:{m.role}" for m in group.members}),
                "prunable": group.prunable,
                "refused": group.refused,
            }
        )
    return rows


def analyze_report(path: str | Path) -> dict:
    model = load_model(path)
    analysis = analyze(model)
    neurons = find_neurons(analysis.model)
    return {
        "model": str(path),
        "nodes": len(model.graph.node),
        "param_bytes": param_bytes(model),
        "groups": group_table(analysis),
        "neurons": [
            {"name": n.name, "time_steps": n.time_steps, "threshold": n.thresholds[0], "after": n.feeds_from}
            for n in neurons
        ],
    }


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    original_bytes: int
    pruned_bytes: int
    expected_bytes: int


def prune_uniform(path: str | Path, ratio: float, importance: str = "l2") -> PruneResult:
    """The PSViT first step: the same ratio in every prunable group, filters ranked by norm."""
    if not 0.0 <= ratio < 1.0:
        raise UserError(f"--ratio must be in [0, 1), got {ratio}")
    model = load_model(path)
    analysis = analyze(model)
    if not analysis.prunable_groups:
        reasons = "; ".join(sorted({r for g in analysis.groups for r in g.refused})) or "no weighted layers"
        raise UserError(f"{path}: no prunable channel group ({reasons})")
    plan = uniform_plan(analysis, ratio, group_scores(analysis, importance))
    plan.meta.update({"source": str(path), "importance": importance})
    pruned = prune(analysis, plan)
    expected = expected_param_bytes(analysis, plan)
    return PruneResult(pruned, plan, param_bytes(model), param_bytes(pruned), expected)


def expected_param_bytes(analysis: Analysis, plan: Plan) -> int:
    """What the file should weigh after the plan, from the plan alone (not from surgery).

    A weight cut on two axes (a layer that consumes one group and produces another) keeps
    the product of the kept fractions, so this is per tensor, not a sum over groups.
    """
    atom_keep = keep_mask(analysis, plan)
    kept_along: dict[str, dict[int, int]] = {}
    for member in analysis.members:
        kept_along.setdefault(member.initializer, {})[member.axis] = int(atom_keep[member.ids].sum())
    total = 0
    for tensor in analysis.model.graph.initializer:
        dims = list(tensor.dims)
        for axis, count in kept_along.get(tensor.name, {}).items():
            dims[axis] = count
        total += int(np.prod(dims)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total


def write_outputs(result: PruneResult, out: str | Path, plan_out: str | Path | None, force: bool) -> Path:
    out = Path(out)
    plan_path = Path(plan_out) if plan_out else out.with_suffix(".plan.json")
    if plan_path.exists() and not force:
        raise UserError(f"{plan_path} already exists; pass --force to overwrite it")
    save_model(result.model, out, force=force)
    write_text_atomic(plan_path, result.plan.to_json())
    return plan_path


TIE = 1e-4  # a membrane this close to its threshold may fire or not depending on summation order


def verify(original: str | Path, pruned: str | Path, plan_path: str | Path, x: np.ndarray | None = None) -> dict:
    """Run the oracle: the pruned file must equal the original with the plan's slices zeroed.

    A sample matches when its logits agree to 1e-4 and every neuron's spike count per time step
    is identical. Fewer input channels change the order in which a layer sums in float32, so a
    membrane sitting on its threshold can fire in one model and not the other; a sample whose
    first difference is such a tie (the oracle holds at least as many near-threshold membranes
    as spikes differ there) is counted as a tie, not as a failure.
    """
    analysis = analyze(load_model(original))
    oracle = zero_out(analysis, Plan.load(plan_path))
    candidate = load_model(pruned)
    x = _random_input(analysis.model) if x is None else x
    neurons_o, neurons_p = find_neurons(oracle), find_neurons(candidate)
    out_o = _run(with_taps(oracle, neurons_o, spikes=True), x)
    out_p = _run(with_taps(candidate, neurons_p, spikes=True), x)
    logits_o, logits_p = out_o[oracle.graph.output[0].name], out_p[candidate.graph.output[0].name]
    counts_o, counts_p = _spike_counts(oracle, out_o), _spike_counts(candidate, out_p)
    if len(counts_o) != len(counts_p):
        return {"passed": False, "reason": "different neuron counts", "samples": int(len(x))}
    exact, ties, failures = 0, 0, 0
    for sample in range(len(x)):
        divergence = _first_divergence(counts_o, counts_p, sample)
        if divergence is None:
            close = np.abs(logits_o[sample] - logits_p[sample]).max() <= 1e-4
            exact, failures = exact + close, failures + (not close)
        elif _is_tie(neurons_o[divergence[0]], divergence, out_o, sample, counts_o, counts_p):
            ties += 1
        else:
            failures += 1
    matched = np.abs(logits_o - logits_p).max(axis=1) <= 1e-4
    return {
        "samples": int(len(x)),
        "exact": int(exact),
        "threshold_ties": int(ties),
        "failures": int(failures),
        "max_logit_difference_exact_samples": float(np.abs(logits_o - logits_p)[matched].max(initial=0.0)),
        "neurons": len(counts_o),
        "passed": failures == 0,
    }


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


def _spike_counts(model: onnx.ModelProto, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [
        np.stack([outputs[s].reshape(outputs[s].shape[0], -1).sum(axis=1) for s in neuron.spikes])
        for neuron in find_neurons(model)
    ]


def _random_input(model: onnx.ModelProto, batch: int = 8) -> np.ndarray:
    value = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return predict(make_session(model), x)
