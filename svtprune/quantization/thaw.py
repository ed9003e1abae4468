"""Reading a quantized file back: float weights to fine-tune, and the bit widths and grids it was stored with."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from svtprune.graph.taps import piece_of
from svtprune.quantization.load_folding import dequantize_linear_again
from svtprune.quantization.scheme import STORAGE, QuantizedWeight, QuantScheme, quantizable_layers
from svtprune.runtime import make_session


@dataclass
class Thawed:
    """A quantized model with its constant DequantizeLinear/Cast chains folded back to float32."""

    model: onnx.ModelProto
    bits: dict[str, int]  # weight name -> stored bit width
    scheme: QuantScheme
    # weight or int8 side vector name -> the stored integers, scales and zero points
    grids: dict[str, QuantizedWeight]


def thaw(model: onnx.ModelProto) -> Thawed | None:
    """Float weights of a model ``Quantizer.apply`` wrote (None if nothing is quantized).

    Fine-tuning needs float weights; reading the bit widths back lets the result be quantized
    again exactly as it was chosen. The folding runs the constant nodes on ONNX Runtime, which
    already runs the quantized file, so no second dequantization rule is written here. Weights
    dequantized at load (Cast and Mul) are read as the DequantizeLinear they stand for.
    """
    model = dequantize_linear_again(model)
    constants = {t.name: t for t in model.graph.initializer}
    scale_inputs = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    dequantize = [
        n for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in constants and n.output[0] not in scale_inputs
    ]  # fmt: skip
    if not dequantize:
        return None
    folded, values = folded_constants(model, constants)
    out = without_folded(model, folded, values)
    bits, grids, symmetric, block, biases = stored_grids(dequantize, constants, values, out)
    # rounding is not in the file; mse needs no calibration images (a layer without a grid is re-fitted with it)
    coded = any(n.op_type == "DequantizeLinear" and n.output[0] in scale_inputs for n in folded)  # scale codes
    half = any(n.op_type == "Cast" for n in folded)
    scheme = QuantScheme(
        symmetric=symmetric, block_size=block, rounding="mse", half_side=half, scale_codes=coded, int8_biases=biases
    )
    return Thawed(out, bits, scheme, grids)


def folded_constants(
    model: onnx.ModelProto, constants: dict[str, onnx.TensorProto]
) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """The nodes that read only constants, and their outputs computed by ONNX Runtime."""
    folded, known = [], set(constants)  # what Quantizer.apply adds: DequantizeLinear of stored integers
    # and Cast of float16 side vectors and scales (a scale may feed a DequantizeLinear), and the zeros and ones
    # of a BatchNormalization stored as scale and shift
    for node in model.graph.node:
        is_cast = node.op_type == "Cast" and node.attribute[0].i == onnx.TensorProto.FLOAT
        if (node.op_type in ("DequantizeLinear", "ConstantOfShape") or is_cast) and set(node.input) <= known:
            folded.append(node)
            known.add(node.output[0])
    needed = {name for n in folded for name in n.input} & set(constants)
    probe = piece_of(model, folded, {}, [n.output[0] for n in folded], [t for n, t in constants.items() if n in needed])
    session = make_session(probe, env_threads=False)
    return folded, dict(zip([n.output[0] for n in folded], session.run(None, {}), strict=True))


def without_folded(
    model: onnx.ModelProto, folded: list[onnx.NodeProto], values: dict[str, np.ndarray]
) -> onnx.ModelProto:
    """A copy of ``model`` with the folded nodes replaced by their float32 outputs."""
    used = {name for n in model.graph.node if n not in folded for name in n.input}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(n for n in model.graph.node if n not in folded)
    kept = [t for t in model.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    outputs = {o.name for o in model.graph.output}
    out.graph.initializer.extend(
        kept + [numpy_helper.from_array(v.astype(np.float32), k) for k, v in values.items() if k in used | outputs]
    )  # scales and zero points only fed the folded nodes: they go with them
    return out


def stored_grids(
    dequantize: list[onnx.NodeProto],
    constants: dict[str, onnx.TensorProto],
    values: dict[str, np.ndarray],
    thawed: onnx.ModelProto,
) -> tuple[dict[str, int], dict[str, QuantizedWeight], bool, int, bool]:
    """Bits and grids per weight (and int8 side vector), and the scheme's symmetry, block size and side int8."""
    widths = {v: k for k, (signed, unsigned, _) in STORAGE.items() for v in (signed, unsigned)}
    weights = {layer.name for layer in quantizable_layers(thawed)}
    bits, grids, symmetric, block, int8_biases = {}, {}, True, 0, False
    for node in dequantize:
        stored = numpy_helper.to_array(constants[node.input[0]])
        width = widths[stored.dtype.type]
        if node.output[0] not in weights:  # an int8 side vector: its grid, so fine-tuning keeps it
            scale = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
            grids[node.output[0]] = QuantizedWeight(stored.astype(np.int16), scale, None, 0, 0, width)
            int8_biases = True
            continue
        bits[node.output[0]] = width
        symmetric = symmetric and len(node.input) < 3
        node_block = next((a.i for a in node.attribute if a.name == "block_size"), 0)
        block = node_block or block
        known_value = {**{k: numpy_helper.to_array(t) for k, t in constants.items() if k in node.input}, **values}
        zero = known_value[node.input[2]].astype(np.float32) if len(node.input) > 2 and node.input[2] else None
        grids[node.output[0]] = QuantizedWeight(
            stored.astype(np.int16), known_value[node.input[1]].astype(np.float32), zero,
            next((a.i for a in node.attribute if a.name == "axis"), 1), node_block, width,
        )  # fmt: skip
    return bits, grids, symmetric, block, int8_biases
