"""The compress report: what was removed, what was measured, and whether the constraints hold.

Keys used from outside are fixed (see docs/python-api.md): ``original.*``, ``compressed.*``,
``memory_saving``, ``accuracy_drop``, ``wall_seconds``, ``evaluations``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from svtprune.costs import Started
from svtprune.graph.analysis import Analysis
from svtprune.graph.io import model_bytes, param_bytes, written_bytes
from svtprune.graph.plan import Plan
from svtprune.hardware.profile import profile_summary
from svtprune.jobs.common import Start, worse_than_input
from svtprune.jobs.options import CompressOptions
from svtprune.runtime import edge_measures, make_session, timed_pair
from svtprune.search.sequential import EARLY_LOOK, FIRST_LOOK, Z_EARLY, Z_LOOK, Z_MARGIN

if TYPE_CHECKING:
    from svtprune.search.budget import Budget
    from svtprune.search.prune_executor import PruneExecutor
    from svtprune.search.quant_executor import QuantExecutor
    from svtprune.search.records import SearchResult


@dataclass
class Pruned:
    """The pruning step's outcome: what the search chose and what the held-out split said of it."""

    executor: PruneExecutor
    budget: Budget
    result: SearchResult
    model: onnx.ModelProto
    held_accuracy: float
    held_out_checks: list[dict]
    without_reconstruction: float  # held-out accuracy of the same channels removed, no re-fit


def budget_split(prune_share: float, prune_points: float, quant_points: float, finetuned: bool) -> str:
    """Why the accuracy budget was divided as it was (for the report)."""
    text = (
        f"pruning searched within {prune_share:.0%} of the search budget ({prune_points:.2f} points); "
        f"quantization then had the whole {quant_points:.2f} points, measured from the original, i.e. whatever "
        "pruning left. Pruning goes first because its savings compound with quantization's (fewer weights, each "
        "in fewer bits) and its search is the costlier one."
    )
    if finetuned:
        text += (
            " Both searched within the fine-tuning budget; one quantization-aware fine-tuning (weights trained on "
            "their stored grids) then recovered the accuracy of both steps before the held-out check."
        )
    return text


def _shortfalls(options: CompressOptions, drop: float, saving: float, speedups: list[float], fast_b1: float,
                energy_saving: float) -> list[str]:  # fmt: skip
    """Why the constraints are not met (empty when they are)."""
    goal, reasons = options.goal, []
    if drop > options.max_accuracy_drop:
        reasons.append(f"accuracy drop {drop:.2f} points on held-out data exceeds {options.max_accuracy_drop}")
    if goal.min_memory_saving is not None and saving < goal.min_memory_saving:
        reasons.append(f"memory saving {saving:.1%} is below {goal.min_memory_saving:.1%} within the accuracy budget")
    if goal.min_speedup is not None and min(speedups) < goal.min_speedup:
        reasons.append(f"speedup {min(speedups):.2f}x (the slower of batch 1 and 64) is below {goal.min_speedup}x")
    if goal.max_latency_ms is not None and fast_b1 > goal.max_latency_ms:
        reasons.append(f"batch-1 latency {fast_b1:.2f} ms is above {goal.max_latency_ms} ms")
    if goal.min_energy_saving is not None and energy_saving < goal.min_energy_saving:
        reasons.append(f"energy saving {energy_saving:.1%} is below {goal.min_energy_saving:.1%}")
    return reasons


def group_widths(analysis: Analysis, plan: Plan, ratios: dict[str, float]) -> list[dict]:
    """Channels before and after, per prunable group."""
    return [
        {"group": g.name, "before": g.size, "after": len(plan.kept[g.name]), "ratio": ratios.get(g.name, 0.0)}
        for g in analysis.prunable_groups
    ]


def time_limit_section(options: CompressOptions, not_measured: int) -> dict | None:
    """Whether the search ran out of its time (``--time-limit``) and how many steps it left unscored."""
    if options.time_limit is None:
        return None
    return {"seconds": options.time_limit, "reached": not_measured > 0, "candidates_not_measured": not_measured}


def sequential_section(budget: Budget, executor: PruneExecutor | QuantExecutor) -> dict | None:
    """How the search judged its candidates: the sequential test's rule, and how early it decided."""
    search_images = len(executor.data)
    if not budget.sequential:
        return None
    judged = [r for r in executor.records if r.verdict is not None and not r.reused]  # reused: no new look
    return {
        "first_look_images": FIRST_LOOK,
        "early_rejection": {"images": EARLY_LOOK, "z": Z_EARLY},
        "z_look": Z_LOOK,
        "z_margin": Z_MARGIN,
        "held_out_images_in_margin": budget.held_images,
        "images_judged": search_images,  # in compress, the search split less the re-fit's calibration images
        "candidates": len(judged),
        "decided_before_the_whole_split": sum(r.images < search_images for r in judged),
        "mean_images_per_candidate": round(sum(r.images for r in judged) / max(len(judged), 1), 1),
    }


def constraints_section(
    options: CompressOptions, search_points: float, not_measured: int = 0, test: dict | None = None
) -> dict:
    """What the user asked for, and the share of the budget the search itself could spend."""
    goal = options.goal
    return {
        "max_accuracy_drop": options.max_accuracy_drop,
        "min_memory_saving": goal.min_memory_saving,
        "search_budget_points": search_points,
        "objective": goal.objective,
        "min_speedup": goal.min_speedup,
        "max_latency_ms": goal.max_latency_ms,
        "min_energy_saving": goal.min_energy_saving,
        "time_limit": time_limit_section(options, not_measured),
        "sequential_test": test,
    }


def _reconstruction(calibration: np.ndarray | None) -> str:
    return "off" if calibration is None else f"least squares on {len(calibration)} calibration images"


def compress_report(
    paths: tuple[str | Path, str | Path],
    options: CompressOptions,
    analysis: Analysis,
    start: Start,
    pruned: Pruned,
    plan: Plan,
    final: onnx.ModelProto,
    held_accuracy: float,
    energy: dict,
    started: Started,
) -> dict:
    """Assemble the report of one compress run."""
    model_path, data_path = paths
    executor, result, budget = pruned.executor, pruned.result, pruned.budget
    original_bytes, final_bytes, seq = executor.original_bytes, param_bytes(final), sequential_section(budget, executor)
    drop = start.baseline["held"] - held_accuracy
    saving = 1 - final_bytes / original_bytes
    # original and result timed call by call, interleaved (the search's timing of the original may come from a busier
    # minute); goals are checked on the fastest runs, as the search checked them, since on a shared machine
    # the median carries the neighbours' load; the medians are reported as what a user would see
    ((b1, b64), fast_original), ((c1, c64), fast_final) = timed_pair(start.session, make_session(final))
    speedups = [o / n for o, n in zip(fast_original, fast_final, strict=True)]
    energy_saving = 1 - energy["compressed"]["energy_uJ_per_image"] / energy["original"]["energy_uJ_per_image"]
    reasons = _shortfalls(options, drop, saving, speedups, fast_final[0], energy_saving)
    speed = min(speedups) if options.goal.objective == "latency" else None
    files = (Path(model_path).stat().st_size, written_bytes(final))
    reasons += worse_than_input(saving, files, speed, time_cut(plan) and min(speedups) > 1.0)
    return {
        "command": "compress",
        "method": options.prune.method,
        "importance": options.prune.importance,
        "reconstruction": _reconstruction(executor.calibration),
        "model": str(model_path),
        "data": start.data_section(data_path, options.split.seed),
        "constraints": constraints_section(options, budget.max_drop, executor.not_measured, seq),
        "metric": start.metric(),
        "original": {
            "param_bytes": original_bytes,
            "file_bytes": Path(model_path).stat().st_size,
            "accuracy": round(start.baseline["held"], 3),
            "accuracy_search": round(start.baseline["search"], 3),
            "accuracy_judged": round(pruned.budget.baseline, 3),  # on the search images pruning was judged on
            **_times(b1, b64, fast_original),
            **edge_measures(Path(model_path)),
        },
        "compressed": {
            "param_bytes": final_bytes,
            "file_bytes": written_bytes(final),
            "accuracy": round(held_accuracy, 3),
            "accuracy_search": round(result.best.accuracy, 3) if result.best else None,
            "accuracy_without_reconstruction": round(pruned.without_reconstruction, 3),
            **_times(c1, c64, fast_final),
            **edge_measures(model_bytes(final)),
        },
        "memory_saving": round(saving, 5),
        "accuracy_drop": round(drop, 3),
        "speedup": {"b1": round(speedups[0], 3), "b64": round(speedups[1], 3)},  # fastest runs, as checked
        "speedup_median": {"b1": round(b1 / c1, 3), "b64": round(b64 / c64, 3)},
        "latency_order": {k: round(v, 3) for k, v in (executor.latency_rank or {}).items()},
        "energy_saving": round(energy_saving, 4),
        "energy_order": {k: round(v, 4) for k, v in (executor.energy_rank or {}).items()},
        "energy": energy,
        "constraints_met": not reasons,
        "reason": "; ".join(reasons) or "constraints met",
        "groups": group_widths(analysis, plan, result.ratios),
        "sensitivity": {k: [list(p) for p in v] for k, v in result.sensitivity.items()},
        "evaluations": [r.to_dict() for r in executor.records],
        "held_out_checks": pruned.held_out_checks,
        "profile": profile_summary(Path(model_path), final),  # where the batch-1 time goes, layer by layer
        **started.cost(),
    }


def time_cut(plan: Plan) -> bool:
    """The model runs fewer time steps, its stem once or fewer tokens (the time phase's edits, jobs/time_step.py)."""
    meta = plan.meta
    fewer = meta.get("timesteps", 0) < meta.get("timesteps_original", 0) or "tokens_kept" in meta
    return fewer or bool(meta.get("stem_once"))


def _times(b1: float, b64: float, fastest: tuple[float, float]) -> dict:
    return {
        "latency_ms_b1": round(b1, 3),
        "latency_ms_b64": round(b64, 2),
        "fastest_ms_b1": round(fastest[0], 3),
        "fastest_ms_b64": round(fastest[1], 2),
    }
