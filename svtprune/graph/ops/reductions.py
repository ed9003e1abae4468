"""Normalisations, reductions and pools: safe off the channel axis, refused across it."""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.labels import FIXED, Label, PropagationState, ShapeRead
from svtprune.graph.ops.registry import attr, handles, labels_of, norm_axis


@handles("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
def normalising(state: PropagationState, node: onnx.NodeProto) -> None:
    """Normalising over the channel axis makes every channel depend on all others: refuse."""
    x = node.input[0]
    rank = state.rank(x) or 0
    default = -1
    axis = norm_axis(int(attr(node, "axis", default)), rank)
    covered = range(axis, rank) if node.op_type == "LayerNormalization" else (axis,)
    kept = []
    for label in labels_of(state, x):
        if set(label.axes) & set(covered):
            state.refuse(label.ids, f"{node.op_type} {node.name} normalises over the channel axis")
            state.normalised[node.output[0]] = f"the output of {node.op_type} {node.name} (normalised over channels)"
        else:
            kept.append(label)
    state.labels[node.output[0]] = kept


ZERO_NEUTRAL = {"ReduceSum", "ReduceL1", "ReduceL2", "ReduceSumSquare"}


@handles("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1", "ReduceSumSquare")
def reduce(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = state.rank(x)
    axes_value = attr(node, "axes")
    if axes_value is None and len(node.input) > 1 and node.input[1]:
        axes_value = state.constants.get(node.input[1])
    if rank is None or axes_value is None:
        state.refuse_inputs([x], f"{node.op_type} {node.name}: reduced axes unknown")
        return
    reduced = sorted({norm_axis(int(a), rank) for a in np.ravel(axes_value)})
    keepdims = int(attr(node, "keepdims", 1))
    out = []
    for label in labels_of(state, x):
        gone = [a for a in label.axes if a in reduced]
        if gone and node.op_type not in ZERO_NEUTRAL:
            state.refuse(label.ids, f"{node.op_type} {node.name} reduces over the channel axis")
            continue
        if gone:  # a zeroed channel adds nothing to a sum: removing it gives the same result
            label = _sum_within_rows(state, label, gone)
            if label is None:
                continue
        axes = label.axes if keepdims else tuple(a - sum(r < a for r in reduced) for a in label.axes)
        out.append(Label(label.ids, axes))
    state.labels[node.output[0]] = out


def _sum_within_rows(state: PropagationState, label: Label, gone: list[int]) -> Label | None:
    """Summing the channels inside each head keeps one value per head (QKFormer's token attention).

    The heads stay as a label of fixed positions, and each head must keep at least one channel,
    so the head count never changes behind the reduction's back.
    """
    dims_gone = tuple(label.axes.index(a) for a in gone)
    if len(dims_gone) == len(label.axes):
        return None
    rows = np.moveaxis(label.ids, dims_gone, tuple(range(-len(dims_gone), 0)))
    kept_shape = rows.shape[: label.ids.ndim - len(dims_gone)]
    state.pinned_rows.append(rows.reshape(int(np.prod(kept_shape)), -1))
    return Label(np.full(kept_shape, FIXED, dtype=np.int64), tuple(a for a in label.axes if a not in gone))


@handles("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample")
def spatial(state: PropagationState, node: onnx.NodeProto) -> None:
    """Pools and resizes act per channel on the spatial axes."""
    x = node.input[0]
    out = []
    for label in labels_of(state, x):
        if label.axes == (1,):
            out.append(label)
        else:
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels off axis 1")
    state.labels[node.output[0]] = out


@handles("Shape", "Size", "ConstantOfShape", "Range", "NonZero")
def shape_source(state: PropagationState, node: onnx.NodeProto) -> None:
    """Outputs depend on shapes only; which dims a Shape reads is remembered (``read_shape``)."""
    for out_name in node.output:
        state.shape_only.add(out_name)
    rank = state.rank(node.input[0]) if node.input else None
    if node.op_type in ("Shape", "Size") and rank is not None:
        start = norm_axis(int(attr(node, "start", 0)), rank) if node.op_type == "Shape" else 0
        end = attr(node, "end") if node.op_type == "Shape" else None
        end = rank if end is None else min(norm_axis(int(end), rank), rank)
        read = ShapeRead(f"{node.op_type} {node.name}", node.input[0], tuple(range(start, end)))
        state.shape_reads[node.output[0]] = [read]
        if node.op_type == "Size":  # the product of every dim is a number, not a shape
            state.read_shape(node.output[0])
