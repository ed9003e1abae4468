"""Apply a plan: slice initializers, rewrite shape constants, check the result.

``prune`` removes slices and changes no weight value; ``zero_out`` keeps every shape and
sets the same slices to zero, which is the oracle a pruned model must match. Both work on
a copy of the analysed (normalised) model.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

from svtprune.graph.analysis import Analysis, constants_of
from svtprune.graph.labels import ShapeFixup
from svtprune.graph.layer_norm import expand_layer_norms
from svtprune.graph.normalize import infer_shapes
from svtprune.graph.plan import Plan, compacted_shape, keep_mask
from svtprune.graph.storage import restore_storage

Request = tuple[tuple[int, bytes], ...]  # (axis, kept-mask bytes) per slicing request


def prune(analysis: Analysis, plan: Plan, check: bool = True, stored: bool = True) -> onnx.ModelProto:
    """The dense, smaller model; raises UserError for an invalid plan.

    With ``stored`` each weight keeps the type the original file stored it in (float16 + Cast);
    a caller that re-fits weights first passes False and calls ``keep_storage`` afterwards.
    """
    atom_keep = keep_mask(analysis, plan)
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    _slice_members(model, analysis, atom_keep, remove=True)
    _rewrite_shapes(model, analysis, atom_keep)
    _drop_unused_initializers(model)
    if stored:
        keep_storage(model, analysis)
    model = infer_shapes(model)
    if check:
        onnx.checker.check_model(model, full_check=True)
    return model


def keep_storage(model: onnx.ModelProto, analysis: Analysis) -> onnx.ModelProto:
    """Weights of a model built from ``analysis`` stored as the original file stored them (in place)."""
    return restore_storage(model, analysis.model, analysis.stored)


def zero_out(analysis: Analysis, plan: Plan) -> onnx.ModelProto:
    """The oracle: original shapes, removed slices set to zero."""
    atom_keep = keep_mask(analysis, plan)
    model = onnx.ModelProto()
    model.CopyFrom(analysis.model)
    _slice_members(model, analysis, atom_keep, remove=False)
    return model


def _requests(analysis: Analysis, atom_keep: np.ndarray) -> dict[tuple[str, int], list[tuple[int, np.ndarray]]]:
    """Per node input: the (axis, kept flags) cuts that the plan asks of its initializer."""
    cuts: dict[tuple[str, int], list[tuple[int, np.ndarray]]] = defaultdict(list)
    for member in analysis.members:
        flags = atom_keep[member.ids]
        key = (member.node, member.input_index)
        if not any(axis == member.axis for axis, _ in cuts[key]):
            cuts[key].append((member.axis, flags))
    return cuts


def _slice_members(model: onnx.ModelProto, analysis: Analysis, atom_keep: np.ndarray, remove: bool) -> None:
    cuts = _requests(analysis, atom_keep)
    values = constants_of(model)
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            if name in values:
                uses[name].append((node, index))
    replaced: dict[str, np.ndarray] = {}
    added: list[onnx.TensorProto] = []
    for name, consumers in uses.items():
        requests = [_signature(cuts.get((node.name, index), [])) for node, index in consumers]
        if not any(requests):
            continue
        if all(r == requests[0] for r in requests):
            replaced[name] = _cut(values[name], cuts[(consumers[0][0].name, consumers[0][1])], remove)
            continue
        for (node, index), request in zip(consumers, requests, strict=True):
            if request:  # a shared tensor cut differently per use: each use gets its own copy
                copy_name = f"{name}__{node.name}_{index}"
                added.append(numpy_helper.from_array(_cut(values[name], cuts[(node.name, index)], remove), copy_name))
                node.input[index] = copy_name
    for tensor in model.graph.initializer:
        if tensor.name in replaced:
            tensor.CopyFrom(numpy_helper.from_array(replaced[tensor.name], tensor.name))
    model.graph.initializer.extend(added)


def _signature(cuts: list[tuple[int, np.ndarray]]) -> Request:
    return tuple(sorted((axis, np.packbits(flags).tobytes() + bytes([len(flags) % 8])) for axis, flags in cuts))


def _cut(value: np.ndarray, cuts: list[tuple[int, np.ndarray]], remove: bool) -> np.ndarray:
    out = value.copy()
    for axis, flags in cuts:
        if remove:
            out = np.compress(flags, out, axis=axis)
        else:
            index = [slice(None)] * out.ndim
            index[axis] = ~flags
            out[tuple(index)] = 0
    return out


def _rewrite_shapes(model: onnx.ModelProto, analysis: Analysis, atom_keep: np.ndarray) -> None:
    """New Reshape targets, Split sizes and Expand shapes from the compacted label shapes; LayerNorms
    over pruned channels written out (``layer_norm``)."""
    nodes = {node.name: node for node in model.graph.node}
    values = constants_of(model)
    split_sizes: dict[str, dict[int, int]] = defaultdict(dict)
    created: set[str] = set()  # initializers written here: a node rewritten twice updates its own
    layer_norms: dict[str, tuple[int, int]] = {}
    for fix in analysis.fixups:
        node = nodes[fix.node]
        new_dims = compacted_shape(atom_keep[fix.ids])
        assert new_dims is not None, "keep_mask validated every grid"
        if fix.kind == "group":  # a depthwise Conv keeps one group per remaining channel
            for attribute in node.attribute:
                if attribute.name == "group":
                    attribute.i = new_dims[0]
            continue
        if fix.kind == "slice":
            _rewrite_slice(model, node, fix, atom_keep, values, created)
            continue
        if fix.kind == "split":
            split_sizes[fix.node][fix.output_index] = new_dims[fix.axes.index(fix.split_axis)]
            continue
        if fix.kind == "layernorm":
            if new_dims[0] < len(fix.ids):
                layer_norms[fix.node] = (len(fix.ids), new_dims[0])
            continue
        target = values[node.input[1]].copy()
        for axis, dim in zip(fix.axes, new_dims, strict=True):
            if axis >= 0:
                target[axis] = dim if fix.kind == "reshape" else 1
        _set_input(model, node, 1, target, f"{node.name}_shape", created)
        values[node.input[1]] = target
    for name, sizes in split_sizes.items():
        node = nodes[name]
        counts = np.array([sizes[i] for i in range(len(node.output))], dtype=np.int64)
        _set_input(model, node, 1, counts, f"{name}_split", created)
        kept_attrs = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(kept_attrs)
    expand_layer_norms(model, layer_norms)


def _rewrite_slice(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    fix: ShapeFixup,
    atom_keep: np.ndarray,
    values: dict,
    created: set[str],
) -> None:
    """Bounds move to where the same rows sit once removed rows are squeezed out."""
    dim = fix.axes.index(fix.split_axis)
    rows = np.moveaxis(atom_keep[fix.ids], dim, 0)
    alive = rows.reshape(rows.shape[0], -1).any(axis=1)
    starts, ends = values[node.input[1]].copy(), values[node.input[2]].copy()
    at = fix.output_index
    starts[at], ends[at] = alive[: starts[at]].sum(), alive[: min(ends[at], len(alive))].sum()
    _set_input(model, node, 1, starts, f"{node.name}_starts", created)
    _set_input(model, node, 2, ends, f"{node.name}_ends", created)
    values[node.input[1]], values[node.input[2]] = starts, ends


def _set_input(
    model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, name: str, created: set[str]
) -> None:
    """Point one input at a fresh initializer, so a de-duplicated constant stays intact elsewhere.

    A node rewritten twice (two groups through one Reshape) updates its own fresh initializer; a
    name the graph already uses (a node whose name ends like one of ours) gets a numbered suffix.
    """
    tensors = {t.name: t for t in model.graph.initializer}
    own = node.input[index] if index < len(node.input) else ""
    if own in created:
        tensors[own].CopyFrom(numpy_helper.from_array(value, own))
        return
    unique, count = name, 0
    while unique in tensors:
        count += 1
        unique = f"{name}_{count}"
    name = unique
    created.add(name)
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    while len(node.input) <= index:
        node.input.append("")
    node.input[index] = name


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    """Old shape constants replaced by rewritten ones would otherwise stay in the file."""
    used = {name for node in model.graph.node for name in node.input}
    used |= {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
