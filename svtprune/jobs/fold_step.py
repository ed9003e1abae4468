"""Folding each BatchNormalization into the layer before it (graph/fold_norms.py), kept only where measured faster.

The fold is exact up to float32 rounding, so a spiking model can flip a spike whose membrane sits on its
threshold (verify counts those as ties). It is applied to every file ``compress`` and ``prune`` write
and kept only where ORT runs it faster at batch 1 and at batch 64 (``balanced_speedup``) and, where
held-out data is at hand, where it does not lower the held-out accuracy. The plan's meta records it
(``norms_folded``): ``verify`` folds the plain prune it compares a re-fitted or fine-tuned file with.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from svtprune.graph.fold_norms import fold_norms
from svtprune.runtime import balanced_speedup, make_session

META_KEY = "norms_folded"  # in a plan's meta: the fold's line when the written file has it, else absent
BALANCED_ROUNDS = {1: 40, 64: 8}  # rounds of four calls (A B B A) at batch 1 and at batch 64


def fold_if_faster(
    model: onnx.ModelProto,
    held: Callable[[onnx.ModelProto], float] | None = None,
    held_accuracy: float | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """``model`` with its BNs folded where that is faster at batch 1 and 64, and the report's section.

    ``held`` measures a model's held-out accuracy; the fold must then score at least ``held_accuracy``."""
    folded = fold_norms(model)
    section: dict = {"applied": False, "folded": len(folded.folded), "refused": folded.refused}
    if not folded.folded:
        section["note"] = "no BatchNormalization to fold" if not folded.refused else "none can be folded"
        return model, section
    if say is not None:
        say("timing the BatchNormalizations folded into the layers before them")
    sessions = [make_session(model), make_session(folded.model)]
    speedups = {f"b{b}": round(balanced_speedup(sessions, b, rounds), 3) for b, rounds in BALANCED_ROUNDS.items()}
    section["speedup_paired"] = speedups
    if min(speedups.values()) <= 1.0:
        section["note"] = f"not applied: measured {speedups['b1']}x at batch 1, {speedups['b64']}x at 64"
        return model, section
    if held is not None and held_accuracy is not None:
        accuracy = held(folded.model)
        section["held_accuracy"] = accuracy
        if accuracy < held_accuracy:
            section["note"] = f"not applied: held-out accuracy {accuracy:.3f} below {held_accuracy:.3f} (a spike tie)"
            return model, section
    section["applied"] = folded.line()
    return folded.model, section


def refold(model: onnx.ModelProto, meta: dict) -> onnx.ModelProto:
    """``model`` folded as the plan's file was (``verify``'s plain prune of a plan whose file was folded)."""
    return fold_norms(model).model if meta.get(META_KEY) else model
