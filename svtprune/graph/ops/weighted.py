"""Operators with weights: where channels are born (outputs) and consumed (inputs)."""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.labels import Label, Member, PropagationState, ShapeFixup
from svtprune.graph.ops.registry import attr, handles, labels_of


@handles("Conv")
def conv(state: PropagationState, node: onnx.NodeProto) -> None:
    x, w = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if w not in state.constants:
        state.refuse_inputs([x], f"Conv {node.name}: weights are not constant")
        return
    weight = state.constants[w]
    groups = int(attr(node, "group", 1))
    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    in_labels = labels_of(state, x)
    if groups == 1:
        for label in in_labels:
            if label.axes == (1,):
                state.members.append(Member(node.name, 1, w, 1, label.ids, "sink"))
            else:
                state.refuse(label.ids, f"Conv {node.name}: channels on a spatial axis")
        ids = state.new_atoms(out_channels, node.name)
    elif in_per_group == 1 and out_channels == groups and in_labels and in_labels[0].axes == (1,):
        ids = in_labels[0].ids  # depthwise: each filter follows its input channel
        state.fixups.append(ShapeFixup(node.name, "group", (1,), ids))
    else:
        state.refuse_inputs([x], f"Conv {node.name}: grouped convolution (group={groups})")
        ids = state.new_atoms(out_channels, node.name)
        state.refuse(ids, f"Conv {node.name}: grouped convolution (group={groups})")
    state.members.append(Member(node.name, 1, w, 0, ids, "source"))
    if bias:
        state.members.append(Member(node.name, 2, bias, 0, ids, "param"))
    state.labels[node.output[0]] = [Label(ids, (1,))]


@handles("Gemm")
def gemm(state: PropagationState, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    if b not in state.constants or attr(node, "transA", 0):
        state.refuse_inputs([a], f"Gemm {node.name}: only constant B without transA is followed")
        return
    trans_b = int(attr(node, "transB", 0))
    weight = state.constants[b]
    for label in labels_of(state, a):
        if label.axes == (1,):
            state.members.append(Member(node.name, 1, b, 1 if trans_b else 0, label.ids, "sink"))
        else:
            state.refuse(label.ids, f"Gemm {node.name}: channels on the row axis")
    out_axis = 0 if trans_b else 1
    ids = state.new_atoms(weight.shape[out_axis], node.name)
    state.members.append(Member(node.name, 1, b, out_axis, ids, "source"))
    if len(node.input) > 2 and node.input[2] in state.constants:
        bias = state.constants[node.input[2]]
        if bias.ndim >= 1 and bias.shape[-1] == len(ids) and len(ids) > 1:
            state.members.append(Member(node.name, 2, node.input[2], bias.ndim - 1, ids, "param"))
    state.labels[node.output[0]] = [Label(ids, (1,))]


@handles("MatMul")
def matmul(state: PropagationState, node: onnx.NodeProto) -> None:
    a, b = node.input[0], node.input[1]
    out_rank = state.rank(node.output[0])
    rank_a = state.rank(a)
    if b in state.constants and state.constants[b].ndim == 2 and out_rank and rank_a:
        out: list[Label] = []
        for label in labels_of(state, a):
            if label.axes[-1] == rank_a - 1:
                if len(label.axes) > 1:
                    state.refuse(label.ids, f"MatMul {node.name}: channels split over several axes")
                    continue
                state.members.append(Member(node.name, 1, b, 0, label.ids, "sink"))
            else:
                out.append(label)
        ids = state.new_atoms(state.constants[b].shape[1], node.name)
        state.members.append(Member(node.name, 1, b, 1, ids, "source"))
        out.append(Label(ids, (out_rank - 1,)))
        state.labels[node.output[0]] = out
        return
    if a in state.constants or b in state.constants or not out_rank:
        state.refuse_inputs([a, b], f"MatMul {node.name}: constant operand of rank != 2")
        return
    _activation_matmul(state, node, out_rank)


def _activation_matmul(state: PropagationState, node: onnx.NodeProto, out_rank: int) -> None:
    """Attention-style A @ B: the contracted axis couples A's and B's channels position by position."""
    a, b = node.input[0], node.input[1]
    rank_a, rank_b = state.rank(a), state.rank(b)
    if not rank_a or not rank_b or rank_a < 2 or rank_b < 2:
        state.refuse_inputs([a, b], f"MatMul {node.name}: operand rank below 2")
        return
    contracted: dict[str, list[Label]] = {a: [], b: []}
    out: list[Label] = []
    for name, rank, k_axis, free_axis in ((a, rank_a, rank_a - 1, out_rank - 2), (b, rank_b, rank_b - 2, out_rank - 1)):
        offset = out_rank - rank
        own_free = rank - 1 if name == b else rank - 2
        for label in labels_of(state, name):
            if k_axis in label.axes:
                contracted[name].append(label)
            else:
                axes = tuple(free_axis if x == own_free else x + offset for x in label.axes)
                out.append(Label(label.ids, axes))
    left, right = contracted[a], contracted[b]
    if (
        len(left) == 1
        and len(right) == 1
        and _contracted_view(left[0], rank_a - 1).shape == _contracted_view(right[0], rank_b - 2).shape
    ):
        state.couple(_contracted_view(left[0], rank_a - 1), _contracted_view(right[0], rank_b - 2), node.name)
    else:
        for label in left + right:
            state.refuse(label.ids, f"MatMul {node.name}: contracts channels against an unfollowed operand")
    _link_shared_axes(state, out)
    state.labels[node.output[0]] = out


def _contracted_view(label: Label, k_axis: int) -> np.ndarray:
    """Ids with the contracted axis last, so both operands line up position by position.

    Size-1 axes go: one operand may carry a single head as an axis of its label, the other not."""
    view = np.moveaxis(label.ids, label.axes.index(k_axis), -1)
    return view.reshape([d for d in view.shape[:-1] if d != 1] + [view.shape[-1]])


def _link_shared_axes(state: PropagationState, labels: list[Label]) -> None:
    """Two labels sharing an axis (heads of v and of k) must keep and drop the same rows."""
    for i, first in enumerate(labels):
        for second in labels[i + 1 :]:
            for axis in set(first.axes) & set(second.axes):
                rows_a = np.moveaxis(first.ids, first.axes.index(axis), 0)
                rows_b = np.moveaxis(second.ids, second.axes.index(axis), 0)
                state.row_links.append((rows_a.reshape(len(rows_a), -1), rows_b.reshape(len(rows_b), -1)))


@handles("BatchNormalization", "InstanceNormalization")
def batch_norm(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    for label in labels_of(state, x):
        if label.axes != (1,):
            why = f"{node.op_type} {node.name}: channels off axis 1"
            if node.op_type == "InstanceNormalization":  # GroupNorm: a reshape puts channels in the normalised axes
                why = f"{node.op_type} {node.name} normalises channels together (a GroupNorm exported over a reshape)"
                state.normalised[node.output[0]] = f"the output of {node.op_type} {node.name} (channels normalised)"
            state.refuse(label.ids, why)
            continue
        for index, name in enumerate(node.input[1:], start=1):
            if name in state.constants:
                state.members.append(Member(node.name, index, name, 0, label.ids, "param"))
            else:
                state.refuse(label.ids, f"{node.op_type} {node.name}: statistics are not constant")
    state.labels[node.output[0]] = list(labels_of(state, x))
