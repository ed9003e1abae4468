"""Integers on a grid and back: scales at the weight's shape, rounding onto a stored grid, DequantizeLinear."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from svtprune.quantization.scheme import QuantizedWeight, levels


def expanded(q: QuantizedWeight) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point broadcast to the weight's shape (blocks repeated and cropped)."""
    scale, zero = q.scale, q.zero_point if q.zero_point is not None else np.zeros_like(q.scale)
    if q.block_size:
        scale = np.repeat(scale, q.block_size, axis=q.axis)[crop(q)]
        zero = np.repeat(zero, q.block_size, axis=q.axis)[crop(q)]
    else:
        shape = [1] * q.values.ndim
        shape[q.axis] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return scale.astype(np.float32), zero.astype(np.float32)


def grid_bounds(grid: QuantizedWeight) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Scale and zero point at the weight's shape, and the integer range: what a fine-tuned weight rounds to."""
    scale, zero = expanded(grid)
    return (scale, zero, *levels(grid.bits, grid.zero_point is None))


def on_grid(weight: np.ndarray, grid: QuantizedWeight) -> QuantizedWeight:
    """``weight`` rounded to nearest on ``grid``'s scales and zero points (a fine-tuned layer's integers)."""
    scale, zero, low, high = grid_bounds(grid)
    q = np.clip(np.round(weight.astype(np.float32) / scale) + zero, low, high)
    return replace(grid, values=q.astype(np.int16))


def dequantize(q: QuantizedWeight) -> np.ndarray:
    """What DequantizeLinear computes, for reports and the drift of a single layer."""
    scale, zero = expanded(q)
    return ((q.values.astype(np.float32) - zero) * scale).astype(np.float32)


def crop(q: QuantizedWeight) -> tuple[slice, ...]:
    index = [slice(None)] * q.values.ndim
    index[q.axis] = slice(0, q.values.shape[q.axis])
    return tuple(index)
