"""Spike-fed 1x1 convolutions as integer matrix products: exact on spikes, no float dequantize per call.

A Conv1d over tokens with a kernel of 1, ``y[t, o, n] = sum_c W[o, c] x[t, c, n] + b[o]``, whose
weight is ``DequantizeLinear(q, s[, z])`` per output channel and whose input is a spike tensor
(every value 0 or 1), is rewritten as

    y = Transpose(MatMulIntegerToFloat(uint8(Transpose(x)), qᵀ, 1, s, 0, z, b))

(com.microsoft). ``uint8(x)`` is exact at scale 1 for 0/1, the int32 accumulator of ``(q - z) x`` is
exact, so the result differs from the float Conv only in float rounding (one product by ``s``
instead of a sum of dequantized products). The scale, zero point and bias tensors are the ones
the quantized model already computes; only the integers are stored transposed (same bytes).

Why this kernel: on ONNX Runtime 1.32's CPU provider, one thread, batch 1, it was the fastest
layout that is exact on spikes at every 1x1 shape measured (tools/bench_integer.py,
docs/benchmark-log.md "Integer kernels on spike inputs"): 1.2x-3.0x the float Conv. ConvInteger and
MatMulInteger with the weights on the left were 3-4x slower than float; QLinearConv was fast but
requantizes its output to 8 bits (not exact). 3x3 convolutions have no exact integer kernel that
is faster, so they are left as written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from svtprune.graph.io import attribute
from svtprune.spiking.neurons import find_neurons

MS_DOMAIN = "com.microsoft"
# ops that move or select values without changing them: a spike in, a spike out (data inputs)
VALUE_PRESERVING = {
    "Reshape": (0,),
    "Flatten": (0,),
    "Squeeze": (0,),
    "Unsqueeze": (0,),
    "Transpose": (0,),
    "Identity": (0,),
    "Slice": (0,),
    "Gather": (0,),
    "Split": (0,),
    "Expand": (0,),
    "Tile": (0,),
    "MaxPool": (0,),
    "Concat": None,  # every input
}
INTEGER_TYPES = {onnx.TensorProto.INT8: np.int8, onnx.TensorProto.UINT8: np.uint8}


@dataclass
class IntegerLayout:
    """The rewritten model, the weights whose Conv became MatMulIntegerToFloat, and why others did not."""

    model: onnx.ModelProto
    rewritten: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # conv node name -> reason


def spike_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that hold only 0 and 1: neuron spikes, and what value-preserving ops make of them alone."""
    binary = {name for neuron in find_neurons(model) for name in neuron.spikes}
    for node in model.graph.node:  # topological order: producers come first
        positions = VALUE_PRESERVING.get(node.op_type, ())
        data = list(node.input) if positions is None else [node.input[i] for i in positions if i < len(node.input)]
        if data and all(name in binary for name in data):
            binary.update(node.output)
    return binary


def _conv_refusal(node: onnx.NodeProto, weight_shape: list[int]) -> str:
    """Why ``node`` is not a plain 1x1 Conv1d ('' when it is)."""
    if len(weight_shape) != 3 or weight_shape[2] != 1:
        return f"kernel {weight_shape[2:]} is not a 1x1 Conv1d over tokens (no exact integer kernel is faster)"
    plain = {"group": 1, "strides": [1], "dilations": [1], "pads": [0, 0]}
    for name, value in plain.items():
        if attribute(node, name, value) != value:
            return f"{name}={attribute(node, name)!r}"
    if attribute(node, "auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        return "auto_pad pads a 1x1 kernel"
    return ""


def _dequantize_refusal(dq: onnx.NodeProto | None, inits: dict[str, onnx.TensorProto], cout: int) -> str:
    """Why the weight is not int8/uint8 integers dequantized per output channel ('' when it is)."""
    if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
        return "the weight is not DequantizeLinear of stored integers (weight-only quantized)"
    stored = inits[dq.input[0]]
    if stored.data_type not in INTEGER_TYPES:
        name = onnx.TensorProto.DataType.Name(stored.data_type)
        return f"weights stored as {name}: MatMulIntegerToFloat reads 8-bit integers (kept as written)"
    if attribute(dq, "block_size", 0) or attribute(dq, "axis", 1) != 0:
        return "scales are not one per output channel"
    scale = inits.get(dq.input[1])
    if scale is not None and list(scale.dims) not in ([cout], [], [1]):
        return f"scale shape {list(scale.dims)}"
    return ""


def integer_layout(model: onnx.ModelProto) -> IntegerLayout:
    """A copy of ``model`` with each spike-fed, int8-weighted 1x1 Conv1d as MatMulIntegerToFloat."""
    result = IntegerLayout(onnx.ModelProto())
    result.model.CopyFrom(model)
    graph = result.model.graph
    binary = spike_tensors(model)
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "Conv" or node.input[0] not in binary:
            nodes.append(node)
            continue
        dq = producer.get(node.input[1])
        stored = inits.get(dq.input[0]) if dq is not None else None
        shape = list(stored.dims) if stored is not None else []
        reason = _dequantize_refusal(dq, inits, shape[0] if shape else 0) or _conv_refusal(node, shape)
        if reason:
            result.refused[node.name or node.output[0]] = reason
            nodes.append(node)
            continue
        nodes.extend(_integer_nodes(graph, node, dq))
        result.rewritten.append(node.input[1])
    del graph.node[:]
    graph.node.extend(nodes)
    if result.rewritten:
        _drop_unused(graph)
        if all(o.domain != MS_DOMAIN for o in result.model.opset_import):
            result.model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return result


def _integer_nodes(graph: onnx.GraphProto, conv: onnx.NodeProto, dq: onnx.NodeProto) -> list[onnx.NodeProto]:
    """Transpose, uint8 spikes, MatMulIntegerToFloat on the transposed integers, Transpose back."""
    name = conv.input[1]
    stored = next(t for t in graph.initializer if t.name == dq.input[0])
    q = numpy_helper.to_array(stored)[:, :, 0]
    transposed = f"{name}_integer_t"
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(q.T), transposed))
    one = f"{name}_integer_one"
    graph.initializer.append(numpy_helper.from_array(np.array(1.0, np.float32), one))
    zero = dq.input[2] if len(dq.input) > 2 else ""
    bias = conv.input[2] if len(conv.input) > 2 else ""
    tokens, spikes, product = (f"{name}_integer_{part}" for part in ("tokens", "uint8", "product"))
    return [
        helper.make_node("Transpose", [conv.input[0]], [tokens], perm=[0, 2, 1], name=f"{name}_tokens"),
        helper.make_node("Cast", [tokens], [spikes], to=onnx.TensorProto.UINT8, name=f"{name}_spikes"),
        helper.make_node(
            "MatMulIntegerToFloat",
            [spikes, transposed, one, dq.input[1], "", zero, bias],
            [product],
            name=f"{name}_integer",
            domain=MS_DOMAIN,
        ),
        helper.make_node("Transpose", [product], [conv.output[0]], perm=[0, 2, 1], name=f"{name}_channels"),
    ]


def _drop_unused(graph: onnx.GraphProto) -> None:
    """Remove DequantizeLinear nodes and initializers nothing reads any more (the replaced weights)."""
    while True:
        read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "DequantizeLinear" and not set(n.output) & read]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
