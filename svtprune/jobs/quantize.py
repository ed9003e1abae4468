"""``quantize``: choose each layer's weight bits under an accuracy budget, and write the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from svtprune.checks import load_checked_data, load_checked_model
from svtprune.costs import Started
from svtprune.data_sources import check_preprocess_used
from svtprune.errors import ConstraintError
from svtprune.graph.io import model_bytes, param_bytes, written_bytes
from svtprune.graph.plan import Plan
from svtprune.hardware.profile import profile_summary
from svtprune.jobs.common import (
    Say,
    Start,
    claim_outputs,
    split,
    tuning,
    worse_than_input,
    write_outputs,
)
from svtprune.jobs.compress_report import sequential_section
from svtprune.jobs.options import QuantizeOptions
from svtprune.jobs.quant_step import command_scheme, fastest_layout, quant_budget, quantization_section, run_search
from svtprune.outputs import OutputSet
from svtprune.quantization import stored_bytes
from svtprune.runtime import edge_measures, latency_ms, make_session
from svtprune.search.budget import Budget
from svtprune.search.held_out import bits_held_out
from svtprune.search.pareto import explored
from svtprune.search.quant_executor import QuantExecutor
from svtprune.search.records import SearchResult


def quantize(
    model_path: str | Path,
    data_path: str | Path,
    out: str | Path,
    max_accuracy_drop: float | None = None,
    *,
    options: QuantizeOptions | None = None,
    progress: Say | None = None,
    **fields: Any,
) -> dict:
    """Quantize ``model_path``'s weights layer by layer as far as the budget allows; returns the report.

    ``options``, or the same as keywords after the budget (``max_accuracy_drop=1.5, search="beam", bits="8,4"``).
    With fine-tuning data the search may lose ``finetune_search_drop`` points (default 3x the budget),
    then the chosen model is fine-tuned on its stored grids before the held-out check (no step-back:
    each step back would need its own fine-tuning).
    Raises ConstraintError (carrying the report) when even the best setting breaks the budget.
    """
    started = Started()
    if max_accuracy_drop is not None:
        fields["max_accuracy_drop"] = max_accuracy_drop
    options = options or QuantizeOptions.from_fields(**fields)
    inputs = (model_path, data_path, options.finetune.finetune_data)
    with claim_outputs(Path(out), inputs, options.force, options.format) as outputs:
        return quantize_claimed(model_path, data_path, outputs, options, progress or (lambda _message: None), started)


def quantize_claimed(
    model_path: str | Path,
    data_path: str | Path,
    outputs: OutputSet,
    options: QuantizeOptions,
    say: Say,
    started: Started,
) -> dict:
    """The quantize job once its output files are claimed (``quantize`` validates and claims)."""
    quant = options.quant
    scheme = command_scheme(quant, symmetric=quant.symmetric, block_size=quant.block_size)
    original = load_checked_model(model_path)
    check_preprocess_used(options.preprocess, [data_path, options.finetune.finetune_data])
    data = load_checked_data(data_path, original, options.preprocess)
    search_part, held = split(data, options.split, say)
    tune = tuning(
        original, search_part, options.finetune, options.split.seed, options.preprocess
    )  # a bad file fails in seconds
    start = Start.measure(original, search_part, held, len(data))
    budget = quant_budget(start.baseline["search"], options.points, len(held))
    targets, logits = start.targets["search"], start.logits["search"]
    result, executor = run_search(original, search_part, targets, budget, quant, scheme, say, logits)
    say("measuring the chosen model on the held-out split")
    finetune = None
    if tune is None:
        holds = start.holds(options.max_accuracy_drop)
        final, held_accuracy, checks = bits_held_out(
            executor, budget, result, held, start.targets["held"], holds, say, start.baseline["held"]
        )
    else:
        final, checks = executor.build(result.bits), []
        before = start.held_accuracy(final)
        say("fine-tuning on the quantization grids")
        notes = {"search_budget_points": budget.max_drop, "quantization_aware": True}
        final, finetune, held_accuracy = tune.run(final, before, start, notes, say)
    section = quantization_section(result, executor, quant.search, started.at)
    executor.release()
    layout = None
    if options.layout == "fastest":
        final, held_accuracy, layout = fastest_layout(final, held_accuracy, start, options.max_accuracy_drop, say)
    report = _report(model_path, data_path, options, start, original, final, held_accuracy, result, budget, executor)
    report["quantization"] = {
        **section,
        "stored_bytes": stored_bytes(final),
        "layout": layout,
    }
    report["evaluations"] = [r.to_dict() for r in executor.records]
    report["held_out_checks"] = checks
    report["profile"] = profile_summary(Path(model_path), final)  # where the batch-1 time goes, layer by layer
    if finetune is not None:
        report["finetune"] = finetune
    report["pareto"] = explored(report)
    report.update(started.cost())
    if not report["constraints_met"]:
        raise ConstraintError(report["reason"], report)
    meta = {"source": str(model_path), "method": f"aq4svit-{quant.search}", "scheme": vars(scheme)}
    if finetune is not None:  # verify then compares the file by structure and grids, not value for value
        meta["finetuned"] = {"data": str(options.finetune.finetune_data), "epochs": options.finetune.finetune_epochs}
    write_outputs(outputs, final, Plan({}, meta, dict(result.bits)).to_json() + "\n", report, options.format)
    return report


def _report(
    model_path: str | Path,
    data_path: str | Path,
    options: QuantizeOptions,
    start: Start,
    original: onnx.ModelProto,
    final: onnx.ModelProto,
    held_accuracy: float,
    result: SearchResult,
    budget: Budget,
    executor: QuantExecutor,
) -> dict:
    """The report's fixed part (keys used from outside: original/compressed bytes and accuracy, saving, drop)."""
    final_session = make_session(final)
    original_bytes, final_bytes = param_bytes(original), param_bytes(final)
    drop = start.baseline["held"] - held_accuracy
    reasons = []
    if drop > options.max_accuracy_drop:
        reasons.append(f"accuracy drop {drop:.2f} points on held-out data exceeds {options.max_accuracy_drop}")
    file_bytes = (Path(model_path).stat().st_size, written_bytes(final))
    reasons += worse_than_input(1 - final_bytes / original_bytes, file_bytes)
    met = not reasons
    return {
        "command": "quantize",
        "method": f"aq4svit-{options.quant.search}",
        "model": str(model_path),
        "data": start.data_section(data_path, options.split.seed),
        "constraints": {
            "max_accuracy_drop": options.max_accuracy_drop,
            "search_budget_points": budget.max_drop,
            "sequential_test": sequential_section(budget, executor),
        },
        "metric": start.metric(),
        "runtime": "ONNX Runtime CPU, default session options (as a user runs the file)",
        "original": {
            "param_bytes": original_bytes,
            "file_bytes": Path(model_path).stat().st_size,
            "accuracy": round(start.baseline["held"], 3),
            "accuracy_search": round(start.baseline["search"], 3),
            "latency_ms_b1": round(latency_ms(start.session, 1), 3),
            "latency_ms_b64": round(latency_ms(start.session, 64, repeats=5), 2),
            **edge_measures(Path(model_path)),
        },
        "compressed": {
            "param_bytes": final_bytes,
            "file_bytes": written_bytes(final),
            "accuracy": round(held_accuracy, 3),
            "accuracy_search": round(result.best.accuracy, 3) if result.best else round(start.baseline["search"], 3),
            "latency_ms_b1": round(latency_ms(final_session, 1), 3),
            "latency_ms_b64": round(latency_ms(final_session, 64, repeats=5), 2),
            **edge_measures(model_bytes(final)),
        },
        "memory_saving": round(1 - final_bytes / original_bytes, 5),
        "accuracy_drop": round(drop, 3),
        "constraints_met": met,
        "reason": "; ".join(reasons) or "constraints met",
    }
