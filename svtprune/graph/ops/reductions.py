"""Normalisations, reductions and pools: safe off the channel axis, refused across it."""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.labels import FIXED, Label, Member, PropagationState, ShapeFixup, ShapeRead
from svtprune.graph.ops.registry import attr, handles, labels_of, norm_axis


@handles("LayerNormalization")
def layer_norm(state: PropagationState, node: onnx.NodeProto) -> None:
    """A LayerNorm over the last axis follows its channels when the removed ones arrive as zeros.

    The oracle keeps the original LayerNorm and zeroes the removed channels' inputs, scale and bias:
    its mean and variance still count C channels, the removed ones as zeros. Surgery writes that
    arithmetic for the kept channels (``surgery`` expands the node), so the prune stays exact.
    Anything else (several normalised axes, a channel that may be nonzero when removed) is refused.
    """
    x = node.input[0]
    rank = state.rank(x) or 0
    axis = norm_axis(int(attr(node, "axis", -1)), rank)
    labels = labels_of(state, x)
    on_axis = [label for label in labels if axis in label.axes]
    params = [n for n in node.input[1:3] if n]
    followable = (
        len(on_axis) == 1
        and axis == rank - 1
        and on_axis[0].axes == (axis,)
        and all(n in state.constants and state.constants[n].ndim == 1 for n in params)
        and not any(name for name in node.output[1:])
        and not set(on_axis[0].ids.ravel().tolist()) & state.nonzero
    )
    if not followable:
        normalising(state, node)
        return
    label = on_axis[0]
    for index, name in enumerate(node.input[1:3], start=1):
        if name:
            state.members.append(Member(node.name, index, name, 0, label.ids, "param"))
    state.fixups.append(ShapeFixup(node.name, "layernorm", label.axes, label.ids))
    state.labels[node.output[0]] = list(labels)


@handles("Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
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
