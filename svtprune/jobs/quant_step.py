"""The bit-width search as a step of a job: shared by ``quantize`` and ``compress --quantize``.

gptq's calibration images come from the search split (never the held-out one); its Hessians
are computed once, from the starting model's own layer inputs, and serve every candidate.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx

from svtprune.data import Dataset
from svtprune.jobs.common import Say, Start
from svtprune.jobs.options import QuantOptions
from svtprune.quantization import Quantizer, QuantScheme, bits_table
from svtprune.quantization.layout_choice import choose_layout
from svtprune.search.budget import Budget, Points
from svtprune.search.drift import DriftProbe
from svtprune.search.held_out import bits_held_out
from svtprune.search.quant_executor import QuantExecutor
from svtprune.search.quant_policies import SEARCHES
from svtprune.search.records import SearchResult
from svtprune.search.sequential import SequentialTest

# membrane drift of each layer alone ranks the layers as on 64 images (Spearman 0.999 on the reference Spikformer,
# docs/benchmark-log.md "Quantization at a user's size") at a quarter of the cost
DRIFT_IMAGES = 16
# the commands have images to calibrate on, so they default to gptq: on the reference Spikformer greedy saved
# 91.5% at -0.85 held-out with it vs 90.1% at -1.45 with mse (docs/benchmark-log.md, issue 6); the library's
# QuantScheme stays mse, which needs no data
DEFAULT_ROUNDING = "gptq"
# the commands store scales as uint8 codes (``scale_codes=True``): on the reference Spikformer 1,290 fewer
# bytes (0.2 points of saving) at accuracy within noise for uniform 8, 4 and 2 bits (docs/benchmark-log.md, issue 6);
# and a layer's biases as int8 once its weight is at 4 bits or fewer (``int8_biases=True``): 1,280 fewer bytes on
# the reference Spikformer at 2 and 4 bits, 3,372 on the SDT, accuracy within noise (docs/benchmark-log.md, issue 6)
GPTQ_IMAGES = 256  # search-split images whose layer inputs give gptq's Hessians (4 s on the reference model)
Held = tuple[Dataset, np.ndarray, Callable[[float], bool]]  # held-out data, target, the user's constraint


def command_scheme(options: QuantOptions, **layout: int | bool) -> QuantScheme:
    """The commands' defaults: gptq rounding, and what the user chose for scales and side vectors."""
    rounding = options.rounding or DEFAULT_ROUNDING
    return QuantScheme(rounding=rounding, scale_codes=options.scale_codes, int8_biases=options.int8_biases, **layout)


def quant_budget(baseline: float, points: Points, held_images: int) -> Budget:
    """The bit search's budget: sequential with the held-out noise as margin unless fine-tuning follows."""
    sequential = not points.finetuned
    return Budget(baseline, points.search, sequential=sequential, held_images=held_images if sequential else 0)


def run_search(
    model: onnx.ModelProto,
    search: Dataset,
    target: np.ndarray,
    budget: Budget,
    options: QuantOptions,
    scheme: QuantScheme,
    progress: Say,
    start_logits: np.ndarray | None = None,
) -> tuple[SearchResult, QuantExecutor]:
    """The bit-width search on ``model``; the budget's baseline may belong to an earlier model.

    ``start_logits``: ``model``'s logits on ``search`` when the caller has them (one pass fewer).
    """
    quantizer = Quantizer(model, scheme, calib=search.x[:GPTQ_IMAGES])
    probe = None if options.search == "exhaustive" else DriftProbe(model, search.x[:DRIFT_IMAGES])
    executor = QuantExecutor(quantizer, search, target, probe)
    if start_logits is not None:
        executor.start = (start_logits.argmax(axis=1) == target).astype(np.float64)
    if budget.sequential:  # the drop a candidate may add to the starting model's (pruning's, in compress)
        already = budget.baseline - 100.0 * float(executor.start_correct().mean())
        executor.test = SequentialTest(budget.left_after(already), len(search), budget.held_images)
    widths = options.bits
    if options.search == "beam":
        result = SEARCHES["beam"](executor, budget, widths, progress, width=options.beam_width)
    else:
        result = SEARCHES[options.search](executor, budget, widths, progress)
    return result, executor


def quantization_section(result: SearchResult, executor: QuantExecutor, method: str, started: float) -> dict:
    """What the search chose and what it cost, for the report."""
    return {
        "search": method,
        "scheme": vars(executor.quantizer.scheme),
        "layers": bits_table(executor.quantizer, result.bits),
        "full_evaluations": len(executor.records),
        "proxy_evaluations": len(executor.drifts),
        "gated_out": executor.gated,
        "proxy_seconds": round(executor.drift_seconds, 2),
        "search_seconds": round(time.perf_counter() - started, 2),
        "sensitivity": {k: [list(p) for p in v] for k, v in result.sensitivity.items()},
        "gptq_without_hessian": without_hessian(executor.quantizer),
        "evaluations": [r.to_dict() for r in executor.records],
    }


def without_hessian(quantizer: Quantizer) -> list[str]:
    """Layers gptq could not lay out as features (they were rounded as mse does)."""
    if quantizer.scheme.rounding != "gptq":
        return []
    return [name for name, h in quantizer.hessians().items() if h is None]


def quantize_after_pruning(
    pruned: onnx.ModelProto,
    search: Dataset,
    target: np.ndarray,
    baseline: float,
    budget_points: float,
    options: QuantOptions,
    progress: Say,
    held: Held | None,
) -> tuple[onnx.ModelProto, float | None, dict, dict[str, int]]:
    """``compress --quantize``: bit widths for the pruned model, measured against the *original* baseline.

    The budget is the whole search budget, so quantization gets exactly what pruning left of it.
    ``held`` is the held-out check, with its step-back; None when fine-tuning follows (the check
    then applies to the fine-tuned model, and no accuracy is returned).
    Returns the model, its held-out accuracy, the report section and the chosen bits.
    """
    started = time.perf_counter()
    sequential = held is not None  # no fine-tuning follows: judged as the quantize command judges (quant_budget)
    budget = Budget(baseline, budget_points, sequential=sequential, held_images=len(held[0]) if sequential else 0)
    result, executor = run_search(pruned, search, target, budget, options, command_scheme(options), progress)
    if held is None:
        final, accuracy, checks = executor.build(result.bits), None, []
    else:
        final, accuracy, checks = bits_held_out(executor, budget, result, *held, progress)
    section = quantization_section(result, executor, options.search, started)
    section["held_out_checks"] = checks
    executor.release()
    return final, accuracy, section, dict(result.bits)


def fastest_layout(
    model: onnx.ModelProto, accuracy: float, start: Start, max_accuracy_drop: float, say: Say
) -> tuple[onnx.ModelProto, float, dict]:
    """The quantized model in the fastest layout measured here, its held-out accuracy, the report's section.

    The layouts compute the same arithmetic with other kernels: their logits agree to float rounding,
    so a spike at its threshold may flip. The chosen file is measured on the whole held-out split,
    and kept only if the constraint still holds there."""
    say("timing the layouts of the quantized weights")
    chosen, section = choose_layout(model, start.held.x)
    if section["chosen"] == "weight-only":
        return model, accuracy, section
    measured = start.held_accuracy(chosen)
    section["held_out_accuracy"] = {"weight-only": round(accuracy, 3), section["chosen"]: round(measured, 3)}
    if not start.holds(max_accuracy_drop)(measured):
        section["chosen"] = "weight-only"  # the faster file breaks the budget on held-out data: not written
        return model, accuracy, section
    return chosen, measured, section
