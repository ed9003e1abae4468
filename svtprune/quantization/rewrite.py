"""The graph rewrite: per-layer bit widths applied to a model as low-bit initializers and DequantizeLinear."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from svtprune.errors import UserError
from svtprune.quantization.fitting import coded_scales, quantize_weight
from svtprune.quantization.gptq import layer_hessians
from svtprune.quantization.grid import on_grid
from svtprune.quantization.scheme import (
    BITS,
    FP32,
    STORAGE,
    Layer,
    QuantizedWeight,
    QuantScheme,
    quantizable_layers,
    required_opset,
    with_opset,
)
from svtprune.quantization.side_vectors import (
    SIDE_INT8_WIDTH,
    batchnorm_as_scale_and_shift,
    layer_biases,
    side_vector_int8,
    side_vector_names,
    stored_half,
    stored_int8,
)


class Quantizer:
    """Applies per-layer bit widths to one model; quantized tensors are cached per (layer, bits).

    ``calib`` (input images) is needed by ``rounding="gptq"``: each layer's XᵀX is taken from
    this model's own float layer inputs on them, once, and kept for every later setting.
    ``grids`` (from ``thaw``) fix a layer's scales and zero points at the width it was stored
    at: weights fine-tuned on that grid are then stored exactly as they were trained.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        scheme: QuantScheme | None = None,
        calib: np.ndarray | None = None,
        grids: dict[str, QuantizedWeight] | None = None,
    ) -> None:
        self.model = model
        self.scheme = scheme or QuantScheme()
        self.layers = quantizable_layers(model)
        if not self.layers:
            raise UserError("the model has no Conv/Gemm/MatMul weight stored as a float initializer to quantize")
        if self.scheme.rounding == "gptq" and (calib is None or len(calib) == 0):
            raise UserError(
                "rounding gptq needs calibration images (the layers' inputs on them); pass calib=, "
                "or choose rounding mse or nearest"
            )
        self.calib = calib
        self.by_name = {layer.name: layer for layer in self.layers}
        self._weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in self.by_name}
        self._cache: dict[tuple[str, int], QuantizedWeight] = {}
        self._at_opset: dict[int, onnx.ModelProto] = {}
        self._hessians: dict[str, np.ndarray | None] | None = None
        self.grids = grids or {}

    def lowest_bits(self, layer: Layer) -> int:
        """ONNX Runtime 1.32 fuses DequantizeLinear -> MatMul into MatMulNBits when the scales are initializers,
        and computes 2-bit weights wrongly there (docs/benchmark-log.md, issue 6); scale codes are computed, not
        fused."""
        return 4 if layer.op_type == "MatMul" and not self.scheme.scale_codes else min(BITS)

    def quantized(self, name: str, bits: int) -> QuantizedWeight:
        key = (name, bits)
        grid = self.grids.get(name)
        if grid is not None and grid.bits == bits:
            return on_grid(self._weights[name], grid)
        if key not in self._cache:
            hessian = self.hessians()[name] if self.scheme.rounding == "gptq" else None
            self._cache[key] = quantize_weight(self._weights[name], self.by_name[name], bits, self.scheme, hessian)
        return self._cache[key]

    def side_quantized(self, name: str, value: np.ndarray) -> QuantizedWeight:
        """A side vector at int8 on its stored grid (fine-tuned), else on a fresh full-range one."""
        grid = self.grids.get(name)
        return on_grid(value, grid) if grid is not None else side_vector_int8(value)

    def release(self) -> None:
        """Drop the search's caches (the quantized weights and model copies it built); the report reads the XᵀX."""
        self._cache.clear()
        self._at_opset.clear()

    def hessians(self) -> dict[str, np.ndarray | None]:
        """Layer -> XᵀX of its inputs on ``calib`` (None where the inputs cannot be laid out as features)."""
        if self._hessians is None:
            self._hessians = layer_hessians(self.model, self.layers, self._weights, self.calib)
        return self._hessians

    def apply(self, bits: dict[str, int]) -> onnx.ModelProto:
        """A copy of the model with each named weight stored at its bit width (32 = unchanged)."""
        unknown = set(bits) - set(self.by_name)
        if unknown:
            raise UserError(f"not a quantizable weight: {', '.join(sorted(unknown))}")
        chosen = {name: b for name, b in bits.items() if b != FP32}
        bad = {b for b in chosen.values() if b not in STORAGE}
        if bad:
            raise UserError(f"unsupported bit width {sorted(bad)}; choose from {', '.join(map(str, BITS))} (or 32)")
        opset = required_opset(chosen)
        if opset not in self._at_opset:
            self._at_opset[opset] = with_opset(self.model, opset)
        model = onnx.ModelProto()
        model.CopyFrom(self._at_opset[opset])
        kept = [t for t in model.graph.initializer if t.name not in chosen]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        nodes = []
        for name, width in chosen.items():
            nodes.extend(self._dequantize_nodes(model, name, width))
        if chosen and (self.scheme.half_side or self.scheme.int8_biases):
            nodes.extend(batchnorm_as_scale_and_shift(model))
            side = set(side_vector_names(model, self.by_name)) & {t.name for t in kept}  # not the new scales
            owners = layer_biases(model, self.by_name) if self.scheme.int8_biases else {}
            for tensor in list(model.graph.initializer):
                if tensor.name not in side:
                    continue
                value = numpy_helper.to_array(tensor)
                if chosen.get(owners.get(tensor.name, ""), FP32) <= SIDE_INT8_WIDTH:
                    nodes.append(stored_int8(model, tensor.name, self.side_quantized(tensor.name, value)))
                elif self.scheme.half_side:
                    nodes.append(stored_half(model, tensor.name, value))
        old = list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(nodes + old)  # DequantizeLinear reads only initializers: first is topological
        return model

    def _dequantize_nodes(self, model: onnx.ModelProto, name: str, bits: int) -> list[onnx.NodeProto]:
        q = self.quantized(name, bits)
        signed, unsigned, _ = STORAGE[bits]
        storage = signed if q.zero_point is None else unsigned
        inputs = [f"{name}_quantized", f"{name}_scale"]
        model.graph.initializer.append(numpy_helper.from_array(q.values.astype(storage), inputs[0]))
        nodes = []
        if self.scheme.scale_codes:
            codes, step = coded_scales(q.scale)
            model.graph.initializer.append(numpy_helper.from_array(codes, f"{name}_scale_codes"))
            model.graph.initializer.append(numpy_helper.from_array(np.array(step), f"{name}_scale_step"))
            nodes.append(
                helper.make_node(
                    "DequantizeLinear",
                    [f"{name}_scale_codes", f"{name}_scale_step"],
                    [inputs[1]],
                    name=f"{name}_scale_dequantize",
                )  # fmt: skip
            )
        elif self.scheme.half_side:
            nodes.append(stored_half(model, inputs[1], q.scale))
        else:
            model.graph.initializer.append(numpy_helper.from_array(q.scale, inputs[1]))
        if q.zero_point is not None:
            inputs.append(f"{name}_zero_point")
            model.graph.initializer.append(numpy_helper.from_array(q.zero_point.astype(storage), inputs[2]))
        attributes = {"axis": q.axis}
        if q.block_size:
            attributes["block_size"] = q.block_size
        nodes.append(helper.make_node("DequantizeLinear", inputs, [name], name=f"{name}_dequantize", **attributes))
        return nodes
