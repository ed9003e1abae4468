"""Which layout a quantized model ships in: decided by timing each on this machine.

The same stored integers can run three ways on ONNX Runtime's CPU provider: dequantized at every
call (``weight-only``, what ``Quantizer.apply`` writes), dequantized once at load (Cast and Mul,
which ORT folds, ``load_folding``), or, for spike-fed int8 1x1 layers, as integer matrix products
(``integer_layout``), whose other layers may again be dequantized at load. Which is fastest
depends on the layer widths and the CPU (docs/benchmark-log.md: the integer layout gains 2-6% on the
reference Spikformer and 2.8-3.4x per layer at spikformer_cifar10 widths; dequantizing at load
gives 3x3 convolutions their float speed back). Every layout is timed at batch 1 on the threads
``SVTPRUNE_THREADS`` gives, alternating, and one other than weight-only is kept only when it is
faster by a margin and every prediction on the check images is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.io import written_bytes
from svtprune.quantization.integer_layout import integer_layout
from svtprune.quantization.load_folding import dequantize_at_load
from svtprune.runtime import latency_ms, logits_of, make_session

ROUNDS = 5  # alternating timing rounds of each file
CALLS = 20  # batch-1 calls per round (the fastest one counts)
CHECK_IMAGES = 256  # images whose predictions every layout must leave unchanged (the layouts are exact up to rounding)
MIN_GAIN = 1.02  # another layout must be at least this much faster than weight-only: below it, timing noise decides
LAYOUTS = ("weight-only", "dequantized at load", "integer", "integer, dequantized at load")


def layouts_of(model: onnx.ModelProto) -> tuple[dict[str, onnx.ModelProto], dict]:
    """Each layout that differs from weight-only, and what each rewrite did and refused."""
    integer = integer_layout(model)
    at_load = dequantize_at_load(model)
    candidates = {"weight-only": model}
    if at_load.rewritten:
        candidates["dequantized at load"] = at_load.model
    if integer.rewritten:
        candidates["integer"] = integer.model
        both = dequantize_at_load(integer.model)
        if both.rewritten:
            candidates["integer, dequantized at load"] = both.model
    notes = {
        "rewritten": integer.rewritten,
        "refused": integer.refused,
        "dequantized_at_load": len(at_load.rewritten),
        "kept_dequantize_per_call": at_load.kept,
    }
    return candidates, notes


def choose_layout(model: onnx.ModelProto, check: np.ndarray) -> tuple[onnx.ModelProto, dict]:
    """(the model to write, the report section): the fastest layout measured here, if unchanged on ``check``."""
    candidates, notes = layouts_of(model)
    check = check[:CHECK_IMAGES]
    section: dict = {**notes, "chosen": "weight-only"}
    if len(candidates) == 1:
        return model, section
    sessions = {name: make_session(candidate) for name, candidate in candidates.items()}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(ROUNDS):
        for name, session in sessions.items():
            times[name].append(latency_ms(session, 1, CALLS, fastest=True))
    fastest = {name: min(values) for name, values in times.items()}
    reference = logits_of(sessions["weight-only"], check).argmax(axis=1)
    unchanged = {
        name: bool(np.array_equal(logits_of(session, check).argmax(axis=1), reference))
        for name, session in sessions.items()
    }
    allowed = [name for name in candidates if unchanged[name]]
    best = min(allowed, key=fastest.__getitem__)
    if fastest["weight-only"] < MIN_GAIN * fastest[best]:
        best = "weight-only"
    section.update(
        batch1_ms={name: round(value, 4) for name, value in fastest.items()},
        file_bytes={name: written_bytes(candidate) for name, candidate in candidates.items()},
        predictions_unchanged_on=int(len(check)) if all(unchanged.values()) else None,
        predictions_changed=[name for name in candidates if not unchanged[name]],
        chosen=best,
    )
    return candidates[best], section
