"""Weight-only quantization to standard ONNX: low-bit initializers feeding ``DequantizeLinear``.

The weight tensor keeps its name as the output of the DequantizeLinear node, so every other
tensor of the graph (membranes, spikes) keeps its name too: the drift probe can compare an
original and a quantized model tensor by tensor. Stored types are the real low-bit ONNX types
(int8, int4 at opset 21, int2 at opset 25), so the saved file shrinks by the bit width.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from svtprune.errors import UserError
from svtprune.graph.io import tensor_bytes

BITS = (8, 4, 2)
FP32 = 32  # "not quantized" in a bit-width setting
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
_STORAGE = {  # bits -> (signed numpy type, unsigned numpy type, lowest opset that runs it)
    8: (np.int8, np.uint8, 21),
    4: (ml_dtypes.int4, ml_dtypes.uint4, 21),
    2: (ml_dtypes.int2, ml_dtypes.uint2, 25),
}
CLIP_GRID = np.linspace(0.30, 1.0, 36)  # fractions of the full range tried by the MSE clipping search
ROUNDINGS = ("nearest", "mse", "gptq")
# gptq: damping added to H's diagonal, as a fraction of its mean (the GPTQ paper's 1%): keeps the inverse
# finite when inputs are collinear or dead (spike inputs often are)
GPTQ_DAMPING = 0.01
GPTQ_CHUNK = 32  # calibration images tapped per pass: bounds the memory of im2col patches


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
    side_int8: bool = False

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


def _levels(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def _grouped(weight: np.ndarray, layer: Layer, block_size: int) -> np.ndarray:
    """Rows = one scale each (an output channel, or a block of one), columns = the values it covers."""
    moved = np.moveaxis(weight, layer.out_axis, 0)
    if not block_size:
        return moved.reshape(moved.shape[0], -1)
    # blocks along the input axis: (out, in, rest) -> (out, block, rest, in-block) -> one row each
    moved = np.moveaxis(weight, (layer.out_axis, layer.in_axis), (0, 1))
    channels = moved.shape[1]
    padded = -(-channels // block_size) * block_size
    pad = [(0, 0)] * moved.ndim
    pad[1] = (0, padded - channels)
    blocks = np.pad(moved, pad, constant_values=np.nan).reshape(moved.shape[0], padded // block_size, block_size, -1)
    return np.moveaxis(blocks, 2, -1).reshape(-1, block_size)


def _fit_rows(rows: np.ndarray, bits: int, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale, zero point and integers per row; with "mse", the clipping fraction with least squared error."""
    low, high = _levels(bits, scheme.symmetric)
    valid = ~np.isnan(rows)
    safe = np.where(valid, rows, 0.0)
    fractions = CLIP_GRID if scheme.rounding == "mse" else np.array([1.0])
    best_err = np.full(rows.shape[0], np.inf)
    best = (np.ones(rows.shape[0]), np.zeros(rows.shape[0]), np.zeros_like(safe))
    for fraction in fractions:
        if scheme.symmetric:
            reach = np.abs(safe).max(axis=1) * fraction
            scale = np.where(reach > 0, reach / high, 1.0)
            zero = np.zeros_like(scale)
        else:
            lo = np.minimum(np.where(valid, rows, np.inf).min(axis=1), 0.0) * fraction
            hi = np.maximum(np.where(valid, rows, -np.inf).max(axis=1), 0.0) * fraction
            scale = np.where(hi > lo, (hi - lo) / (high - low), 1.0)
            zero = np.clip(np.round(low - lo / scale), low, high)
        stored = np.float16 if scheme.half_side else np.float32  # a row too small for float16 keeps its least step
        scale = np.maximum(scale.astype(stored).astype(np.float32), np.finfo(stored).smallest_subnormal)
        q = np.clip(np.round(safe / scale[:, None]) + zero[:, None], low, high)
        err = (((q - zero[:, None]) * scale[:, None] - safe) ** 2 * valid).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        pick = (better, better, better[:, None])
        best = tuple(np.where(p, new, old) for p, new, old in zip(pick, (scale, zero, q), best, strict=True))
    return best[0].astype(np.float32), best[1], best[2]


SCALE_CODE_MAX = 255  # uint8 scale codes; 0 is never used (a zero scale would erase a channel)


def coded_scales(scale: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """uint8 codes and one power-of-two step with codes x step ~ scale.

    A power of two makes codes x step exact in float32 and the coding idempotent (coding coded
    scales again gives the same codes and step), so a fine-tuned model is stored on the same grid.
    """
    top = float(np.max(scale))
    step = np.float32(2.0 ** np.ceil(np.log2(top / SCALE_CODE_MAX))) if top > 0 else np.float32(1.0)
    return np.clip(np.round(scale / step), 1, SCALE_CODE_MAX).astype(np.uint8), step


def quantize_weight(
    weight: np.ndarray, layer: Layer, bits: int, scheme: QuantScheme, hessian: np.ndarray | None = None
) -> QuantizedWeight:
    """Integers + scales for one weight tensor, laid out the way DequantizeLinear reads them.

    With ``rounding="gptq"``, ``hessian`` is XᵀX of the layer's inputs (features ordered as the
    weight's non-output axes flatten); without one the mse result is returned unchanged, which
    is what gptq gives for uncorrelated inputs anyway.
    """
    if scheme.rounding == "gptq":
        fitted = quantize_weight(weight, layer, bits, replace(scheme, rounding="mse"))
        return fitted if hessian is None else _gptq(weight, layer, bits, scheme, fitted, hessian)
    fitted = _fitted(weight, layer, bits, scheme)
    if not scheme.scale_codes:
        return fitted
    codes, step = coded_scales(fitted.scale)
    return on_grid(weight, replace(fitted, scale=codes.astype(np.float32) * step))


def _fitted(weight: np.ndarray, layer: Layer, bits: int, scheme: QuantScheme) -> QuantizedWeight:
    rows = _grouped(weight.astype(np.float32), layer, scheme.block_size)
    scale, zero, q = _fit_rows(rows, bits, scheme)
    if not scheme.block_size:
        values = np.moveaxis(q.reshape(np.moveaxis(weight, layer.out_axis, 0).shape), 0, layer.out_axis)
        zero_point = None if scheme.symmetric else zero
        return QuantizedWeight(values.astype(np.int16), scale, zero_point, layer.out_axis, 0, bits)
    # undo _grouped's block layout; scales become (out, blocks, rest) moved back to the weight's axes
    moved_shape = np.moveaxis(weight, (layer.out_axis, layer.in_axis), (0, 1)).shape
    blocks = -(-moved_shape[1] // scheme.block_size)
    rest = moved_shape[2:]
    q = q.reshape(moved_shape[0], blocks, int(np.prod(rest)), scheme.block_size)
    q = np.moveaxis(q, -1, 2).reshape(moved_shape[0], blocks * scheme.block_size, *rest)[:, : moved_shape[1]]
    values = np.moveaxis(q, (0, 1), (layer.out_axis, layer.in_axis))

    def per_block(a: np.ndarray) -> np.ndarray:
        return np.moveaxis(a.reshape(moved_shape[0], blocks, *rest), (0, 1), (layer.out_axis, layer.in_axis))

    zero_point = None if scheme.symmetric else per_block(zero)
    return QuantizedWeight(
        values.astype(np.int16), per_block(scale).astype(np.float32), zero_point, layer.in_axis, scheme.block_size, bits
    )


def _gptq(
    weight: np.ndarray, layer: Layer, bits: int, scheme: QuantScheme, fitted: QuantizedWeight, hessian: np.ndarray
) -> QuantizedWeight:
    """GPTQ error feedback on the mse fit's grid: same scales and zero points, other integers.

    Columns (input features) are rounded one at a time in order; each column's rounding error
    is spread over the columns not yet rounded through the upper Cholesky factor of H⁻¹, so the
    layer's output XWᵀ, not the weight itself, stays as close as the grid allows.
    """
    out = layer.shape[layer.out_axis]

    def matrix(a: np.ndarray) -> np.ndarray:  # (out, features): features in the order H is built in
        return np.moveaxis(np.broadcast_to(a, layer.shape), layer.out_axis, 0).reshape(out, -1).astype(np.float64)

    w = matrix(weight)
    scale_full, zero_full = _expanded(fitted)
    scale, zero = matrix(scale_full), matrix(zero_full)
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"{layer.name}: Hessian {hessian.shape} does not match {w.shape[1]} input features")
    low, high = _levels(bits, scheme.symmetric)
    upper = gptq_factor(hessian)
    q = np.empty_like(w)
    for j in range(w.shape[1]):
        q[:, j] = np.clip(np.round(w[:, j] / scale[:, j]) + zero[:, j], low, high)
        error = (w[:, j] - (q[:, j] - zero[:, j]) * scale[:, j]) / upper[j, j]
        w[:, j + 1 :] -= np.outer(error, upper[j, j + 1 :])
    values = np.moveaxis(q.reshape(np.moveaxis(weight, layer.out_axis, 0).shape), 0, layer.out_axis)
    return replace(fitted, values=values.astype(np.int16))


def gptq_factor(hessian: np.ndarray) -> np.ndarray:
    """Upper U with UᵀU = (H + damping)⁻¹; dead inputs (zero diagonal) get a unit diagonal instead."""
    h = np.array(hessian, dtype=np.float64)
    diagonal = np.diag(h).copy()
    dead = diagonal <= 0
    h[dead, dead] = 1.0  # an input never seen on calibration: rounded to nearest, no feedback through it
    h[np.diag_indices_from(h)] += GPTQ_DAMPING * max(float(np.mean(np.diag(h))), 1e-12)
    return np.linalg.cholesky(np.linalg.inv(h)).T


def _expanded(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point broadcast to the weight's shape (blocks repeated and cropped)."""
    scale, zero = q.scale, q.zero_point if q.zero_point is not None else np.zeros_like(q.scale)
    if q.block_size:
        scale = np.repeat(scale, q.block_size, axis=q.axis)[_crop(q)]
        zero = np.repeat(zero, q.block_size, axis=q.axis)[_crop(q)]
    else:
        shape = [1] * q.values.ndim
        shape[q.axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale.astype(np.float32), zero.astype(np.float32)


def grid_bounds(grid: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Scale and zero point at the weight's shape, and the integer range: what a fine-tuned weight rounds to."""
    scale, zero = _expanded(grid)
    return (scale, zero, *_levels(grid.bits, grid.zero_point is None))


def on_grid(weight: np.ndarray, grid: QuantizedWeight) -> QuantizedWeight:
    """``weight`` rounded to nearest on ``grid``'s scales and zero points (a fine-tuned layer's integers)."""
    scale, zero, low, high = grid_bounds(grid)
    q = np.clip(np.round(weight.astype(np.float32) / scale) + zero, low, high)
    return replace(grid, values=q.astype(np.int16))


def dequantize(q: QuantizedWeight) -> np.ndarray:
    """What DequantizeLinear computes, for reports and the drift of a single layer."""
    scale, zero = _expanded(q)
    return ((q.values.astype(np.float32) - zero) * scale).astype(np.float32)


def _crop(q: QuantizedWeight) -> tuple[slice, ...]:
    index = [slice(None)] * q.values.ndim
    index[q.axis] = slice(0, q.values.shape[q.axis])
    return tuple(index)


def required_opset(bits: dict[str, int]) -> int:
    used = [b for b in bits.values() if b != FP32]
    return max((_STORAGE[b][2] for b in used), default=0)


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
        and computes 2-bit weights wrongly there (BENCHMARKS.md, issue 6); scale codes are computed, not fused."""
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
        bad = {b for b in chosen.values() if b not in _STORAGE}
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
        if chosen and (self.scheme.half_side or self.scheme.side_int8):
            nodes.extend(batchnorm_as_scale_and_shift(model))
            side = set(side_vector_names(model, self.by_name)) & {t.name for t in kept}  # not the new scales
            owners = layer_biases(model, self.by_name) if self.scheme.side_int8 else {}
            for tensor in list(model.graph.initializer):
                if tensor.name not in side:
                    continue
                value = numpy_helper.to_array(tensor)
                if chosen.get(owners.get(tensor.name, ""), FP32) <= SIDE_INT8_WIDTH:
                    nodes.append(_stored_int8(model, tensor.name, self.side_quantized(tensor.name, value)))
                elif self.scheme.half_side:
                    nodes.append(_stored_half(model, tensor.name, value))
        old = list(model.graph.node)
        del model.graph.node[:]
        model.graph.node.extend(nodes + old)  # DequantizeLinear reads only initializers: first is topological
        return model

    def _dequantize_nodes(self, model: onnx.ModelProto, name: str, bits: int) -> list[onnx.NodeProto]:
        q = self.quantized(name, bits)
        signed, unsigned, _ = _STORAGE[bits]
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
            nodes.append(_stored_half(model, inputs[1], q.scale))
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


def _features(node: onnx.NodeProto, weight: np.ndarray, value: np.ndarray) -> np.ndarray | None:
    """One row per (sample, position), features ordered as the weight's input axes flatten; None if unsupported."""
    from svtprune.recover.features import conv_geometry, patches, rows

    if node.op_type == "Conv":
        geometry = conv_geometry(node, weight)  # stride 1, one group: patches are the layer's exact inputs
        return None if geometry is None else patches(value, *geometry)
    if weight.ndim != 2:
        return None
    if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
        value = value.T
    return rows(value, node.op_type) if node.op_type in ("MatMul", "Gemm") else None


def layer_hessians(
    model: onnx.ModelProto, layers: list[Layer], weights: dict[str, np.ndarray], calib: np.ndarray
) -> dict[str, np.ndarray | None]:
    """XᵀX per layer from the float model's own layer inputs on ``calib``, summed over the nodes sharing a weight.

    All inputs are tapped in one run per chunk of images; layers whose inputs cannot be laid
    out as features (strided/grouped convolutions, ConvTranspose, batched MatMul) get None.
    """
    from svtprune.runtime import tap

    names = {layer.name for layer in layers}
    users = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in names]
    hessians: dict[str, np.ndarray | None] = {layer.name: None for layer in layers}
    unsupported: set[str] = set()
    for start in range(0, len(calib), GPTQ_CHUNK):
        values = tap(model, sorted({n.input[0] for n in users}), calib[start : start + GPTQ_CHUNK])
        for node in users:
            name = node.input[1]
            if name in unsupported:
                continue
            features = _features(node, weights[name], values[node.input[0]])
            if features is None:
                unsupported.add(name)
                continue
            features = features.astype(np.float64)
            gram = features.T @ features
            hessians[name] = gram if hessians[name] is None else hessians[name] + gram
    return {name: None if name in unsupported else h for name, h in hessians.items()}


SIDE_VECTOR_MIN_SIZE = 16  # scalars (thresholds, decay constants) stay float32: neurons are found by them
# a bias goes int8 with its layer at this width or below: the weight's own rounding error then dwarfs the
# bias's; at 8 bits a spiking model on the edge of its thresholds can feel it (a random-initialised test
# Spikformer lost 3-6 points of agreement per int8 bias with every weight still float)
SIDE_INT8_WIDTH = 4


def side_vector_names(model: onnx.ModelProto, weights: dict | None = None) -> list[str]:
    """Float initializers stored as float16 once any layer is quantized (biases, normalisation)."""
    weights = weights if weights is not None else {layer.name for layer in quantizable_layers(model)}
    return [
        t.name
        for t in model.graph.initializer
        if t.data_type == onnx.TensorProto.FLOAT
        and t.name not in weights
        and (int(np.prod(t.dims)) if t.dims else 1) >= SIDE_VECTOR_MIN_SIZE
    ]


SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")  # keep each channel's values together


def layer_biases(model: onnx.ModelProto, weights: dict | set) -> dict[str, str]:
    """Per-channel vector -> the quantizable weight whose output it offsets or scales: a Conv/Gemm's third
    input, the initializer of an Add right after a MatMul, and the scale and shift of a BatchNormalization
    stored as two vectors (``batchnorm_as_scale_and_shift``) fed by a Conv through shape-only nodes. A
    BatchNormalization still holding its variance has no owner: at int8 the variance would be a whole
    step off wherever it is small."""
    constants = {t.name for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]
    after_matmul = {n.output[0]: n.input[1] for n in matmuls}
    owners = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "ConvTranspose", "Gemm") and len(node.input) > 2 and node.input[1] in weights:
            owners[node.input[2]] = node.input[1]
        elif node.op_type == "Add" and len(node.input) == 2:
            for mine, other in (node.input, node.input[::-1]):
                if mine in constants and other in after_matmul:
                    owners[mine] = after_matmul[other]
        elif node.op_type == "BatchNormalization" and not set(node.input[3:5]) & constants:
            source = producer.get(node.input[0])
            while source is not None and source.op_type in SHAPE_ONLY:
                source = producer.get(source.input[0])
            if source is not None and source.op_type == "Conv" and source.input[1] in weights:
                owners.update(dict.fromkeys(node.input[1:3], source.input[1]))
    return {bias: weight for bias, weight in owners.items() if bias in constants}


def batchnorm_as_scale_and_shift(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Store each inference BatchNormalization's four vectors as two: its scale and shift, with a mean of
    zeros and a variance of ones generated by ``ConstantOfShape`` (no bytes; ORT folds them at load).

    The SDT keeps its BatchNormalizations after a Reshape, where no Conv fusion reaches them: their
    vectors were a fifth of its 2-bit file. The output changes by float32 rounding only; a node
    already in this form (a thawed file) keeps its values, so storing it again gives the same bytes.
    Returns the generating nodes, which read only initializers (the caller puts them first).
    """
    values = {t.name: t for t in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    added: list[onnx.NodeProto] = []
    for node in model.graph.node:
        params = list(node.input[1:5])
        if (
            node.op_type != "BatchNormalization" or len(node.output) != 1 or len(params) != 4
            or not all(name in values and uses[name] == 1 for name in params)
            or any(a.name == "training_mode" and a.i for a in node.attribute)
        ):  # fmt: skip
            continue
        scale, shift, mean, var = (numpy_helper.to_array(values[name]).astype(np.float64) for name in params)
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        if not (np.all(mean == 0) and np.all(var == 1)):
            factor = scale / np.sqrt(var + epsilon)
            scale, shift = factor * np.sqrt(1 + epsilon), shift - mean * factor
        channels = f"batchnorm_channels_{len(scale)}"
        if channels not in values:
            values[channels] = numpy_helper.from_array(np.array([len(scale)], np.int64), channels)
            model.graph.initializer.append(values[channels])
        for name, value in zip(params[:2], (scale, shift), strict=True):
            _replace_initializer(model, name, [numpy_helper.from_array(value.astype(np.float32), name)])
        for name, fill in zip(params[2:], (0.0, 1.0), strict=True):
            _replace_initializer(model, name, [])
            filled = numpy_helper.from_array(np.array([fill], np.float32))
            added.append(helper.make_node("ConstantOfShape", [channels], [name], name=f"{name}_fill", value=filled))
    return added


def _replace_initializer(model: onnx.ModelProto, name: str, stored: list[onnx.TensorProto]) -> None:
    kept = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + stored)


def _stored_half(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.NodeProto:
    """Replace float32 ``name`` by a float16 initializer and a Cast back (values round to float16)."""
    _replace_initializer(model, name, [numpy_helper.from_array(value.astype(np.float16), f"{name}_float16")])
    return helper.make_node("Cast", [f"{name}_float16"], [name], name=f"{name}_cast", to=onnx.TensorProto.FLOAT)


def side_vector_int8(value: np.ndarray) -> QuantizedWeight:
    """Symmetric int8, one scale for the whole vector, full range: a bias's largest entry is rarely an
    outlier worth clipping (it is a channel's offset), so no clipping search."""
    reach = float(np.abs(value).max()) if value.size else 0.0
    scale = np.float32(reach / 127 if reach > 0 else 1.0)
    grid = QuantizedWeight(np.zeros(value.shape, np.int16), np.array(scale), None, 0, 0, 8)
    return on_grid(value, grid)


def _stored_int8(model: onnx.ModelProto, name: str, q: QuantizedWeight) -> onnx.NodeProto:
    """Replace float32 ``name`` by int8 integers and a DequantizeLinear with one float32 scale."""
    stored = [
        numpy_helper.from_array(q.values.astype(np.int8), f"{name}_int8"),
        numpy_helper.from_array(np.asarray(q.scale, np.float32), f"{name}_int8_scale"),
    ]
    _replace_initializer(model, name, stored)
    return helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_int8_scale"], [name], name=f"{name}_int8_dq")


def stored_bytes(model: onnx.ModelProto) -> dict[str, int]:
    """The file's parameter bytes by role: the layers' weights, their scales and zero points, biases and
    normalisation vectors, and the rest (shape constants, neuron thresholds): where what is left of a
    quantized model lives."""
    constants = {t.name: t for t in model.graph.initializer}
    weight_inputs = {n.input[1] for n in model.graph.node if n.op_type in WEIGHTED_OPS and len(n.input) > 1}
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    scale_outputs = {name for n in dequantize for name in n.input[1:]}
    roles: dict[str, str] = {}
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
    already runs the quantized file, so no second dequantization rule is written here.
    """
    import onnxruntime as ort

    constants = {t.name: t for t in model.graph.initializer}
    scale_inputs = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    dequantize = [
        n for n in model.graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in constants and n.output[0] not in scale_inputs
    ]  # fmt: skip
    if not dequantize:
        return None
    folded, known = [], set(constants)  # what Quantizer.apply adds: DequantizeLinear of stored integers
    # and Cast of float16 side vectors and scales (a scale may feed a DequantizeLinear), and the zeros and ones
    # of a BatchNormalization stored as scale and shift
    for node in model.graph.node:
        is_cast = node.op_type == "Cast" and node.attribute[0].i == onnx.TensorProto.FLOAT
        if (node.op_type in ("DequantizeLinear", "ConstantOfShape") or is_cast) and set(node.input) <= known:
            folded.append(node)
            known.add(node.output[0])
    needed = {name for n in folded for name in n.input} & set(constants)
    probe = helper.make_model(
        helper.make_graph(
            folded,
            "fold",
            [],
            [helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None) for n in folded],
            [t for name, t in constants.items() if name in needed],
        ),  # fmt: skip
        opset_imports=model.opset_import,
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = dict(zip([n.output[0] for n in folded], session.run(None, {}), strict=True))
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
    widths = {v: k for k, (signed, unsigned, _) in _STORAGE.items() for v in (signed, unsigned)}
    weights = {layer.name for layer in quantizable_layers(out)}
    bits, grids, symmetric, block, side_int8 = {}, {}, True, 0, False
    for node in dequantize:
        stored = numpy_helper.to_array(constants[node.input[0]])
        width = widths[stored.dtype.type]
        if node.output[0] not in weights:  # an int8 side vector: its grid, so fine-tuning keeps it
            scale = numpy_helper.to_array(constants[node.input[1]]).astype(np.float32)
            grids[node.output[0]] = QuantizedWeight(stored.astype(np.int16), scale, None, 0, 0, width)
            side_int8 = True
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
    # rounding is not in the file; mse needs no calibration images (a layer without a grid is re-fitted with it)
    coded = any(n.op_type == "DequantizeLinear" and n.output[0] in scale_inputs for n in folded)  # scale codes
    half = any(n.op_type == "Cast" for n in folded)
    scheme = QuantScheme(
        symmetric=symmetric, block_size=block, rounding="mse", half_side=half, scale_codes=coded, side_int8=side_int8
    )
    return Thawed(out, bits, scheme, grids)
