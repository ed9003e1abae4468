"""Storage types: a weight stored as float16 stays float16 after surgery and re-fitting.

Exporters write a half-precision model in two ways. Either each weight is a float16 initializer
followed by a ``Cast`` to float32 (the graph computes in float32), or the whole graph computes in
float16. Normalisation folds the first kind into float32 initializers, so the analysed model
would write every weight back at twice its size. ``stored_types`` remembers, before folding,
which folded tensors were stored narrower; ``restore_storage`` puts the same storage (the
initializer in its type, a ``Cast`` back) on a model built from the analysed one. Slices of a
float16 weight convert back exactly; re-fitted values (computed in float32/64) round to it.
The second kind keeps its types through surgery on its own: slicing keeps an array's dtype.
"""

from __future__ import annotations

import onnx
from onnx import helper, numpy_helper

from svtprune.errors import UserError
from svtprune.graph.io import attribute

HALF_TYPES = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
BIAS_INPUT = {"Conv": 2, "Gemm": 2}  # a bias the re-fit adds is stored like its layer's weight


def stored_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> stored type, for each ``Cast`` to float32 of a float16 initializer (before folding)."""
    half = {t.name: t.data_type for t in model.graph.initializer if t.data_type in HALF_TYPES}
    for node in model.graph.node:
        if node.op_type == "Constant" and attribute(node, "value") is not None:
            value = attribute(node, "value")
            if value.data_type in HALF_TYPES:
                half[node.output[0]] = value.data_type
    return {
        node.output[0]: half[node.input[0]]
        for node in model.graph.node
        if node.op_type == "Cast" and node.input and node.input[0] in half
        and attribute(node, "to") == onnx.TensorProto.FLOAT
    }  # fmt: skip


def check_compute_type(model: onnx.ModelProto) -> None:
    """Refuse a graph that computes in half precision, up front: its neurons, taps and re-fits are float32 code.

    (Its weights would prune, but spike counts, energy and the oracle's spike check would see no neuron.)
    """
    initializers = {t.name: t.data_type for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in initializers and value.type.tensor_type.elem_type in HALF_TYPES:
            raise UserError(f"the model input {value.name} is float16; svtprune prunes graphs that compute in float32")
    direct = sorted(
        {
            name
            for node in model.graph.node
            if node.op_type != "Cast"
            for name in node.input
            if initializers.get(name) in HALF_TYPES
        }
    )
    if direct:
        raise UserError(
            f"the graph computes in float16 ({direct[0]} feeds a float16 operator); svtprune prunes graphs "
            "that compute in float32 (float16 weights each followed by a Cast to float32 are supported)"
        )


def restore_storage(model: onnx.ModelProto, analysed: onnx.ModelProto, stored: dict[str, int]) -> onnx.ModelProto:
    """Store each float32 weight of ``model`` as its analysed counterpart was stored (in place, returned).

    Names may have changed (a re-fit writes fresh initializers, a shared weight cut two ways
    gets copies), node names do not: the type is looked up by (node, input index).
    """
    if not stored:
        return model
    wanted = {
        (node.name, index): stored[name]
        for node in analysed.graph.node
        for index, name in enumerate(node.input)
        if name in stored
    }
    per_tensor: dict[str, set[int | None]] = {}
    for node in model.graph.node:
        for index, name in enumerate(node.input):
            kind = wanted.get((node.name, index))
            if kind is None and index == BIAS_INPUT.get(node.op_type):
                kind = wanted.get((node.name, 1))
            per_tensor.setdefault(name, set()).add(kind)
    casts = []
    for tensor in model.graph.initializer:
        kinds = per_tensor.get(tensor.name, set())
        if tensor.data_type != onnx.TensorProto.FLOAT or len(kinds) != 1 or None in kinds:
            continue  # not a weight that was stored narrower, or shared with a use that was not
        kind = next(iter(kinds))
        name = tensor.name
        value = numpy_helper.to_array(tensor).astype(helper.tensor_dtype_to_np_dtype(kind))
        stored_name = f"{name}_{helper.tensor_dtype_to_string(kind).removeprefix('TensorProto.').lower()}"
        tensor.CopyFrom(numpy_helper.from_array(value, stored_name))
        casts.append(helper.make_node("Cast", [stored_name], [name], name=f"{name}_cast", to=onnx.TensorProto.FLOAT))
    nodes = casts + list(model.graph.node)  # constants first keeps the graph in topological order
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def fold_storage(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with each float16 weight read through a Cast folded back to a float32 initializer.

    Steps that rewrite weights in place (quantization, fine-tuning) look for float32 initializers;
    ``restore_storage`` afterwards stores what they left in float32 the way the file did.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    half = {t.name: t for t in out.graph.initializer if t.data_type in HALF_TYPES}
    folds = [
        node
        for node in out.graph.node
        if node.op_type == "Cast" and node.input[0] in half and attribute(node, "to") == onnx.TensorProto.FLOAT
    ]
    if not folds:
        return out
    folded = {id(node) for node in folds}
    readers = {name for node in out.graph.node if id(node) not in folded for name in node.input}
    for node in folds:
        value = numpy_helper.to_array(half[node.input[0]]).astype("float32")
        out.graph.initializer.append(numpy_helper.from_array(value, node.output[0]))
    kept_nodes = [n for n in out.graph.node if id(n) not in folded]
    del out.graph.node[:]
    out.graph.node.extend(kept_nodes)
    kept = [t for t in out.graph.initializer if t.name not in half or t.name in readers]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return out
