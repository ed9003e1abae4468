"""Where a quantized file's bytes are: stored bytes by role, bits per layer."""

from __future__ import annotations

import onnx

from svtprune.graph.io import tensor_bytes
from svtprune.quantization.load_folding import dequantize_linear_again
from svtprune.quantization.rewrite import Quantizer
from svtprune.quantization.scheme import FP32, WEIGHTED_OPS
from svtprune.quantization.side_vectors import side_vector_names


def stored_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """The file's parameter bytes by role: the layers' weights, their scales and zero points, biases and
    normalisation vectors, and the rest (shape constants, neuron thresholds): where what is left of a
    quantized model lives."""
    model = dequantize_linear_again(model)  # weights dequantized at load are stored as DequantizeLinear's are
    constants = {t.name: t for t in model.graph.initializer}
    weight_inputs = {n.input[1] for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1}
    integer = [n for n in model.graph.node if n.op_type == "MatMulIntegerToFloat"]  # the integer layout
    weight_inputs |= {n.input[1] for n in integer}
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    scale_outputs = {name for n in dequantize for name in n.input[1:]}
    roles: dict[str, str] = {name: "scales" for n in integer for name in n.input[2:6] if name}
    for node in dequantize:  # stored integers -> weight, scale (codes) or side vector; scales and zero points
        role = "weights" if node.output[0] in weight_inputs else "scales" if node.output[0] in scale_outputs else ""
        roles[node.input[0]] = role or "biases and normalisation"
        roles.update({name: "scales" for name in node.input[1:] if name})
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in constants:  # float16 copies
            roles.setdefault(node.input[0], "scales" if node.output[0] in scale_outputs else "biases and normalisation")
    side = set(side_vector_names(model))
    totals = dict.fromkeys(("weights", "scales", "biases and normalisation", "other"), 0)
    for name, tensor in constants.items():
        role = roles.get(name) or (
            "weights" if name in weight_inputs and len(tensor.dims) > 1
            else "biases and normalisation" if name in side else "other"
        )  # fmt: skip
        totals[role] += tensor_bytes(tensor)
    return totals


def bits_table(quantizer: Quantizer, bits: dict[str, int]) -> list[dict]:
    """Per layer: parameters, bit width, stored bytes (for reports)."""
    rows = []
    for layer in quantizer.layers:
        width = bits.get(layer.name, FP32)
        rows.append(
            {
                "layer": layer.name,
                "shape": list(layer.shape),
                "params": layer.size,
                "bits": width,
                "weight_bytes": (layer.size * width + 7) // 8,
            }
        )
    return rows
