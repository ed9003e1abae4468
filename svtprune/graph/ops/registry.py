"""The operator registry and the helpers every handler shares."""

from __future__ import annotations

from collections.abc import Callable

import onnx
from onnx import helper

from svtprune.graph.labels import Label, PropagationState

Handler = Callable[[PropagationState, onnx.NodeProto], None]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return register


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def labels_of(state: PropagationState, name: str) -> list[Label]:
    return state.labels.get(name, []) if name else []


def add_label(out: list[Label], state: PropagationState, label: Label, why: str) -> None:
    """Put a label on an output; a second label on the same axes is the same channels."""
    for existing in out:
        if existing.axes == label.axes:
            if existing.ids.shape != label.ids.shape:
                state.refuse(existing.ids, why)
                state.refuse(label.ids, why)
            else:
                state.couple(existing.ids, label.ids, why)
            return
    out.append(label)


def norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
