"""Weight-only quantization to standard ONNX: low-bit initializers feeding ``DequantizeLinear``.

The weight tensor keeps its name as the output of the DequantizeLinear node, so every other
tensor of the graph (membranes, spikes) keeps its name too: the drift probe can compare an
original and a quantized model tensor by tensor. Stored types are the real low-bit ONNX types
(int8, int4 at opset 21, int2 at opset 25), so the saved file shrinks by the bit width.

The package is named for the technique; ``svtprune.jobs.quantize`` is the command that uses it.
Its modules, in the order a weight passes through them: ``scheme`` (bit widths, storage types,
layers), ``fitting`` (choosing a grid), ``gptq`` (error-feedback rounding), ``grid`` (integers
to floats), ``side_vectors`` (biases and normalisation), ``rewrite`` (the graph), ``accounting``
(bytes by role), ``thaw`` (reading a quantized file back).
"""

from svtprune.quantization.accounting import bits_table, stored_bytes
from svtprune.quantization.fitting import CLIP_GRID, SCALE_CODE_MAX, coded_scales, quantize_weight
from svtprune.quantization.gptq import GPTQ_CHUNK, GPTQ_DAMPING, gptq_factor, layer_hessians
from svtprune.quantization.grid import dequantize, grid_bounds, on_grid
from svtprune.quantization.rewrite import Quantizer
from svtprune.quantization.scheme import (
    BITS,
    FP32,
    ROUNDINGS,
    WEIGHTED_OPS,
    Layer,
    QuantizedWeight,
    QuantScheme,
    quantizable_layers,
    required_opset,
    with_opset,
)
from svtprune.quantization.side_vectors import (
    SHAPE_ONLY,
    SIDE_INT8_WIDTH,
    SIDE_VECTOR_MIN_SIZE,
    batchnorm_as_scale_and_shift,
    layer_biases,
    side_vector_int8,
    side_vector_names,
)
from svtprune.quantization.thaw import Thawed, thaw

__all__ = [
    "BITS", "CLIP_GRID", "FP32", "GPTQ_CHUNK", "GPTQ_DAMPING", "ROUNDINGS", "SCALE_CODE_MAX", "SHAPE_ONLY",
    "SIDE_INT8_WIDTH", "SIDE_VECTOR_MIN_SIZE", "WEIGHTED_OPS", "Layer", "QuantScheme", "QuantizedWeight",
    "Quantizer", "Thawed", "batchnorm_as_scale_and_shift", "bits_table", "coded_scales", "dequantize",
    "gptq_factor", "grid_bounds", "layer_biases", "layer_hessians", "on_grid", "quantizable_layers",
    "quantize_weight", "required_opset", "side_vector_int8", "side_vector_names", "stored_bytes", "thaw",
    "with_opset",
]  # fmt: skip
