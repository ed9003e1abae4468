"""What a quantized weight is: the bit widths and their ONNX storage types, the scheme, the layers."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, version_converter

from svtprune.errors import UserError

BITS = (8, 4, 2)
FP32 = 32  # "not quantized" in a bit-width setting
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
STORAGE = {  # bits -> (signed numpy type, unsigned numpy type, lowest opset that runs it)
    8: (np.int8, np.uint8, 21),
    4: (ml_dtypes.int4, ml_dtypes.uint4, 21),
    2: (ml_dtypes.int2, ml_dtypes.uint2, 25),
}
ROUNDINGS = ("nearest", "mse", "gptq")


@dataclass(frozen=True)
class QuantScheme:
    """How a weight is turned into integers (the bit width is chosen per layer by the search)."""

    symmetric: bool = True
    block_size: int = 0  # 0: one scale per output channel; n: blocks of n along the input axis
    # "nearest" (full range), "mse" (per-channel clipping that minimises weight error) or "gptq" (mse's
    # scales, then error-feedback rounding that minimises the layer's output error on calibration inputs)
    rounding: str = "mse"
    # scales and the other float vectors (biases, normalisation) stored as float16 + Cast: once weights
    # take 2-4 bits, these fp32 vectors are a tenth of what is left of the file
    half_side: bool = True
    # scales stored as uint8 codes times one power-of-two step per layer (a DequantizeLinear of their own),
    # the integers then rounded on the coded grid: one byte per output channel instead of two
    scale_codes: bool = False
    # a layer's bias (and the scale and shift of a BatchNormalization right after it) stored as int8 with one
    # float32 scale (a DequantizeLinear of its own) instead of float16 once the layer's weight takes
    # SIDE_INT8_WIDTH bits or fewer: at 2 bits these vectors are ~6% of the file
    int8_biases: bool = False

    def __post_init__(self) -> None:
        if self.rounding not in ROUNDINGS:
            raise UserError(f"unknown rounding {self.rounding!r}; choose {', '.join(ROUNDINGS)}")
        if self.block_size < 0 or (self.block_size and self.block_size < 2):
            raise UserError("--block-size must be 0 (per channel) or >= 2")


@dataclass(frozen=True)
class Layer:
    """One quantizable weight: an initializer read as the weight of Conv/Gemm/MatMul nodes."""

    name: str  # the initializer's name
    shape: tuple[int, ...]
    out_axis: int  # the axis of output channels (one scale each)
    in_axis: int  # the axis blocks run along
    op_type: str = "Conv"

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class QuantizedWeight:
    values: np.ndarray  # integers (int16 container: uint8 values reach 255) in the storage range
    scale: np.ndarray  # float32, broadcastable to the weight after block expansion
    zero_point: np.ndarray | None  # same shape as scale, or None when symmetric
    axis: int
    block_size: int
    bits: int


def quantizable_layers(model: onnx.ModelProto) -> list[Layer]:
    """Weights worth quantizing, in graph order; biases and normalisation stay float."""
    inits = {t.name: t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    layers: dict[str, Layer] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        tensor = inits[node.input[1]]
        shape = tuple(tensor.dims)
        if len(shape) < 2 or node.input[1] in layers:
            continue
        if node.op_type == "MatMul":
            out_axis, in_axis = len(shape) - 1, len(shape) - 2
        elif node.op_type == "Gemm":
            trans_b = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
            out_axis, in_axis = (0, 1) if trans_b else (1, 0)
        elif node.op_type == "ConvTranspose":
            out_axis, in_axis = 1, 0
        else:
            out_axis, in_axis = 0, 1
        layers[node.input[1]] = Layer(node.input[1], shape, out_axis, in_axis, node.op_type)
    return list(layers.values())


def levels(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def required_opset(bits: dict[str, int]) -> int:
    used = [b for b in bits.values() if b != FP32]
    return max((STORAGE[b][2] for b in used), default=0)


def with_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """Raise the default-domain opset so DequantizeLinear accepts the low-bit types."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if current >= opset:
        return model
    try:
        return version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter lacks adapters for some graphs: say which
        reason = str(exc).splitlines()[0]
        raise UserError(f"cannot raise the model's opset from {current} to {opset}: {reason}") from exc
