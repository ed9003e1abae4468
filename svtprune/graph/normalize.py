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
from svtprune.graph.simplify import fold_head_detours

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
    folded = _fold(model)
    _name_nodes(folded)
    folded = infer_shapes(folded)
    if _scalar_state(folded):
        folded = infer_shapes(folded)
    if fold_head_detours(folded, tensor_shapes(folded)):
        folded = infer_shapes(folded)
    if _constantify_reshape_targets(folded):
        _drop_dead_nodes(folded)
        folded = infer_shapes(folded)
    return folded


def _scalar_state(model: onnx.ModelProto) -> bool:
    """Neuron state stored at a fixed batch becomes a scalar where that changes no output's shape."""
    from svtprune.graph.state import state_constants

    state = state_constants(model)
    if not state:
        return False
    shapes = tensor_shapes(model)
    safe = set(state)
    for node in model.graph.node:
        for name in set(node.input) & safe:
            others = [shapes.get(n) for n in node.input if n and n != name]
            out = shapes.get(node.output[0])
            if out is None or any(o is None for o in others) or _broadcast(others) != out:
                safe.discard(name)
    for tensor in model.graph.initializer:
        if tensor.name in safe:
            tensor.CopyFrom(numpy_helper.from_array(state[tensor.name], tensor.name))
    return bool(safe)


def _broadcast(shapes: list[Dims]) -> Dims:
    """Numpy broadcasting of shapes whose unknown dims are None (None wins over 1)."""
    rank = max((len(s) for s in shapes), default=0)
    out: Dims = [1] * rank
    for shape in shapes:
        for i, dim in enumerate(shape, start=rank - len(shape)):
            out[i] = None if dim is None or out[i] is None and dim == 1 else (dim if dim != 1 else out[i])
    return out


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Shape chains a constant target replaced would otherwise still read the dims they no longer feed."""
    outputs = {o.name for o in model.graph.output}
    nodes = list(model.graph.node)
    while True:
        used = outputs | {name for node in nodes for name in node.input}
        alive = [node for node in nodes if any(out in used for out in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    del model.graph.node[:]
    model.graph.node.extend(nodes)


FOLD_ROUNDS = 4


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants, with every tensor's inferred shape known to the folder.

    A value computed from a static dimension (the classic exporter's ``Shape -> Gather -> Cast ->
    Sqrt`` attention scale, from the head size) becomes a constant here, so pruning the heads'
    channels later cannot change its meaning; only dimensions that vary (the batch) stay as
    ``Shape`` reads. Each round's folding can expose more static shapes, hence a few rounds.
    """
    folded = model
    for _ in range(FOLD_ROUNDS):
        nodes = len(folded.graph.node)
        graph = gs.import_onnx(_with_shapes(folded))
        graph.fold_constants(error_ok=True).cleanup(remove_unused_graph_inputs=False).toposort()
        folded = gs.export_onnx(graph, do_type_check=False)
        folded.ir_version = model.ir_version
        if len(folded.graph.node) == nodes:
            break
    return folded


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred shapes, or as it is where inference cannot run (it is retried later)."""
    try:
        return shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # onnx raises InferenceError subclasses and RuntimeError
        return model


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
    frontier = _shape_frontier(model)
    if not reshapes and not arguments and not frontier:
        return False
    probed = sorted({n.output[0] for n in reshapes} | set(arguments) | set(frontier))
    if _fixed_inputs(model):  # a fixed-batch graph runs at one shape: every shape argument is a constant
        seen = [_probe(model, probed, 0)] * 2
    else:
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
    for node in model.graph.node:  # numbers computed from dims that do not vary (a head size) become constants
        for i, name in enumerate(node.input):
            if name in frontier and np.array_equal(seen[0][name], seen[1][name]):
                _replace_input(model, node, i, seen[0][name])
                changed = True
    return changed


def _shape_frontier(model: onnx.ModelProto) -> set[str]:
    """Values computed from ``Shape`` reads and constants alone, where they meet anything else.

    The folder leaves some of them (a ``Slice`` of a shape with negative bounds, a shape it could not
    infer); probing them at two batch sizes tells the ones that do not vary, which are constants.
    """
    constant = {t.name for t in model.graph.initializer} | {
        n.output[0] for n in model.graph.node if n.op_type == "Constant"
    }
    derived: set[str] = set()
    for node in model.graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in ("Shape", "Size") or (
            node.op_type != "Constant"
            and inputs
            and any(n in derived for n in inputs)
            and all(n in derived or n in constant for n in inputs)
        ):
            derived.update(node.output)
    outputs = {o.name for o in model.graph.output}
    frontier = set()
    for node in model.graph.node:
        if node.op_type in ("Shape", "Size") or not set(node.output) <= derived:
            frontier.update(name for name in node.input if name in derived)
    return frontier | (derived & outputs)


def _replace_input(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
    name = f"{node.name}_arg{index}"
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    node.input[index] = name


def _fixed_inputs(model: onnx.ModelProto) -> bool:
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    return bool(inputs) and all(d.HasField("dim_value") for v in inputs for d in v.type.tensor_type.shape.dim)


def _probe(model: onnx.ModelProto, names: list[str], batch: int) -> dict[str, np.ndarray] | None:
    """Values of ``names`` with every input zero at this batch size (0: the graph's fixed shape; None: the
    graph cannot run so)."""
    from svtprune.graph.taps import with_outputs
    from svtprune.runtime import make_session  # ORT loads only when a graph needs probing

    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    probe = with_outputs(model, names, types={name: types.get(name) or onnx.TensorProto.FLOAT for name in names})
    feeds = {}
    for value in probe.graph.input:
        if value.name in {t.name for t in probe.graph.initializer}:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]
        if sum(d is None for d in dims) != (0 if batch == 0 else 1):
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
