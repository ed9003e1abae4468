"""Low-bit weights dequantized once, when ONNX Runtime loads the file, instead of at every call.

A weight stored as ``DequantizeLinear(q, s[, z])`` runs the dequantize at each call, and the
Conv behind it cannot prepack a weight that is not constant: on ONNX Runtime 1.32 (CPU, one
thread) a 3x3 Conv fed by DequantizeLinear runs at half its float speed (docs/benchmark-log.md,
"Integer kernels on spike inputs"). ORT's constant folding skips DequantizeLinear (it keeps QDQ
pairs for its quantized kernels) unless a session option turns that off, which a file cannot
carry. It does fold Cast and Mul of constants. So the same integers, stored the same way, are
written as

    w = Mul(Cast(q, float)[ - Cast(z, float)], s)

with ``s`` and ``z`` shaped to broadcast along the quantization axis. That is the arithmetic
DequantizeLinear itself does (``(q - z) * s`` in float32), so the weights ORT folds are equal
bit for bit; the file keeps its low-bit integers and gains one node per weight.

Block-quantized weights (DequantizeLinear's ``block_size``) are left as they are.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx
from onnx import helper, numpy_helper

from svtprune.graph.io import attribute


@dataclass
class LoadFolding:
    """The rewritten model, and the DequantizeLinear outputs now computed from Cast and Mul."""

    model: onnx.ModelProto
    rewritten: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # DequantizeLinear output -> why it stays


def dequantize_at_load(model: onnx.ModelProto) -> LoadFolding:
    """A copy of ``model`` whose constant DequantizeLinear nodes are Cast/Sub/Mul of initializers."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    readers = Counter(name for node in graph.node for name in node.input)
    producers = {name: node for node in graph.node for name in node.output}
    constant = set(inits)
    folding = LoadFolding(out)
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "DequantizeLinear":
            try:
                nodes.extend(_cast_mul(node, constant, inits, _Tensors(readers, producers)))
                folding.rewritten.append(node.output[0])
            except _Kept as kept:
                nodes.append(node)
                folding.kept[node.output[0]] = str(kept)
        else:
            nodes.append(node)
        if all(name in constant for name in node.input if name):
            constant.update(node.output)
    del graph.node[:]
    graph.node.extend(nodes)
    return folding


class _Kept(Exception):
    """A DequantizeLinear that stays as written, and why."""


@dataclass
class _Tensors:
    readers: Counter  # tensor -> how many node inputs read it
    producers: dict[str, onnx.NodeProto]  # tensor -> the node writing it


def _cast_mul(
    node: onnx.NodeProto, constant: set[str], inits: dict[str, onnx.TensorProto], tensors: _Tensors
) -> list[onnx.NodeProto]:
    """Cast, Sub (with a zero point) and Mul computing what ``node`` computes from constants."""
    if not all(name in constant for name in node.input if name):
        raise _Kept("reads a tensor computed at run time")
    if attribute(node, "block_size", 0):
        raise _Kept("block-quantized (its scales would need expanding per block)")
    values, scale = node.input[0], node.input[1]
    if values not in inits:
        raise _Kept("its integers are computed, not stored")
    zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
    rank = len(inits[values].dims)
    axis = attribute(node, "axis", 1)
    axis = axis + rank if axis < 0 else axis
    reshaped = [_along_axis(name, axis, rank, inits, tensors) for name in (scale, zero_point) if name]
    for tensor, shape in filter(None, reshaped):  # only once every input is known to broadcast
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).reshape(shape), tensor.name))
    output = node.output[0]
    nodes = [helper.make_node("Cast", [values], [f"{output}_float"], to=onnx.TensorProto.FLOAT)]
    current = f"{output}_float"
    if zero_point is not None:
        nodes.append(helper.make_node("Cast", [zero_point], [f"{output}_zero_float"], to=onnx.TensorProto.FLOAT))
        nodes.append(helper.make_node("Sub", [current, f"{output}_zero_float"], [f"{output}_centred"]))
        current = f"{output}_centred"
    nodes.append(helper.make_node("Mul", [current, scale], [output]))
    return nodes


def _along_axis(
    name: str, axis: int, rank: int, inits: dict[str, onnx.TensorProto], tensors: _Tensors
) -> tuple[onnx.TensorProto, list[int]] | None:
    """The initializer to reshape, and its shape, for ``name`` (a scalar or one value per index of ``axis``)
    to broadcast over a weight of ``rank`` dimensions; None when it broadcasts as it is.

    The scale is an initializer, a float16 one cast to float32, or the per-tensor dequantize of one
    (scale codes): either way an initializer read only on this path is reshaped in place (same
    values, same bytes)."""
    source, path = name, [name]
    if source not in inits:
        producer = tensors.producers.get(source)
        if producer is None or producer.op_type not in ("DequantizeLinear", "Cast") or producer.input[0] not in inits:
            raise _Kept(f"{name} is computed by something other than a Cast or DequantizeLinear of stored values")
        if attribute(producer, "block_size", 0) or any(len(inits[i].dims) for i in producer.input[1:] if i in inits):
            raise _Kept(f"{name} is dequantized per channel itself")
        source = producer.input[0]
        path.append(source)
    dims = list(inits[source].dims)
    if len(dims) == 0 or rank <= 1 or axis == rank - 1:
        return None
    if len(dims) != 1:
        raise _Kept(f"{name} has shape {dims}, expected one value per index of axis {axis}")
    if any(tensors.readers[step] != 1 for step in path):
        raise _Kept(f"{name} is read elsewhere too: reshaping it in place would change that reader")
    shape = [1] * rank
    shape[axis] = dims[0]
    return inits[source], shape


INTEGER_TYPES = {
    onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4, onnx.TensorProto.UINT4,
    onnx.TensorProto.INT2, onnx.TensorProto.UINT2,
}  # fmt: skip


def dequantize_linear_again(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with every Cast/Sub/Mul dequantization of stored integers written as DequantizeLinear again.

    The inverse of ``dequantize_at_load``: what reads a quantized file's grids (``thaw``, the byte
    accounting) reads one form only."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {name: node for node in graph.node for name in node.output}
    replaced: dict[str, onnx.NodeProto] = {}  # Mul output -> its DequantizeLinear
    absorbed: set[int] = set()  # ids of the Cast and Sub nodes the DequantizeLinear replaces
    for node in graph.node:
        found = _stored_dequantize(node, inits, producers) if node.op_type == "Mul" else None
        if found is None:
            continue
        values, zero_point, scale, parts = found
        source = _scale_source(scale, inits, producers, replaced)
        axis = _axis_and_flatten(source, len(inits[values].dims), [zero_point] if zero_point else [], inits)
        inputs = [values, scale] + ([zero_point] if zero_point else [])
        replaced[node.output[0]] = helper.make_node(
            "DequantizeLinear", inputs, list(node.output), name=f"{node.output[0]}_dequantize", axis=axis
        )
        absorbed.update(id(p) for p in parts)
    nodes = [replaced.get(n.output[0], n) for n in graph.node if id(n) not in absorbed]
    del graph.node[:]
    graph.node.extend(nodes)
    return out


def _stored_dequantize(
    mul: onnx.NodeProto, inits: dict[str, onnx.TensorProto], producers: dict[str, onnx.NodeProto]
) -> tuple[str, str | None, str, list[onnx.NodeProto]] | None:
    """(integers, zero point, scale, the Cast/Sub nodes) when ``mul`` dequantizes stored integers, else None."""
    first = producers.get(mul.input[0])
    integer = _cast_of_integers(first, inits)
    if integer is not None:
        return integer, None, mul.input[1], [first]
    if first is None or first.op_type != "Sub":
        return None
    cast_values, cast_zero = (producers.get(name) for name in first.input)
    values, zero = _cast_of_integers(cast_values, inits), _cast_of_integers(cast_zero, inits)
    if values is None or zero is None:
        return None
    return values, zero, mul.input[1], [first, cast_values, cast_zero]


def _cast_of_integers(node: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto]) -> str | None:
    """The integer initializer ``node`` casts to float32, or None."""
    if node is None or node.op_type != "Cast" or attribute(node, "to", 0) != onnx.TensorProto.FLOAT:
        return None
    tensor = inits.get(node.input[0])
    return node.input[0] if tensor is not None and tensor.data_type in INTEGER_TYPES else None


def _scale_source(
    scale: str,
    inits: dict[str, onnx.TensorProto],
    producers: dict[str, onnx.NodeProto],
    replaced: dict[str, onnx.NodeProto],
) -> str:
    """The initializer holding the scale's values: itself, or the codes of a per-tensor dequantize."""
    if scale in inits:
        return scale
    producer = replaced.get(scale) or producers.get(scale)
    if producer is not None and producer.op_type in ("DequantizeLinear", "Cast") and producer.input[0] in inits:
        return producer.input[0]
    raise ValueError(f"the scale {scale} is computed by something other than a dequantize of stored values")


def _axis_and_flatten(source: str, rank: int, zero_points: list[str], inits: dict[str, onnx.TensorProto]) -> int:
    """The quantization axis a broadcast-shaped scale encodes; the scale (and zero points) flattened back to 1-D."""
    dims = list(inits[source].dims)
    if len(dims) <= 1:
        return rank - 1 if dims and dims[0] > 1 and rank > 1 else 0
    wide = [i for i, d in enumerate(dims) if d != 1]
    axis = wide[0] if wide else 0
    for name in [source, *zero_points]:
        tensor = inits[name]
        if len(tensor.dims) > 1:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).reshape(-1), name))
    return axis
