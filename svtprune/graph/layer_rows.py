"""The rows a layer's weight multiplies: im2col patches for convolutions, channels last otherwise.

Least-squares re-fitting and GPTQ both solve per layer over the same design matrix, one row
per (sample, position) and one column per weight input, so both build it here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

Geometry = tuple[tuple[int, ...], list[int]]  # a stride-1 convolution's kernel and pads


def rows(value: np.ndarray, op: str) -> np.ndarray:
    """Features last, one row per (sample, position)."""
    if op == "Conv":
        return np.moveaxis(value, 1, -1).reshape(-1, value.shape[1])
    return value.reshape(-1, value.shape[-1])


def patches(value: np.ndarray, kernel: tuple[int, ...], pads: list[int]) -> np.ndarray:
    """im2col for a stride-1 convolution: one row per output position, features (C, *kernel)."""
    # [N, C, *out, *kernel] -> [N, *out, C, *kernel]
    windows = np.moveaxis(sliding_windows(value, kernel, pads), 1, 1 + len(kernel))
    return windows.reshape(-1, value.shape[1] * int(np.prod(kernel)))


def sliding_windows(value: np.ndarray, kernel: tuple[int, ...], pads: list[int]) -> np.ndarray:
    """[N, C, *out, *kernel], a view of the padded input (nothing copied but the padding)."""
    spatial = len(kernel)
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    return np.lib.stride_tricks.sliding_window_view(np.pad(value, width), kernel, axis=tuple(range(2, 2 + spatial)))


def conv_geometry(node: onnx.NodeProto, weight: np.ndarray) -> tuple[tuple[int, ...], list[int]] | None:
    """Kernel and pads of a convolution the patch re-fit can reproduce (stride 1, no dilation)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    kernel = tuple(weight.shape[2:])
    if any(s != 1 for s in attrs.get("strides", [1] * len(kernel))) or attrs.get("group", 1) != 1:
        return None
    if any(d != 1 for d in attrs.get("dilations", [1] * len(kernel))):
        return None
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    return kernel, list(attrs.get("pads", [0] * 2 * len(kernel)))


class RowPicker:
    """The seeded rows a fit keeps, chosen chunk by chunk before any design matrix is built.

    An im2col matrix built whole and subsampled after took 9.1 GB for one stem layer at 224 px;
    here only the chosen rows are ever gathered. With a single chunk the choice is the one a
    whole-set fit drew (seed 0, ``max_rows`` rows), so results do not depend on the chunking
    for the calibration sizes searches use.
    """

    def __init__(self, images: int, chunk_images: list[int], max_rows: int | None) -> None:
        self.images, self.chunk_images, self.max_rows = images, chunk_images, max_rows

    def picked(self, index: int, count: int) -> np.ndarray | None:
        """Sorted row indices of chunk ``index`` (``count`` rows), or None for all of them."""
        if self.max_rows is None or count // self.chunk_images[index] * self.images <= self.max_rows:
            return None
        share = round(self.max_rows * self.chunk_images[index] / self.images)
        return np.sort(np.random.default_rng(index).choice(count, share, replace=False))

    def rows(self, index: int, value: np.ndarray, op: str) -> np.ndarray:
        """The chosen rows of ``rows(value, op)``."""
        grid = (value.shape[0], *value.shape[2:]) if op == "Conv" else value.shape[:-1]
        picked = self.picked(index, int(np.prod(grid)))
        if picked is None:
            return rows(value, op)
        if op == "Conv":
            where = np.unravel_index(picked, grid)
            return value[(where[0], slice(None), *where[1:])]
        return value.reshape(-1, value.shape[-1])[picked]

    def features(self, index: int, value: np.ndarray, op: str, geometry: Geometry | None) -> np.ndarray:
        """The chosen rows of the layer's design matrix: im2col patches for a convolution."""
        if op != "Conv" or geometry is None:
            return self.rows(index, value, op)
        kernel, pads = geometry
        windows = sliding_windows(value, kernel, pads)
        out = windows.shape[2 : 2 + len(kernel)]
        picked = self.picked(index, value.shape[0] * int(np.prod(out)))
        if picked is None:
            return patches(value, kernel, pads)
        where = np.unravel_index(picked, (value.shape[0], *out))
        return windows[(where[0], slice(None), *where[1:])].reshape(len(picked), -1)

    def design(self, op: str, geometry: Geometry | None) -> Callable[[int, np.ndarray], np.ndarray]:
        """``features`` for one layer, as the per-chunk reduction a stepwise tap takes."""
        return lambda index, value: self.features(index, value, op, geometry)
