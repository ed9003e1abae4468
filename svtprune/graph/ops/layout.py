"""Layout operators: channels move between axes, split into heads, or get sliced."""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.labels import FIXED, Label, Member, PropagationState, ShapeFixup
from svtprune.graph.ops.registry import add_label, attr, handles, labels_of, norm_axis
from svtprune.graph.reshape_map import map_label


@handles("Transpose")
def transpose(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = state.rank(x) or 0
    perm = list(attr(node, "perm", list(range(rank - 1, -1, -1))))
    where = {src: dst for dst, src in enumerate(perm)}
    state.labels[node.output[0]] = [label.moved(tuple(where[a] for a in label.axes)) for label in labels_of(state, x)]


@handles("Reshape", "Flatten")
def reshape(state: PropagationState, node: onnx.NodeProto) -> None:
    x, out_name = node.input[0], node.output[0]
    in_dims, out_dims = state.shapes.get(x), state.shapes.get(out_name)
    if x in state.shape_only:
        state.shape_only.add(out_name)
    labels = labels_of(state, x)
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
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    names = [n for n in node.input if n]
    if all(n in state.shape_only or n in state.constants for n in names):
        state.shape_only.add(out_name)
    on_axis = [lbl for n in names for lbl in labels_of(state, n) if axis in lbl.axes]
    out: list[Label] = []
    for name in names:
        for label in labels_of(state, name):
            if axis not in label.axes:
                add_label(out, state, label, node.name)
    for index, name in enumerate(node.input):
        if name and not labels_of(state, name):  # a class token joins the tokens: its channels go too
            _slice_joined_piece(state, node, index, [lbl for lbl in out if axis not in lbl.axes])
    if on_axis:
        pieces = []
        for name in names:
            found = [lbl for lbl in labels_of(state, name) if axis in lbl.axes]
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


def _slice_joined_piece(state: PropagationState, node: onnx.NodeProto, index: int, labels: list[Label]) -> None:
    """A constant (or a constant repeated by Expand) concatenated beside channels is cut with them."""
    name = node.input[index]
    shape = state.shapes.get(name)
    for label in labels:
        if shape is None or len(label.axes) != 1 or shape[label.axes[0]] == 1:
            if shape is None or any(shape[a] != 1 for a in label.axes):
                state.refuse(label.ids, f"Concat {node.name}: channels meet {name}, which no rule follows")
            continue
        axis = label.axes[0]
        if name in state.constants:
            state.members.append(Member(node.name, index, name, axis, label.ids, "param"))
            continue
        source = state.expanded.get(name)
        if source is None:
            state.refuse(label.ids, f"Concat {node.name}: channels meet {name}, which no rule follows")
            continue
        expand_node, constant = source
        own_axis = axis - (len(shape) - state.constants[constant].ndim)
        if own_axis < 0 or state.constants[constant].shape[own_axis] != len(label.ids):
            state.refuse(label.ids, f"Concat {node.name}: channels meet {name}, which no rule follows")
            continue
        state.members.append(Member(expand_node, 0, constant, own_axis, label.ids, "param"))


@handles("Split")
def split(state: PropagationState, node: onnx.NodeProto) -> None:
    x = node.input[0]
    rank = state.rank(x) or 0
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    sizes = [(state.shapes.get(o) or [None] * rank)[axis] for o in node.output]
    for index, out_name in enumerate(node.output):
        out = []
        for label in labels_of(state, x):
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
        axis = norm_axis(int(axis), len(dims))
        extent = dims[axis] if dims else None
        if extent is None or not (start == 0 and step == 1 and end >= extent):
            cuts[axis] = (position, int(start), int(end), int(step))
    out = []
    for label in labels_of(state, x):
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
    axis = norm_axis(int(attr(node, "axis", 0)), rank)
    index_rank = state.rank(indices)
    out = []
    index_value = state.constants.get(indices)
    for label in labels_of(state, x):
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
    if node.op_type == "Expand" and x in state.constants and node.input[1] not in state.constants:
        state.expanded[out_name] = (node.name, x)  # a learned token repeated over the batch
    out = []
    for label in labels_of(state, x):
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
            {norm_axis(int(a), in_rank) for a in np.ravel(axes_value)}
            if axes_value is not None
            else {i for i, d in enumerate(dims) if d == 1}
        )
        survivors = [a for a in range(in_rank) if a not in removed]
    else:
        inserted = {norm_axis(int(a), out_rank) for a in np.ravel(axes_value)}
        positions = [a for a in range(out_rank) if a not in inserted]
        survivors = list(range(in_rank))
    out = []
    for label in labels_of(state, x):
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


@handles("Pad")
def pad(state: PropagationState, node: onnx.NodeProto) -> None:
    """Padding the spatial axes (Swin's windows) keeps channels where they are; padding them is refused."""
    x, out_name = node.input[0], node.output[0]
    rank = state.rank(x) or 0
    pads = state.constants.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attr(node, "pads")
    axes_value = state.constants.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
    fill = state.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    out = []
    for label in labels_of(state, x):
        if pads is None or (len(node.input) > 3 and node.input[3] and axes_value is None):
            state.refuse(label.ids, f"Pad {node.name}: pads computed at run time")
            continue
        pads_array = np.ravel(np.asarray(pads))
        axes = [norm_axis(int(a), rank) for a in np.ravel(axes_value)] if axes_value is not None else range(rank)
        padded = {a for i, a in enumerate(axes) if pads_array[i] != 0 or pads_array[i + len(axes)] != 0}
        if padded & set(label.axes):
            state.refuse(label.ids, f"Pad {node.name} pads the channel axis")
            continue
        if fill is not None and np.any(np.asarray(fill) != 0) or attr(node, "mode", b"constant") != b"constant":
            state.nonzero.update(label.ids.ravel().tolist())  # padded positions of removed channels are not zero
        out.append(label)
    state.labels[out_name] = out
