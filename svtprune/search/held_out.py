"""When the search's choice misses the budget on held-out data: step back along what it accepted.

The search split's luck can carry a choice past the budget (measured: the Spike-driven
Transformer at max drop 1.0 chose a plan 1.75 points down on held-out data). Falling back to
smaller steps that the search itself accepted, rather than exiting, still gives the user a
model. Every held-out check is listed in the report, and their number is capped: each one
spends a little of the held-out split's independence.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import onnx

from svtprune.graph.io import param_bytes

MAX_STEPS_BACK = 3


def steps_back(
    records: Iterable[Any],
    accepts: Callable[[Any], bool],
    key: Callable[[Any], Hashable],
    chosen_bytes: int,
    limit: int = MAX_STEPS_BACK,
) -> list[Any]:
    """Distinct accepted records larger than the choice, most compressed first (at most ``limit``)."""
    accepted = {key(r): r for r in records if accepts(r) and r.param_bytes > chosen_bytes}
    return sorted(accepted.values(), key=lambda r: r.param_bytes)[:limit]


def check_entry(label: str, param_bytes: int | None, accuracy: float) -> dict:
    return {"label": label, "param_bytes": param_bytes, "accuracy": round(accuracy, 3)}


def held_out_choice(
    chosen: tuple[str, onnx.ModelProto],
    steps: Iterable[Any],
    build: Callable[[Any], onnx.ModelProto],
    score: Callable[[onnx.ModelProto], float],
    holds: Callable[[float], bool],
    say: Callable[[str], None],
) -> tuple[onnx.ModelProto, float, Any | None, list[dict]]:
    """(model, held-out accuracy, the step taken or None, every check) for a search's choice.

    ``steps`` are tried in order only when the choice misses; pass none to only measure it.
    """
    label, model = chosen
    accuracy = score(model)
    checks = [check_entry(label, param_bytes(model), accuracy)]
    if holds(accuracy):
        return model, accuracy, None, checks
    for step in steps:
        say(f"held-out drop too large: stepping back to {step.label}")
        candidate = build(step)
        step_accuracy = score(candidate)
        checks.append(check_entry(step.label, step.param_bytes, step_accuracy))
        if holds(step_accuracy):
            return candidate, step_accuracy, step, checks
    return model, accuracy, None, checks
