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


def _constantify_reshape_targets(model: onnx.ModelProto) -> bool:
    """Replace run-time Reshape targets by constants where one -1 says it all."""
    shapes = tensor_shapes(model)
    initializers = {t.name for t in model.graph.initializer}
    changed = False
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] in initializers:
            continue
        out = shapes.get(node.output[0])
        if out is None or sum(d is None for d in out) > 1:
            continue
        target = np.array([-1 if d is None else d for d in out], dtype=np.int64)
        name = f"{node.name}_target"
        model.graph.initializer.append(numpy_helper.from_array(target, name))
        node.input[1] = name
        for attr in node.attribute:
            if attr.name == "allowzero":
                attr.i = 0
        changed = True
    return changed
