"""Choosing a weight's grid: per-channel or per-block scales, MSE clipping, scale codes, GPTQ rounding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from svtprune.quantization.gptq import gptq_rounded
from svtprune.quantization.grid import on_grid
from svtprune.quantization.scheme import Layer, QuantizedWeight, QuantScheme, levels

CLIP_GRID = np.linspace(0.30, 1.0, 36)  # fractions of the full range tried by the MSE clipping search


def grouped(weight: np.ndarray, layer: Layer, block_size: int) -> np.ndarray:
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


def fit_rows(rows: np.ndarray, bits: int, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scale, zero point and integers per row; with "mse", the clipping fraction with least squared error."""
    low, high = levels(bits, scheme.symmetric)
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
        return fitted if hessian is None else gptq_rounded(weight, layer, bits, scheme, fitted, hessian)
    fitted = fit_grid(weight, layer, bits, scheme)
    if not scheme.scale_codes:
        return fitted
    codes, step = coded_scales(fitted.scale)
    return on_grid(weight, replace(fitted, scale=codes.astype(np.float32) * step))


def fit_grid(weight: np.ndarray, layer: Layer, bits: int, scheme: QuantScheme) -> QuantizedWeight:
    rows = grouped(weight.astype(np.float32), layer, scheme.block_size)
    scale, zero, q = fit_rows(rows, bits, scheme)
    if not scheme.block_size:
        values = np.moveaxis(q.reshape(np.moveaxis(weight, layer.out_axis, 0).shape), 0, layer.out_axis)
        zero_point = None if scheme.symmetric else zero
        return QuantizedWeight(values.astype(np.int16), scale, zero_point, layer.out_axis, 0, bits)
    # undo grouped's block layout; scales become (out, blocks, rest) moved back to the weight's axes
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
