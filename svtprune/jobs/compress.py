"""``compress``: find how much to prune where (and, optionally, how many bits), under the user's constraints.

A short script over shared steps: split and measure the start (jobs/common.py), the pruning
search and its held-out check (below), the bit-width search (jobs/quant_step.py), fine-tuning,
the report (jobs/compress_report.py), and the outputs written as a set.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx

from svtprune.checks import load_checked_data, load_checked_model
from svtprune.costs import Started, phase
from svtprune.data import Dataset
from svtprune.data_sources import check_preprocess_used
from svtprune.errors import ConstraintError, UserError
from svtprune.evaluate import top1
from svtprune.graph.analysis import Analysis, analyze
from svtprune.graph.io import param_bytes
from svtprune.graph.plan import Plan
from svtprune.graph.storage import fold_storage
from svtprune.graph.surgery import keep_storage
from svtprune.hardware.energy import energy_section, measure_energy
from svtprune.importance import group_scores
from svtprune.jobs.common import (
    Say,
    Start,
    claim_outputs,
    judged_part,
    split,
    tuning,
    write_outputs,
)
from svtprune.jobs.compress_report import Pruned, budget_split, compress_report
from svtprune.jobs.fold_step import META_KEY, fold_if_faster
from svtprune.jobs.options import CompressOptions, QuantOptions
from svtprune.jobs.oracle_guard import check_plan, screen_groups
from svtprune.jobs.quant_step import fastest_layout, quantize_after_pruning
from svtprune.jobs.time_step import TimeChoice, check_forced, time_step, wants_time_steps
from svtprune.outputs import OutputSet
from svtprune.quantization import stored_bytes
from svtprune.recover.reconstruct import refitted_layers
from svtprune.runtime import PairedTiming, measured_latency
from svtprune.search.budget import Budget
from svtprune.search.held_out import pruned_held_out
from svtprune.search.parallel import CandidatePool
from svtprune.search.pareto import explored
from svtprune.search.policies import POLICIES
from svtprune.search.prune_executor import PruneExecutor

ENERGY_IMAGES = 64  # images whose firing rates give the energy estimate (search slice; held-out slice for the report)


def compress(
    model_path: str | Path,
    data_path: str | Path,
    out: str | Path,
    max_accuracy_drop: float | None = None,
    *,
    options: CompressOptions | None = None,
    progress: Say | None = None,
    **fields: Any,
) -> dict:
    """Prune ``model_path`` as far as the constraints allow; returns the report (also written beside ``out``).

    ``options``, or the same as keywords after the budget (``max_accuracy_drop=1.0, quantize="greedy"``).
    With fine-tuning data (training images, never the evaluation data), the search may lose
    ``finetune_search_drop`` points (default 3x the budget); the chosen model is then distilled
    from the original before the held-out check, which applies to the fine-tuned model.
    Raises ConstraintError (carrying the report) when the constraints cannot be met; then nothing is written.
    """
    started = Started()
    if max_accuracy_drop is not None:
        fields["max_accuracy_drop"] = max_accuracy_drop
    options = options or CompressOptions.from_fields(**fields)
    inputs = (model_path, data_path, options.finetune.finetune_data)
    with claim_outputs(Path(out), inputs, options.force, options.format) as outputs:
        return compress_claimed(model_path, data_path, outputs, options, progress or (lambda _message: None), started)


def compress_claimed(
    model_path: str | Path,
    data_path: str | Path,
    outputs: OutputSet,
    options: CompressOptions,
    say: Say,
    started: Started,
) -> dict:
    """The compress job once its output files are claimed (``compress`` validates and claims)."""
    original = load_checked_model(model_path)
    check_forced(original, options)  # --timesteps N against the model's T, before the data is read
    check_preprocess_used(options.preprocess, [data_path, options.finetune.finetune_data])
    data = load_checked_data(data_path, original, options.preprocess)
    search, held = split(data, options.split, say)
    tune = tuning(original, search, options.finetune, options.split.seed, options.preprocess)
    say("analysing the graph")
    analysis = analyze(original)
    screen_groups(analysis, say)  # a group whose prune fails the oracle is refused before the search
    if not analysis.prunable_groups:
        raise UserError(f"{model_path}: no prunable channel group")
    start = Start.measure(analysis.model, search, held, len(data))
    analysis, timed = time_phase(original, analysis, start, options, say)  # fewer time steps, before any channel
    pruned = prune_step(analysis, original, start, options, say, timed)
    plan = pruned.executor.plan_for(pruned.result.ratios)
    plan.meta.update(
        {"method": options.prune.method, "importance": options.prune.importance, "source": str(model_path)}
    )
    plan.meta.update(timed.meta() if timed else {})  # verify's oracle: the original at these steps, slices zeroed
    plan.refit = refitted_layers(pruned.model)  # verify compares these with the plain prune, not the oracle
    final, held_accuracy = pruned.model, pruned.held_accuracy
    quant, choice = quantization_needed(options, pruned, original)
    if quant is not None or tune is not None:  # both rewrite float32 weights: unfold float16 storage
        final = fold_storage(final)
    quantization, spent_points = None, pruned.budget.max_drop  # what the fine-tuning, if any, has to win back
    if quant is not None:
        final, held_accuracy, quantization, plan.bits, spent_points = quantize_pruned(
            final, (search, held), start, pruned.budget.max_drop, options, tune is not None, say
        )
    finetune = None
    if tune is not None:
        say("fine-tuning" + (" on the quantization grids" if quant is not None else ""))
        notes = {"search_budget_points": spent_points, "quantization_aware": quant is not None}
        final, finetune, held_accuracy = tune.run(final, held_accuracy, start, notes, say)
        plan.meta["finetuned"] = {
            "data": str(options.finetune.finetune_data),
            "epochs": options.finetune.finetune_epochs,
        }
    final = keep_storage(final, analysis)  # back to float16 where the file stored it (fine-tuned values round)
    final, held_accuracy, layout, folding = last_rewrites(final, held_accuracy, start, options, quant, plan, say)
    energy = energy_section(original, final, held.x[:ENERGY_IMAGES])  # SOPs from measured firing rates
    paths = (model_path, data_path)
    report = compress_report(paths, options, analysis, start, pruned, plan, final, held_accuracy, energy, started)
    report["quantization_choice"] = choice
    report["timesteps"] = timed.section if timed is not None else None
    report["norm_folding"] = folding
    if quantization is not None:
        report["quantization"] = {**quantization, "stored_bytes": stored_bytes(final), "layout": layout}
        report["method"] = f"{options.prune.method}+aq4svit-{quant.search}"
    if finetune is not None:
        report["finetune"] = finetune
    report["pareto"] = explored(report)
    if not report["constraints_met"]:
        raise ConstraintError(report["reason"], report)
    report.update(started.cost())
    check_plan(analysis, plan)  # the last look: the plan's plain prune must match the oracle
    write_outputs(outputs, final, plan.to_json(analysis), report, options.format)
    return report


def last_rewrites(
    final: onnx.ModelProto,
    held_accuracy: float,
    start: Start,
    options: CompressOptions,
    quant: QuantOptions | None,
    plan: Plan,
    say: Say,
) -> tuple[onnx.ModelProto, float, dict | None, dict]:
    """The fastest integer layout of a quantized file, or the BNs of a float one folded into their layers where
    that is faster (jobs/fold_step.py; the plan's meta records it for ``verify``): model, held-out accuracy,
    the layout's report section and the fold's."""
    if quant is not None:
        layout = None
        if options.layout == "fastest":
            final, held_accuracy, layout = fastest_layout(final, held_accuracy, start, options.max_accuracy_drop, say)
        return final, held_accuracy, layout, {"applied": False, "note": "not tried: the weights are quantized"}
    final, folding = fold_if_faster(final, start.held_accuracy, held_accuracy, say)
    if folding["applied"]:
        plan.meta[META_KEY] = folding["applied"]
        held_accuracy = folding.get("held_accuracy", held_accuracy)
    return final, held_accuracy, None, folding


def time_phase(
    original: onnx.ModelProto, analysis: Analysis, start: Start, options: CompressOptions, say: Say
) -> tuple[Analysis, TimeChoice | None]:
    """The time phase (with a speed goal or ``--timesteps N``; jobs/time_step.py) and the analysis the channel
    search then runs on: of the model the phase chose, screened by the oracle guard as the original was."""
    if not wants_time_steps(options):
        return analysis, None
    budget = _search_budget(original, start, options, start.baseline["search"], say)  # before pruning's share
    timed = time_step(original, start, budget, options, say)
    if timed is not None and timed.model is not original:
        say("analysing the graph at the chosen time steps")
        analysis = analyze(timed.model)
        screen_groups(analysis, say)
    return analysis, timed


def quantization_needed(
    options: CompressOptions, pruned: Pruned, original: onnx.ModelProto
) -> tuple[QuantOptions | None, str]:
    """The bit search to run after pruning (or None), and why: with ``--quantize auto`` only for a memory goal
    that pruning alone, within its share of the budget, did not reach."""
    if options.quantize is None:
        return None, "not asked for (--quantize none, or auto without --min-memory-saving)"
    if not options.quantize_if_needed:
        return options.quantize, f"asked for (--quantize {options.quantize.search})"
    goal = options.goal.min_memory_saving
    saved = 1.0 - param_bytes(pruned.model) / param_bytes(original)
    if saved >= goal:
        return None, f"auto: pruning alone saved {saved:.1%}, the goal is {goal:.1%}"
    return options.quantize, f"auto: pruning alone saved {saved:.1%}, short of the goal of {goal:.1%}"


def quantize_pruned(
    pruned: onnx.ModelProto,
    data: tuple[Dataset, Dataset],
    start: Start,
    prune_points: float,
    options: CompressOptions,
    tuned: bool,
    say: Say,
) -> tuple[onnx.ModelProto, float, dict, dict[str, int], float]:
    """The bit search on the pruned model: model, held-out accuracy, report section, bits, points it spent.

    Without fine-tuning, the held-out check (and its step-back) happens here; with it, after the tuning."""
    search, held = data
    say("choosing weight bits for the pruned model")
    spent_points = options.points.search
    check = (held, start.targets["held"], start.holds(options.max_accuracy_drop))
    final, accuracy, quantization, bits = quantize_after_pruning(
        pruned, search, start.targets["search"], start.baseline["search"], spent_points, options.quantize, say,
        None if tuned else check,
    )  # fmt: skip
    held_accuracy = accuracy if accuracy is not None else start.held_accuracy(final)
    quantization["budget_split"] = budget_split(options.prune_share, prune_points, spent_points, tuned)
    return final, held_accuracy, quantization, bits, spent_points


def prune_step(
    analysis: Analysis,
    original: onnx.ModelProto,
    start: Start,
    options: CompressOptions,
    say: Say,
    timed: TimeChoice | None = None,
) -> Pruned:
    """The pruning search on the search split, then its choice checked (and stepped back) on held-out data.

    ``analysis`` is of the time phase's model when it ran (``timed``); candidates are still judged against
    the original, so the search spends what the time phase left of the budget."""
    executor = _executor(analysis, original, start.search, start, options)
    budget = _budget(original, start, options, executor, say, timed)
    workers = options.parallel
    with phase("search"), CandidatePool(executor, workers.workers, workers.executor, workers.ray_address) as pool:
        result = POLICIES[options.prune.method](executor, budget, say, pool=pool)
    say("measuring the chosen model on the held-out split")
    # with quantization next, a pruned model already past the whole budget on held-out data can only get
    # worse: step back (to the unpruned model at the end) and let quantization have the budget
    tuned = options.finetune.finetune_data is not None
    with phase("held-out"):
        final, held_accuracy, checks = pruned_held_out(
            executor, budget, result, start.held, start.targets["held"], start.holds(options.max_accuracy_drop),
            not tuned, say, or_unpruned=options.quantize is not None and not tuned,
            start_accuracy=start.baseline["held"] if timed is None else timed.held_accuracy,
        )  # fmt: skip
    without = held_accuracy
    if options.prune.reconstruct and any(result.ratios.values()):  # the same channels removed, no re-fit
        calibration, executor.calibration = executor.calibration, None
        with phase("held-out, no re-fit"):
            without = start.held_accuracy(executor.build(result.ratios))
        executor.calibration = calibration
    return Pruned(executor, budget, result, final, held_accuracy, checks, without)


# a screen's last look: on the reference Spikformer (2,000 images, 3 splits) 256 instead of 500 took a quarter
# off the images forwarded and chose the same or larger savings (docs/benchmark-log.md, "Judged by a sequential test")
SCREEN_IMAGES = 256


def _executor(
    analysis: Analysis, original: onnx.ModelProto, search: Dataset, start: Start, options: CompressOptions
) -> PruneExecutor:
    images = options.prune.calibration_images
    judged, targets, logits = judged_part(search, start, images if options.prune.reconstruct else None)
    with phase("importance"):
        scores = group_scores(analysis, options.prune.importance, calibration=search.x[:images])
    executor = PruneExecutor(
        analysis,
        scores,
        judged,
        targets,
        param_bytes(original),
        calibration=search.x[:images] if options.prune.reconstruct else None,
        original_logits=logits,
        screen_images=SCREEN_IMAGES,
    )
    if options.time_limit is not None:  # from the search's start: loading and the baselines are not the search
        executor.deadline = time.perf_counter() + options.time_limit
    return executor


def _budget(
    original: onnx.ModelProto,
    start: Start,
    options: CompressOptions,
    executor: PruneExecutor,
    say: Say,
    timed: TimeChoice | None = None,
) -> Budget:
    """The pruning search's budget and goal (with quantization next, pruning searches on its share)."""
    baseline = top1(executor.original_logits, executor.target)  # on the images candidates are judged on
    latency = timed.original_latency if timed is not None else None
    budget = _search_budget(original, start, options, baseline, say, latency)
    if budget.original_latency is not None:  # every candidate timed against the original, calls interleaved
        executor.timing = PairedTiming(original, budget.original_latency)
    goal = options.goal
    if goal.objective == "energy":  # firing rates on a fixed slice of the search split, never the held-out images
        say("estimating the original model's energy")
        executor.energy_images = start.search.x[:ENERGY_IMAGES]
        energy = measure_energy(original, executor.energy_images).energy_uj
        budget = replace(budget, original_energy=energy, min_energy_saving=goal.min_energy_saving)
    return replace(budget, max_drop=options.points.pruning)  # with quantization next, pruning's share


def _search_budget(
    original: onnx.ModelProto,
    start: Start,
    options: CompressOptions,
    baseline: float,
    say: Say,
    original_latency: tuple[float, float] | None = None,
) -> Budget:
    """The whole search budget and the speed goal, before pruning's share of it (the time phase's starting point)."""
    goal = options.goal
    # without fine-tuning the held-out check measures this very model: its noise is the sequential test's margin
    held_images = len(start.held) if options.finetune.finetune_data is None else 0
    points = options.points.search
    budget = Budget(baseline, points, goal.min_memory_saving, goal.objective, sequential=True, held_images=held_images)
    if goal.objective == "latency":
        if original_latency is None:
            say("timing the original model")
            original_latency = measured_latency(original)
        budget = replace(
            budget, original_latency=original_latency, min_speedup=goal.min_speedup, max_latency_ms=goal.max_latency_ms
        )
    return budget
