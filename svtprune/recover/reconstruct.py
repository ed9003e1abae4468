"""Post-training recovery: re-fit the layers that lost input channels, by least squares.

After surgery a consumer sees fewer input channels. Its remaining weights (and bias) are
re-fitted so that, on calibration images run through the *pruned* model, its output matches
the *original* layer's output: min ||[X, 1] [W; b] - Y||² + ridge·||W||². Layers are
fitted in graph order, so each one sees inputs its re-fitted predecessors produce. Needs no
labels and no gradients. Stride-1 convolutions (any kernel, via im2col), Gemm and 2-D MatMul
weights are re-fitted.

Searches build hundreds of candidates from one model, so the caller may pass caches: the
original layers' outputs (computed once), and finished re-fits keyed by everything upstream of
a layer (a layer whose inputs and kept outputs did not change gets the same weights back).
Taps go piece by piece (recover/stepwise.py): all of a candidate's re-fits cost one pass of the
calibration images, and only the rows a fit uses are kept.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import onnx
from onnx import numpy_helper

from svtprune.graph.analysis import constants_of
from svtprune.graph.io import attribute
from svtprune.graph.layer_rows import RowPicker, conv_geometry
from svtprune.recover.stepwise import CHUNK_IMAGES, StepwiseRunner
from svtprune.recover.targets import TargetStore
from svtprune.runtime import batch_for

REFIT_WEIGHT = "_refit_w"  # suffix of a re-fitted layer's weight (the plan and verify find re-fits by it)


def least_squares(
    x: np.ndarray | list[np.ndarray], y: np.ndarray, ridge: float, bias: bool, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weights (out x in) and bias minimising ||x W^T + b - y||² + ridge·n·||W||² (ridge scaled by rows).

    ``x`` may come in parts (consecutive rows of ``y``): the products are summed part by part, so
    the whole design matrix never exists at once (a stem conv of a 9.3M Spikformer: 226 MB, and
    as much again for its copy with the bias column). ``dtype`` is the precision of the two big
    products (float32 halves their cost and is exact for spike inputs, whose sums are small
    integers); the parts are summed and the system solved in float64.
    """
    gram, rhs = _normal_equations(x if isinstance(x, list) else [x], y, bias, dtype)
    penalty = ridge * np.trace(gram) / max(len(gram), 1) * np.eye(len(gram))
    if bias:
        penalty[-1, -1] = 0.0
    try:
        solution = np.linalg.solve(gram + penalty, rhs)
    except np.linalg.LinAlgError:  # dead inputs without a ridge: the minimum-norm solution
        solution = np.linalg.lstsq(gram + penalty, rhs, rcond=None)[0]
    return (solution[:-1].T, solution[-1]) if bias else (solution.T, None)


def _normal_equations(parts: list[np.ndarray], y: np.ndarray, bias: bool, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """XᵀX and Xᵀy in float64 (X with a ones column for the bias), one part of the rows at a time."""
    gram = rhs = None
    first = 0
    for part in parts:
        design = part.astype(dtype, copy=False)
        if bias:
            design = np.hstack([design, np.ones((len(design), 1), dtype)])
        target = y[first : first + len(design)].astype(dtype, copy=False)
        first += len(design)
        part_gram, part_rhs = (design.T @ design).astype(np.float64), (design.T @ target).astype(np.float64)
        gram, rhs = (part_gram, part_rhs) if gram is None else (gram + part_gram, rhs + part_rhs)
    if gram is None or first != len(y):
        raise ValueError(f"the parts hold {first} rows for {len(y)} targets")
    return gram, rhs


def refittable(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    """Whether the re-fit can reproduce this layer: a stride-1 Conv, or an untransposed 2-D MatMul/Gemm weight."""
    if node.op_type == "Conv":
        w = weights.get(node.input[1])
        return w is not None and conv_geometry(node, w) is not None
    if node.op_type in ("MatMul", "Gemm"):
        w = weights.get(node.input[1])
        trans = bool(attribute(node, "transA", 0) or attribute(node, "transB", 0))
        return w is not None and w.ndim == 2 and not trans
    return False


def reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    layers: dict[str, np.ndarray | None],
    x: np.ndarray,
    ridge: float = 1e-3,
    *,
    targets: TargetStore | None = None,
    cache: dict[Hashable, tuple[np.ndarray, np.ndarray | None]] | None = None,
    keys: dict[str, Hashable] | None = None,
    max_rows: int | None = None,
    gram_dtype: type = np.float64,
    chunk: int | None = None,
) -> onnx.ModelProto:
    """A copy of ``pruned`` whose layers are re-fitted to the original's outputs on ``x``.

    ``layers`` maps each layer to re-fit to the flags of its output channels that survived
    (None: all did), so targets are the original outputs of the channels still there.
    ``targets`` (the original outputs' fitted rows, by tensor name) is filled in place as a cache
    (recover/targets.py: in memory, then on disk, then tapped again);
    ``cache``/``keys`` reuse a fit when ``keys[layer]`` was fitted before; ``max_rows``
    fits on a seeded random subset of rows when a layer has more (chosen before any design
    matrix is built); ``gram_dtype`` see least_squares; ``chunk`` images go through at a time (default: the
    memory-bounded batch of ``runtime.batch_for``, at most ``CHUNK_IMAGES``).
    """
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    nodes = {n.name: n for n in model.graph.node}
    weights = constants_of(model)
    todo = [n.name for n in model.graph.node if n.name in layers and refittable(n, weights)]
    if not todo:
        return model
    targets = TargetStore(disk_bytes=0) if targets is None else targets  # one call: nothing to spill for
    source: StepwiseRunner | None = None  # the original model, run only for targets not cached
    chunk = chunk or min(CHUNK_IMAGES, batch_for(original))  # the same pieces for both runners
    runner = StepwiseRunner(model, x, chunk)
    for name in todo:
        node = nodes[name]
        key = keys.get(name) if cache is not None and keys is not None else None
        fit = cache.get(key) if cache is not None and key is not None else None
        if fit is None:
            picker = RowPicker(len(x), [len(c) for c in runner.chunks], max_rows)
            target = targets.get(node.output[0])
            if target is None:
                source = source or StepwiseRunner(original, x, chunk)
                target = np.concatenate(source.value(node.output[0], picker.design(node.op_type, None)))
                targets.put(node.output[0], target)
            if layers[name] is not None:
                target = target[:, layers[name]]
            geometry = conv_geometry(node, weights[node.input[1]]) if node.op_type == "Conv" else None
            features = runner.value(node.input[0], picker.design(node.op_type, geometry))  # one part per chunk
            fit = least_squares(features, target, ridge, node.op_type in ("Conv", "Gemm"), gram_dtype)
            if cache is not None and key is not None:
                cache[key] = fit
        _install(model, node, weights, *fit)
        weights = constants_of(model)
    return model


def refitted_layers(model: onnx.ModelProto) -> list[str]:
    """The layers of ``model`` whose weights ``reconstruct`` replaced (their weight input is its fresh tensor)."""
    return [n.name for n in model.graph.node if len(n.input) > 1 and n.input[1] == f"{n.name}{REFIT_WEIGHT}"]


def _install(model: onnx.ModelProto, node: onnx.NodeProto, weights: dict, w: np.ndarray, b: np.ndarray | None) -> None:
    """Put a fitted (out x in) matrix and bias back in the layer's own layout and dtype."""
    weight = weights[node.input[1]]
    new_weight = w.reshape(weight.shape) if node.op_type == "Conv" else w.T
    _replace(model, node, 1, new_weight.astype(weight.dtype), f"{node.name}{REFIT_WEIGHT}")
    if b is not None:
        while len(node.input) < 3:
            node.input.append("")
        _replace(model, node, 2, b.astype(weight.dtype), f"{node.name}_refit_b")


def _replace(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, name: str) -> None:
    """A fresh initializer per layer, so a weight shared with another layer stays as it was."""
    old = node.input[index]
    node.input[index] = name
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    if old and not any(old in n.input for n in model.graph.node):
        kept = [t for t in model.graph.initializer if t.name != old]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
