"""How each operator carries channel labels from its inputs to its outputs.

One handler per operator family, registered in ``HANDLERS``. A handler reads input
labels, writes output labels, and records what pruning must touch: weight slices
(members), couplings between channels, constants to rewrite, and refusals with a reason.
An operator without a handler refuses every channel that reaches it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from svtprune.graph.labels import FIXED, Label, Member, PropagationState, ShapeFixup
from svtprune.graph.reshape_map import map_label

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


def _labels(state: PropagationState, name: str) -> list[Label]:
    return state.labels.get(name, []) if name else []


def _add_label(out: list[Label], state: PropagationState, label: Label, why: str) -> None:
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


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- elementwise --------------------------------------------------------------------------

ELEMENTWISE = (
    "Add Sub Mul Div Pow Max Min Mean Sum Where Equal Greater GreaterOrEqual Less LessOrEqual And Or "
    "Xor Not Cast CastLike Relu LeakyRelu PRelu Sigmoid HardSigmoid Tanh Neg Abs Sign Floor Ceil Round "
    "Clip Sqrt Reciprocal Exp Log Erf Identity Dropout Softplus Gelu Elu Selu HardSwish Mish BitShift Mod"
).split()


@handles(*ELEMENTWISE)
def elementwise(state: PropagationState, node: onnx.NodeProto) -> None:
    out_name = node.output[0]
    out_rank = state.rank(out_name)
    inputs = [n for n in node.input[: (1 if node.op_type in ("Clip", "Dropout") else None)] if n]
    if out_rank is None:
        state.refuse_inputs(inputs, f"{node.op_type} {node.name}: unknown output shape")
        return
    out: list[Label] = []
    for name in inputs:
        offset = out_rank - (state.rank(name) or 0)
        for label in _labels(state, name):
            _add_label(out, state, Label(label.ids, tuple(a + offset for a in label.axes)), node.name)
    for index, name in enumerate(node.input):
        if name and not _labels(state, name):
            _check_unlabelled_operand(state, node, index, out, out_rank)
    state.labels[out_name] = out
    if inputs and all(n in state.shape_only or n in state.constants for n in inputs):
        state.shape_only.add(out_name)


def _check_unlabelled_operand(
    state: PropagationState, node: onnx.NodeProto, index: int, out: list[Label], out_rank: int
) -> None:
    """A constant spanning channels is sliced with them; an unfollowed activation pins them."""
    name = node.input[index]
    shape = state.shapes.get(name)
    if shape is None:
        for label in out:
            state.refuse(label.ids, f"{node.op_type} {node.name}: operand {name} has unknown shape")
        return
    offset = out_rank - len(shape)
    for label in out:
        spanned = [a - offset for a in label.axes if a - offset >= 0 and shape[a - offset] != 1]
        if not spanned:
            continue
        if name in state.shape_only:
            continue  # its values come from shapes only, so it follows any new width at run time
        if name in state.constants and len(label.axes) == 1:
            state.members.append(Member(node.name, index, name, spanned[0], label.ids, "param"))
        else:
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels meet {name}, which no rule follows")


# -- weighted producers and consumers -------------------------------------------------------


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
    in_labels = _labels(state, x)
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
    for label in _labels(state, a):
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
        for label in _labels(state, a):
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
        for label in _labels(state, name):
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
    """Ids with the contracted axis last, so both operands line up position by position."""
    return np.moveaxis(label.ids, label.axes.index(k_axis), -1)


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
    for label in _labels(state, x):
        if label.axes != (1,):
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels off axis 1")
            continue
        for index, name in enumerate(node.input[1:], start=1):
            if name in state.constants:
                state.members.append(Member(node.name, index, name, 0, label.ids, "param"))
            else:
                state.refuse(label.ids, f"{node.op_type} {node.name}: statistics are not constant")
    state.labels[node.output[0]] = list(_labels(state, x))


@handles("LayerNormalization", "Softmax", "LogSoftmax", "Hardmax", "LpNormalization")
def normalising(state: PropagationState, node: onnx.NodeProto) -> None:
    """Normalising over the channel axis makes every channel depend on all others: refuse."""
    x = node.input[0]
    rank = state.rank(x) or 0
    default = -1
    axis = _norm_axis(int(attr(node, "axis", default)), rank)
    covered = range(axis, rank) if node.op_type == "LayerNormalization" else (axis,)
    kept = []
    for label in _labels(state, x):
        if set(label.axes) & set(covered):
            state.refuse(label.ids, f"{node.op_type} {node.name} normalises over the channel axis")
        else:
            kept.append(label)
    state.labels[node.output[0]] = kept


@handles("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceL1")
def reduce(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = state.rank(x)
    axes_value = attr(node, "axes")
    if axes_value is None and len(node.input) > 1 and node.input[1]:
        axes_value = state.constants.get(node.input[1])
    if rank is None or axes_value is None:
        state.refuse_inputs([x], f"{node.op_type} {node.name}: reduced axes unknown")
        return
    reduced = sorted({_norm_axis(int(a), rank) for a in np.ravel(axes_value)})
    keepdims = int(attr(node, "keepdims", 1))
    out = []
    for label in _labels(state, x):
        if set(label.axes) & set(reduced):
            state.refuse(label.ids, f"{node.op_type} {node.name} reduces over the channel axis")
            continue
        axes = label.axes if keepdims else tuple(a - sum(r < a for r in reduced) for a in label.axes)
        out.append(Label(label.ids, axes))
    state.labels[node.output[0]] = out


@handles("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "Resize", "Upsample")
def spatial(state: PropagationState, node: onnx.NodeProto) -> None:
    """Pools and resizes act per channel on the spatial axes."""
    x = node.input[0]
    out = []
    for label in _labels(state, x):
        if label.axes == (1,):
            out.append(label)
        else:
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels off axis 1")
    state.labels[node.output[0]] = out


@handles("Transpose")
def transpose(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = state.rank(x) or 0
    perm = list(attr(node, "perm", list(range(rank - 1, -1, -1))))
    where = {src: dst for dst, src in enumerate(perm)}
    state.labels[node.output[0]] = [label.moved(tuple(where[a] for a in label.axes)) for label in _labels(state, x)]


@handles("Reshape", "Flatten")
def reshape(state: PropagationState, node: onnx.NodeProto) -> None:
    x, out_name = node.input[0], node.output[0]
    in_dims, out_dims = state.shapes.get(x), state.shapes.get(out_name)
    if x in state.shape_only:
        state.shape_only.add(out_name)
    labels = _labels(state, x)
    if not labels:
        return
    if in_dims is None or out_dims is None:
        state.refuse_inputs([x], f"{node.op_type} {node.name}: shapes unknown")
        return
    if node.op_type == "Reshape" and node.input[1] not in state.constants:
        state.refuse_inputs([x], f"Reshape {node.name}: target computed at run time")
        return
    out = []
    for label in labels:
        mapped, reason = map_label(label, in_dims, out_dims)
        if mapped is None:
            state.refuse(label.ids, f"{node.op_type} {node.name}: {reason}")
            continue
        out.append(mapped)
        if mapped.ids.ndim > 1:
            state.grids.append(mapped.ids)
        if node.op_type == "Reshape":
            state.fixups.append(ShapeFixup(node.name, "reshape", mapped.axes, mapped.ids))
    state.labels[out_name] = out


@handles("Concat")
def concat(state: PropagationState, node: onnx.NodeProto) -> None:
    out_name = node.output[0]
    rank = state.rank(out_name) or 0
    axis = _norm_axis(int(attr(node, "axis", 0)), rank)
    names = [n for n in node.input if n]
    if all(n in state.shape_only or n in state.constants for n in names):
        state.shape_only.add(out_name)
    on_axis = [lbl for n in names for lbl in _labels(state, n) if axis in lbl.axes]
    out: list[Label] = []
    for name in names:
        for label in _labels(state, name):
            if axis not in label.axes:
                _add_label(out, state, label, node.name)
    if on_axis:
        pieces = []
        for name in names:
            found = [lbl for lbl in _labels(state, name) if axis in lbl.axes]
            extent = (state.shapes.get(name) or [None] * rank)[axis]
            if found and found[0].axes == (axis,):
                pieces.append(found[0].ids)
            elif not found and extent is not None:
                pieces.append(np.full(extent, FIXED, dtype=np.int64))
            else:
                state.refuse_inputs(names, f"Concat {node.name}: channels split over several axes")
                state.labels[out_name] = out
                return
        out.append(Label(np.concatenate(pieces), (axis,)))
    state.labels[out_name] = out


@handles("Split")
def split(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = state.rank(x) or 0
    axis = _norm_axis(int(attr(node, "axis", 0)), rank)
    sizes = [(state.shapes.get(o) or [None] * rank)[axis] for o in node.output]
    for index, out_name in enumerate(node.output):
        out = []
        for label in _labels(state, x):
            if axis not in label.axes:
                out.append(label)
                continue
            if any(s is None for s in sizes):
                state.refuse(label.ids, f"Split {node.name}: split sizes unknown")
                continue
            dim = label.axes.index(axis)
            start = sum(sizes[:index])
            piece = np.take(label.ids, range(start, start + sizes[index]), axis=dim)
            out.append(Label(piece, label.axes))
            state.fixups.append(ShapeFixup(node.name, "split", label.axes, piece, index, axis))
        state.labels[out_name] = out


@handles("Slice")
def slice_(state: PropagationState, node: onnx.NodeProto) -> None:
    """Slices off the channel axes pass labels on; a slice across them keeps its channels' ids."""
    x = node.input[0]
    dims = state.shapes.get(x) or []
    consts = [state.constants.get(n) if n else None for n in node.input[1:5]]
    if consts[0] is None or consts[1] is None:
        state.refuse_inputs([x], f"Slice {node.name}: bounds computed at run time")
        return
    axes = consts[2] if len(consts) > 2 and consts[2] is not None else np.arange(len(consts[0]))
    steps = consts[3] if len(consts) > 3 and consts[3] is not None else np.ones(len(axes), dtype=np.int64)
    cuts: dict[int, tuple[int, int, int, int]] = {}
    for position, (start, end, axis, step) in enumerate(zip(consts[0], consts[1], axes, steps, strict=False)):
        axis = _norm_axis(int(axis), len(dims))
        extent = dims[axis] if dims else None
        if extent is None or not (start == 0 and step == 1 and end >= extent):
            cuts[axis] = (position, int(start), int(end), int(step))
    out = []
    for label in _labels(state, x):
        crossing = [a for a in label.axes if a in cuts]
        if not crossing:
            out.append(label)
            continue
        axis = crossing[0]
        position, start, end, step = cuts[axis]
        extent = dims[axis]
        if len(crossing) > 1 or step != 1 or extent is None or start < 0 or end < 0:
            state.refuse(label.ids, f"Slice {node.name} cuts the channel axis in a way surgery cannot follow")
            continue
        dim = label.axes.index(axis)
        state.fixups.append(ShapeFixup(node.name, "slice", label.axes, label.ids, position, axis))
        out.append(Label(np.take(label.ids, range(start, min(end, extent)), axis=dim), label.axes))
    state.labels[node.output[0]] = out


@handles("Gather")
def gather(state: PropagationState, node: onnx.NodeProto) -> None:
    x, indices = node.input[0], node.input[1]
    if x in state.shape_only:
        state.shape_only.add(node.output[0])
    rank = state.rank(x) or 0
    axis = _norm_axis(int(attr(node, "axis", 0)), rank)
    index_rank = state.rank(indices)
    out = []
    index_value = state.constants.get(indices)
    for label in _labels(state, x):
        if axis in label.axes and index_value is not None and index_value.ndim == 0 and len(label.axes) > 1:
            # selecting q, k or v out of a stacked [3, heads, dim] layout keeps that slice's channels
            dim = label.axes.index(axis)
            kept_axes = tuple(a - 1 if a > axis else a for a in label.axes if a != axis)
            out.append(Label(np.take(label.ids, int(index_value), axis=dim), kept_axes))
            continue
        if axis in label.axes or index_rank is None:
            state.refuse(label.ids, f"Gather {node.name} indexes the channel axis")
            continue
        shift = index_rank - 1
        out.append(Label(label.ids, tuple(a + shift if a > axis else a for a in label.axes)))
    state.labels[node.output[0]] = out


@handles("Expand", "Tile")
def expand(state: PropagationState, node: onnx.NodeProto) -> None:
    x, out_name = node.input[0], node.output[0]
    if x in state.shape_only or x in state.constants:
        if node.input[1] in state.shape_only or node.input[1] in state.constants:
            state.shape_only.add(out_name)
    offset = (state.rank(out_name) or 0) - (state.rank(x) or 0)
    out = []
    for label in _labels(state, x):
        moved = Label(label.ids, tuple(a + offset for a in label.axes))
        if node.input[1] not in state.constants:
            state.refuse(label.ids, f"{node.op_type} {node.name}: target computed at run time")
            continue
        target = np.ravel(state.constants[node.input[1]])
        if node.op_type == "Tile" and any(target[a] != 1 for a in label.axes):
            state.refuse(label.ids, f"Tile {node.name} repeats the channel axis")
            continue
        lead = (state.rank(out_name) or 0) - len(target)
        if node.op_type == "Expand" and any(a >= lead and target[a - lead] != 1 for a in moved.axes):
            target_axes = tuple(a - lead for a in moved.axes)
            state.fixups.append(ShapeFixup(node.name, "expand", target_axes, moved.ids))
        out.append(moved)
    state.labels[out_name] = out


@handles("Shape", "Size", "ConstantOfShape", "Range", "NonZero")
def shape_source(state: PropagationState, node: onnx.NodeProto) -> None:
    """Outputs depend on shapes only, so they adapt to new widths at run time."""
    for out_name in node.output:
        state.shape_only.add(out_name)


@handles("Squeeze", "Unsqueeze")
def squeeze(state: PropagationState, node: onnx.NodeProto) -> None:
    """Size-1 axes come and go; channel axes only shift, even when not adjacent."""
    x, out_name = node.input[0], node.output[0]
    if x in state.shape_only:
        state.shape_only.add(out_name)
    axes_value = attr(node, "axes")
    if axes_value is None and len(node.input) > 1 and node.input[1]:
        axes_value = state.constants.get(node.input[1])
    in_rank, out_rank = state.rank(x), state.rank(out_name)
    if in_rank is None or out_rank is None:
        state.refuse_inputs([x], f"{node.op_type} {node.name}: shapes unknown")
        return
    if node.op_type == "Squeeze":
        dims = state.shapes[x]
        removed = (
            {_norm_axis(int(a), in_rank) for a in np.ravel(axes_value)}
            if axes_value is not None
            else {i for i, d in enumerate(dims) if d == 1}
        )
        survivors = [a for a in range(in_rank) if a not in removed]
    else:
        inserted = {_norm_axis(int(a), out_rank) for a in np.ravel(axes_value)}
        positions = [a for a in range(out_rank) if a not in inserted]
        survivors = list(range(in_rank))
    out = []
    for label in _labels(state, x):
        gone = [a for a in label.axes if a not in survivors]
        if gone and len(gone) < len(label.axes):  # a size-1 slice of a stacked q/k/v axis
            dims_gone = tuple(label.axes.index(a) for a in gone)
            label = Label(np.squeeze(label.ids, axis=dims_gone), tuple(a for a in label.axes if a not in gone))
        elif gone:
            state.refuse(label.ids, f"Squeeze {node.name} removes a channel axis")
            continue
        if node.op_type == "Squeeze":
            out.append(Label(label.ids, tuple(survivors.index(a) for a in label.axes)))
        else:
            out.append(Label(label.ids, tuple(positions[a] for a in label.axes)))
    state.labels[out_name] = out
