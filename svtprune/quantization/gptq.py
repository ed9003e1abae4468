"""GPTQ: error-feedback rounding on a fitted grid, from each layer's XᵀX on calibration images."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx

from svtprune.quantization.grid import expanded
from svtprune.quantization.scheme import WEIGHTED_OPS, Layer, QuantizedWeight, QuantScheme, levels

# gptq: damping added to H's diagonal, as a fraction of its mean (the GPTQ paper's 1%): keeps the inverse
# finite when inputs are collinear or dead (spike inputs often are)
GPTQ_DAMPING = 0.01
GPTQ_CHUNK = 8  # calibration images tapped per pass: 1.12 GB peak for the 9.3M Spikformer at 8, 2.09 GB at 32
GRAM_BYTES = 64 * 2**20  # float64 im2col rows of one Conv built at once


def gptq_rounded(
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
    scale_full, zero_full = expanded(fitted)
    scale, zero = matrix(scale_full), matrix(zero_full)
    if hessian.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"{layer.name}: Hessian {hessian.shape} does not match {w.shape[1]} input features")
    low, high = levels(bits, scheme.symmetric)
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


def layer_features(node: onnx.NodeProto, weight: np.ndarray, value: np.ndarray) -> np.ndarray | None:
    """One row per (sample, position), features ordered as the weight's input axes flatten; None if unsupported."""
    from svtprune.graph.layer_rows import conv_geometry, patches, rows

    if node.op_type == "Conv":
        geometry = conv_geometry(node, weight)  # stride 1, one group: patches are the layer's exact inputs
        return None if geometry is None else patches(value, *geometry)
    if weight.ndim != 2:
        return None
    if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
        value = value.T
    return rows(value, node.op_type) if node.op_type in ("MatMul", "Gemm") else None


def input_gram(node: onnx.NodeProto, weight: np.ndarray, value: np.ndarray) -> np.ndarray | None:
    """XᵀX (float64) of one node's input, a few samples at a time for a Conv: its im2col rows are
    kernel-size times its input (on a 9.3M-parameter Spikformer at 32x32, 1.8 GB in float64 for 32
    images at once; docs/benchmark-log.md, "Quantization at a user's size")."""
    step = len(value)
    if node.op_type == "Conv" and value.ndim > 2:
        per_sample = value[0].size * int(np.prod(weight.shape[2:])) * 8
        step = max(1, GRAM_BYTES // max(per_sample, 1))
    gram = None
    for first in range(0, max(len(value), 1), step):
        features = layer_features(node, weight, value[first : first + step])
        if features is None:
            return None
        features = features.astype(np.float64)
        gram = features.T @ features if gram is None else gram + features.T @ features
    return gram


def layer_hessians(
    model: onnx.ModelProto, layers: list[Layer], weights: dict[str, np.ndarray], calib: np.ndarray
) -> dict[str, np.ndarray | None]:
    """XᵀX per layer from the float model's own layer inputs on ``calib``, summed over the nodes sharing a weight.

    All inputs are tapped in one run per chunk of images; layers whose inputs cannot be laid
    out as features (strided/grouped convolutions, ConvTranspose, batched MatMul) get None.
    """
    from svtprune.graph.taps import tap

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
            gram = input_gram(node, weights[name], values[node.input[0]])
            if gram is None:
                unsupported.add(name)
                continue
            hessians[name] = gram if hessians[name] is None else hessians[name] + gram
    return {name: None if name in unsupported else h for name, h in hessians.items()}
