"""The rows a layer's weight multiplies: im2col patches for convolutions, channels last otherwise.

Least-squares re-fitting and GPTQ both solve per layer over the same design matrix, one row
per (sample, position) and one column per weight input, so both build it here.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def rows(value: np.ndarray, op: str) -> np.ndarray:
    """Features last, one row per (sample, position)."""
    if op == "Conv":
        return np.moveaxis(value, 1, -1).reshape(-1, value.shape[1])
    return value.reshape(-1, value.shape[-1])


def patches(value: np.ndarray, kernel: tuple[int, ...], pads: list[int]) -> np.ndarray:
    """im2col for a stride-1 convolution: one row per output position, features (C, *kernel)."""
    spatial = len(kernel)
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    padded = np.pad(value, width)
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=tuple(range(2, 2 + spatial)))
    # [N, C, *out, *kernel] -> [N, *out, C, *kernel]
    windows = np.moveaxis(windows, 1, 1 + spatial)
    return windows.reshape(-1, value.shape[1] * int(np.prod(kernel)))


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
