"""``quantize``: choose each layer's weight bits under an accuracy budget, and write the result.

Like ``compress``, the data is split once (seeded) into a search split that every candidate
is scored on and a held-out split that only the final model sees. ``run_search`` is shared
with ``compress --quantize``, which quantizes the pruned model under what is left of the budget.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from svtprune.data import Dataset, load_npz
from svtprune.errors import ConstraintError, UserError
from svtprune.evaluate import top1
from svtprune.graph.io import load_model, param_bytes, save_model, write_text_atomic, written_bytes
from svtprune.quantization import BITS, Quantizer, QuantScheme, bits_table, stored_bytes
from svtprune.runtime import latency_ms, logits_of, make_session
from svtprune.search.drift import DriftProbe
from svtprune.search.held_out import held_out_choice, steps_back
from svtprune.search.quant_search import SEARCHES, QuantBudget, QuantExecutor, QuantMeasurement, QuantResult

SEARCH_SHARE_OF_BUDGET = 0.8  # as in compress: a fifth of the budget absorbs held-out noise
DRIFT_IMAGES = 64
# the commands have images to calibrate on, so they default to gptq: on the reference Spikformer greedy saved
# 91.5% at -0.85 held-out with it vs 90.1% at -1.45 with mse (BENCHMARKS.md, issue 6); the library's
# QuantScheme stays mse, which needs no data
DEFAULT_ROUNDING = "gptq"
# the commands store scales as uint8 codes (``scale_codes=True`` below): on the reference Spikformer 1,290 fewer
# bytes (0.2 points of saving) at accuracy within noise for uniform 8, 4 and 2 bits (BENCHMARKS.md, issue 6);
# and a layer's biases as int8 once its weight is at 4 bits or fewer (``side_int8=True``): 1,280 fewer bytes on
# the reference Spikformer at 2 and 4 bits, 3,372 on the SDT, accuracy within noise (BENCHMARKS.md, issue 6)
GPTQ_IMAGES = 256  # search-split images whose layer inputs give gptq's Hessians (4 s on the reference model)


def command_scheme(rounding: str | None, scale_codes: bool, side_int8: bool, **layout: int | bool) -> QuantScheme:
    """The commands' defaults: gptq rounding, and what the user chose for scales and side vectors."""
    return QuantScheme(rounding=rounding or DEFAULT_ROUNDING, scale_codes=scale_codes, side_int8=side_int8, **layout)


def parse_bits(text: str | tuple[int, ...]) -> tuple[int, ...]:
    """'8,4,2' -> (8, 4, 2); rejects widths the exporter cannot store."""
    try:
        widths = tuple(int(b) for b in text.split(",")) if isinstance(text, str) else tuple(text)
    except ValueError:
        raise UserError(f"--bits must be a comma-separated list such as 8,4,2, not {text!r}") from None
    if not widths or any(b not in BITS for b in widths):
        raise UserError(f"--bits must be chosen from {', '.join(map(str, BITS))}; got {text}")
    return tuple(sorted(set(widths), reverse=True))


def run_search(
    model: onnx.ModelProto,
    search: Dataset,
    target: np.ndarray,
    budget: QuantBudget,
    method: str,
    widths: tuple[int, ...],
    scheme: QuantScheme,
    beam_width: int,
    progress: Callable[[str], None],
) -> tuple[QuantResult, QuantExecutor]:
    """The bit-width search on ``model``; the budget's baseline may belong to an earlier model.

    gptq's calibration images come from the search split (never the held-out one); its Hessians
    are computed once, from ``model``'s own layer inputs, and serve every candidate.
    """
    if method not in SEARCHES:
        raise UserError(f"unknown --search {method!r}; choose one of {', '.join(SEARCHES)}")
    if beam_width < 1:
        raise UserError("--beam-width must be >= 1")
    quantizer = Quantizer(model, scheme, calib=search.x[:GPTQ_IMAGES])
    probe = None if method == "exhaustive" else DriftProbe(model, search.x[:DRIFT_IMAGES])
    executor = QuantExecutor(quantizer, search, target, probe)
    if method == "beam":
        result = SEARCHES[method](executor, budget, widths, progress, width=beam_width)
    else:
        result = SEARCHES[method](executor, budget, widths, progress)
    return result, executor


def quantization_section(result: QuantResult, executor: QuantExecutor, method: str, started: float) -> dict:
    """What the search chose and what it cost, for the report (also used by compress)."""
    return {
        "search": method,
        "scheme": vars(executor.quantizer.scheme),
        "layers": bits_table(executor.quantizer, result.bits),
        "full_evaluations": len(executor.records),
        "proxy_evaluations": len(executor._drifts),
        "gated_out": executor.gated,
        "proxy_seconds": round(executor.drift_seconds, 2),
        "search_seconds": round(time.perf_counter() - started, 2),
        "sensitivity": {k: [list(p) for p in v] for k, v in result.sensitivity.items()},
        "gptq_without_hessian": _without_hessian(executor.quantizer),
        "evaluations": [r.to_dict() for r in executor.records],
    }


def _without_hessian(quantizer: Quantizer) -> list[str]:
    """Layers gptq could not lay out as features (they were rounded as mse does)."""
    if quantizer.scheme.rounding != "gptq":
        return []
    return [name for name, h in quantizer.hessians().items() if h is None]


def quantize(
    model_path: str | Path,
    data_path: str | Path,
    out: str | Path,
    max_accuracy_drop: float = 1.5,
    search: str = "greedy",
    bits: str | tuple[int, ...] = (8, 4, 2),
    beam_width: int = 4,
    calib: int | None = None,
    seed: int = 0,
    symmetric: bool = True,
    block_size: int = 0,
    rounding: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    finetune_data: str | Path | None = None,
    finetune_epochs: int = 1,
    finetune_lr: float = 3e-4,
    finetune_search_drop: float | None = None,
    scale_codes: bool = True,
    side_int8: bool = True,
) -> dict:
    """Quantize ``model_path``'s weights layer by layer as far as the budget allows; returns the report.

    With ``finetune_data`` the search may lose ``finetune_search_drop`` points (default 3x the budget),
    then the chosen model is fine-tuned on its stored grids before the held-out check (no step-back:
    each step back would need its own fine-tuning).
    Raises ConstraintError (carrying the report) when even the best setting breaks the budget.
    """
    from svtprune.search.compress import FINETUNE_SEARCH_FACTOR, check_finetune_inputs, split

    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it")
    if max_accuracy_drop < 0:
        raise UserError("--max-accuracy-drop must be >= 0")
    widths = parse_bits(bits)
    scheme = command_scheme(rounding, scale_codes, side_int8, symmetric=symmetric, block_size=block_size)
    say = progress or (lambda _message: None)
    original = load_model(model_path)
    search_part, held = split(load_npz(data_path), calib, seed)
    tune_data = check_finetune_inputs(
        original, search_part, finetune_data, finetune_epochs, finetune_search_drop, finetune_lr
    )  # checked before the search, so a bad file fails in seconds
    session = make_session(original)
    targets, baseline = {}, {}
    for name, part in (("search", search_part), ("held", held)):
        logits = logits_of(session, part.x)
        targets[name] = part.y if part.y is not None else logits.argmax(axis=1)
        baseline[name] = top1(logits, targets[name])
    search_drop = max_accuracy_drop
    if tune_data is not None:
        search_drop = finetune_search_drop if finetune_search_drop is not None else FINETUNE_SEARCH_FACTOR * search_drop
    budget = QuantBudget(baseline["search"], SEARCH_SHARE_OF_BUDGET * search_drop)
    result, executor = run_search(
        original, search_part, targets["search"], budget, search, widths, scheme, beam_width, say
    )
    say("measuring the chosen model on the held-out split")
    finetune = None
    if tune_data is None:
        final, held_accuracy, checks = held_out_bits(
            executor, budget, result, held, targets["held"], lambda a: baseline["held"] - a <= max_accuracy_drop, say
        )
    else:
        from svtprune.recover.finetune import finetune_model

        final, checks = executor.quantizer.apply(result.bits), []
        before = top1(logits_of(make_session(final), held.x), targets["held"])
        say("fine-tuning on the quantization grids")
        final, finetune = finetune_model(
            final, session, tune_data, search_part, finetune_epochs, seed, finetune_lr, log=say
        )
        held_accuracy = top1(logits_of(make_session(final), held.x), targets["held"])
        finetune.update(data=str(finetune_data), search_budget_points=budget.max_drop, quantization_aware=True)
        finetune.update(accuracy_before=round(before, 3), accuracy_after=round(held_accuracy, 3))
    final_session = make_session(final)
    original_bytes, final_bytes = param_bytes(original), param_bytes(final)
    drop = baseline["held"] - held_accuracy
    met = drop <= max_accuracy_drop
    report = {
        "command": "quantize",
        "method": f"aq4svit-{search}",
        "model": str(model_path),
        "data": {
            "path": str(data_path),
            "labels": search_part.y is not None,
            "seed": seed,
            "search_images": len(search_part),
            "held_out_images": len(held),
        },
        "constraints": {"max_accuracy_drop": max_accuracy_drop, "search_budget_points": budget.max_drop},
        "metric": "top1 accuracy" if search_part.y is not None else "top1 agreement with the original",
        "runtime": "ONNX Runtime CPU, default session options (as a user runs the file)",
        "original": {
            "param_bytes": original_bytes,
            "file_bytes": Path(model_path).stat().st_size,
            "accuracy": round(baseline["held"], 3),
            "accuracy_search": round(baseline["search"], 3),
            "latency_ms_b1": round(latency_ms(session, 1), 3),
            "latency_ms_b64": round(latency_ms(session, 64, repeats=5), 2),
        },
        "compressed": {
            "param_bytes": final_bytes,
            "file_bytes": written_bytes(final),
            "accuracy": round(held_accuracy, 3),
            "accuracy_search": round(result.best.accuracy, 3) if result.best else round(baseline["search"], 3),
            "latency_ms_b1": round(latency_ms(final_session, 1), 3),
            "latency_ms_b64": round(latency_ms(final_session, 64, repeats=5), 2),
        },
        "memory_saving": round(1 - final_bytes / original_bytes, 5),
        "accuracy_drop": round(drop, 3),
        "constraints_met": met,
        "reason": "constraints met"
        if met
        else f"accuracy drop {drop:.2f} points on held-out data exceeds {max_accuracy_drop}",
        "quantization": {
            **quantization_section(result, executor, search, started),
            "stored_bytes": stored_bytes(final),
        },
        "evaluations": [r.to_dict() for r in executor.records],
        "held_out_checks": checks,
    }
    if finetune is not None:
        report["finetune"] = finetune
    report["wall_seconds"] = round(time.perf_counter() - started, 2)
    if not met:
        raise ConstraintError(report["reason"], report)
    from svtprune.report import write_reports

    save_model(final, out, force=True)
    plan = {"format": "svtprune-quant-plan/1", "source": str(model_path), "scheme": vars(scheme), "bits": result.bits}
    write_text_atomic(out.with_suffix(".plan.json"), json.dumps(plan, indent=1) + "\n")
    write_reports(report, out)
    return report


def _bits_key(record: QuantMeasurement) -> tuple:
    return tuple(sorted(record.bits.items()))


def held_out_bits(
    executor: QuantExecutor,
    budget: QuantBudget,
    result: QuantResult,
    held: Dataset,
    target: np.ndarray,
    holds: Callable[[float], bool],
    say: Callable[[str], None],
) -> tuple[onnx.ModelProto, float, list[dict]]:
    """The chosen bits' model and held-out accuracy; on a miss, the first fewer-bit-savings setting that holds.

    ``result`` is updated in place when a step back is taken.
    """
    steps = steps_back(executor.records, budget.accepts, _bits_key, result.best.param_bytes) if result.best else []
    final, accuracy, step, checks = held_out_choice(
        (result.best.label if result.best else "fp32", executor.quantizer.apply(result.bits)), steps,
        lambda s: executor.quantizer.apply(s.bits), lambda m: top1(logits_of(make_session(m), held.x), target),
        holds, say,
    )  # fmt: skip
    if step is not None:
        result.bits, result.best = dict(step.bits), step
    return final, accuracy, checks


def quantize_after_pruning(
    pruned: onnx.ModelProto,
    search: Dataset,
    target: np.ndarray,
    baseline: float,
    budget_points: float,
    method: str,
    bits: str | tuple[int, ...],
    beam_width: int,
    progress: Callable[[str], None],
    held: tuple[Dataset, np.ndarray, Callable[[float], bool]] | None,
    rounding: str | None = None,
    scale_codes: bool = True,
    side_int8: bool = True,
) -> tuple[onnx.ModelProto, float | None, dict]:
    """``compress --quantize``: bit widths for the pruned model, measured against the *original* baseline.

    The budget is the whole search budget, so quantization gets exactly what pruning left of it.
    ``held`` (data, target, the user's constraint) is the held-out check, with its step-back; None
    when fine-tuning follows (the check then applies to the fine-tuned model, and no accuracy is returned).
    Returns the model, its held-out accuracy and the report section.
    """
    started = time.perf_counter()
    budget = QuantBudget(baseline, budget_points)
    result, executor = run_search(
        pruned,
        search,
        target,
        budget,
        method,
        parse_bits(bits),
        command_scheme(rounding, scale_codes, side_int8),
        beam_width,
        progress,
    )
    if held is None:
        final, accuracy, checks = executor.quantizer.apply(result.bits), None, []
    else:
        final, accuracy, checks = held_out_bits(executor, budget, result, *held, progress)
    section = quantization_section(result, executor, method, started)
    section["held_out_checks"] = checks
    return final, accuracy, section
