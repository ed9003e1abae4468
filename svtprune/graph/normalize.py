"""Bring any exported graph to one form the analysis can read.

onnx-graphsurgeon folds constant subgraphs (Constant nodes become initializers, static
Shape chains become values); onnx shape inference with data propagation gives every
tensor a shape; a Reshape whose target is computed at run time gets a constant target when
its output shape is known but for one (batch) dimension, so surgery can rewrite it.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import numpy_helper, shape_inference

from svtprune.errors import UserError

MIN_OPSET = 13
Dims = list[int | None]


def opset_of(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def normalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a folded, shape-inferred, uniquely named copy; the input model is not touched."""
    if opset_of(model) < MIN_OPSET:
        raise UserError(f"opset {opset_of(model)} is too old; svtprune needs opset >= {MIN_OPSET}")
    logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
    graph = gs.import_onnx(model)
    graph.fold_constants(error_ok=True).cleanup(remove_unused_graph_inputs=False).toposort()
    folded = gs.export_onnx(graph, do_type_check=False)
    folded.ir_version = model.ir_version
    _name_nodes(folded)
    folded = infer_shapes(folded)
    if _constantify_reshape_targets(folded):
        folded = infer_shapes(folded)
    return folded


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    del model.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError subclasses and RuntimeError
        raise UserError(f"ONNX shape inference failed: {exc}") from exc


def _name_nodes(model: onnx.ModelProto) -> None:
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
        seen.add(node.name)


def tensor_shapes(model: onnx.ModelProto) -> dict[str, Dims]:
    """Static dims as ints, symbolic or unknown dims as None."""
    shapes: dict[str, Dims] = {}
    values = list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)
    for value in values:
        kind = value.type.tensor_type
        if kind.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim]
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
    return shapes


SHAPE_INPUTS = {"Slice": (1, 2, 3, 4), "Split": (1,), "Expand": (1,), "Tile": (1,)}


def _constantify_reshape_targets(model: onnx.ModelProto) -> bool:
    """Give run-time shape arguments (Shape/Gather/Concat chains) constant values.

    The model runs at two batch sizes. A Reshape's output dim that changes with the batch
    becomes -1 in a constant target, the rest are constants; Slice/Split/Expand/Tile
    arguments that do not change become constants. Anything else stays as it is, and the
    analysis then refuses the channels that pass through it, with the reason.
    """
    initializers = {t.name for t in model.graph.initializer}
    reshapes = [n for n in model.graph.node if n.op_type == "Reshape" and n.input[1] not in initializers]
    arguments = sorted(
        {
            n.input[i]
            for n in model.graph.node
            for i in SHAPE_INPUTS.get(n.op_type, ())
            if i < len(n.input) and n.input[i] and n.input[i] not in initializers
        }
    )
    if not reshapes and not arguments:
        return False
    probed = sorted({n.output[0] for n in reshapes} | set(arguments))
    seen = [_probe(model, probed, batch) for batch in (1, 3)]
    if seen[0] is None or seen[1] is None:
        return False
    changed = False
    for node in reshapes:
        small, large = (np.array(run[node.output[0]].shape, dtype=np.int64) for run in seen)
        if small.shape != large.shape or int((small != large).sum()) > 1:
            continue
        _replace_input(model, node, 1, np.where(small != large, -1, small).astype(np.int64))
        for attribute in node.attribute:  # a constant target has no zeros to keep
            if attribute.name == "allowzero":
                attribute.i = 0
        changed = True
    for node in model.graph.node:
        for i in SHAPE_INPUTS.get(node.op_type, ()):
            name = node.input[i] if i < len(node.input) else ""
            if name in arguments and np.array_equal(seen[0][name], seen[1][name]):
                _replace_input(model, node, i, seen[0][name])
                changed = True
    return changed


def _replace_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    name = f"{node.name}_arg{index}"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    node.input[index] = name


def _probe(model: onnx.ModelProto, names: list[str], batch: int) -> dict[str, np.ndarray] | None:
    """Values of ``names`` with every input zero at this batch size (None: the graph cannot run so)."""
    from svtprune.runtime import make_session, with_outputs  # ORT loads only when a graph needs probing

    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    probe = with_outputs(model, names, types={name: types.get(name) or onnx.TensorProto.FLOAT for name in names})
    feeds = {}
    for value in probe.graph.input:
        if value.name in {t.name for t in probe.graph.initializer}:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if sum(d is None for d in dims) != 1:
            return None
        shape = [batch if d is None else d for d in dims]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        feeds[value.name] = np.zeros(shape, dtype=dtype)
    try:
        session = make_session(probe, env_threads=False, optimize=False)
        values = session.run(names, feeds)
    except Exception:  # a graph ORT cannot run is reported later, by evaluation
        return None
    return dict(zip(names, values, strict=True))
