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
Taps run only the part of the graph a tensor depends on.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from svtprune.evaluate import make_session, predict
from svtprune.graph.analysis import constants_of


def least_squares(
    x: np.ndarray, y: np.ndarray, ridge: float, bias: bool, dtype: type = np.float64
) -> tuple[np.ndarray, np.ndarray | None]:
    """Weights (out x in) and bias minimising ||x W^T + b - y||² + ridge·n·||W||² (ridge scaled by rows).

    ``dtype`` is the precision of the two big products (float32 halves their cost and is exact
    for spike inputs, whose sums are small integers); the solve is always float64.
    """
    design = x.astype(dtype, copy=False)
    if bias:
        design = np.hstack([design, np.ones((len(design), 1), dtype)])
    gram = (design.T @ design).astype(np.float64)
    rhs = (design.T @ y.astype(dtype, copy=False)).astype(np.float64)
    penalty = ridge * np.trace(gram) / max(len(gram), 1) * np.eye(len(gram))
    if bias:
        penalty[-1, -1] = 0.0
    try:
        solution = np.linalg.solve(gram + penalty, rhs)
    except np.linalg.LinAlgError:  # dead inputs without a ridge: the minimum-norm solution
        solution = np.linalg.lstsq(gram + penalty, rhs, rcond=None)[0]
    return (solution[:-1].T, solution[-1]) if bias else (solution.T, None)


def _rows(value: np.ndarray, op: str) -> np.ndarray:
    """Features last, one row per (sample, position)."""
    if op == "Conv":
        return np.moveaxis(value, 1, -1).reshape(-1, value.shape[1])
    return value.reshape(-1, value.shape[-1])


def _patches(value: np.ndarray, kernel: tuple[int, ...], pads: list[int]) -> np.ndarray:
    """im2col for a stride-1 convolution: one row per output position, features (C, *kernel)."""
    spatial = len(kernel)
    width = [(0, 0), (0, 0)] + [(pads[i], pads[i + spatial]) for i in range(spatial)]
    padded = np.pad(value, width)
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel, axis=tuple(range(2, 2 + spatial)))
    # [N, C, *out, *kernel] -> [N, *out, C, *kernel]
    windows = np.moveaxis(windows, 1, 1 + spatial)
    return windows.reshape(-1, value.shape[1] * int(np.prod(kernel)))


def _conv_geometry(node: onnx.NodeProto, weight: np.ndarray) -> tuple[tuple[int, ...], list[int]] | None:
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


def refittable(node: onnx.NodeProto, weights: dict[str, np.ndarray]) -> bool:
    if node.op_type == "Conv":
        w = weights.get(node.input[1])
        return w is not None and _conv_geometry(node, w) is not None
    if node.op_type in ("MatMul", "Gemm"):
        w = weights.get(node.input[1])
        trans = any(a.name in ("transA", "transB") and a.i for a in node.attribute)
        return w is not None and w.ndim == 2 and not trans
    return False


def reconstruct(
    original: onnx.ModelProto,
    pruned: onnx.ModelProto,
    layers: dict[str, np.ndarray | None],
    x: np.ndarray,
    ridge: float = 1e-3,
    *,
    targets: dict[str, np.ndarray] | None = None,
    cache: dict[Hashable, tuple[np.ndarray, np.ndarray | None]] | None = None,
    keys: dict[str, Hashable] | None = None,
    max_rows: int | None = None,
    gram_dtype: type = np.float64,
) -> onnx.ModelProto:
    """A copy of ``pruned`` whose layers are re-fitted to the original's outputs on ``x``.

    ``layers`` maps each layer to re-fit to the flags of its output channels that survived
    (None: all did), so targets are the original outputs of the channels still there.
    ``targets`` (original outputs on ``x`` by tensor name) is filled in place as a cache;
    ``cache``/``keys`` reuse a fit when ``keys[layer]`` was fitted before; ``max_rows``
    fits on a seeded random subset of rows when a layer has more; ``gram_dtype`` see least_squares.
    """
    model = onnx.ModelProto()
    model.CopyFrom(pruned)
    nodes = {n.name: n for n in model.graph.node}
    weights = constants_of(model)
    todo = [n.name for n in model.graph.node if n.name in layers and refittable(n, weights)]
    if not todo:
        return model
    targets = {} if targets is None else targets
    missing = [nodes[name].output[0] for name in todo if nodes[name].output[0] not in targets]
    if missing:
        targets.update(_tap(original, missing, x))
    for name in todo:
        node = nodes[name]
        key = keys.get(name) if cache is not None and keys is not None else None
        fit = cache.get(key) if cache is not None and key is not None else None
        if fit is None:
            inputs = _tap(model, [node.input[0]], x)[node.input[0]]
            target = _rows(targets[node.output[0]], node.op_type)
            if layers[name] is not None:
                target = target[:, layers[name]]
            if node.op_type == "Conv":
                features = _patches(inputs, *_conv_geometry(node, weights[node.input[1]]))  # type: ignore[misc]
            else:
                features = _rows(inputs, node.op_type)
            features, target = _subsample(features, target, max_rows)
            fit = least_squares(features, target, ridge, node.op_type in ("Conv", "Gemm"), gram_dtype)
            if cache is not None and key is not None:
                cache[key] = fit
        _install(model, node, weights, *fit)
        weights = constants_of(model)
    return model


def _subsample(x: np.ndarray, y: np.ndarray, max_rows: int | None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_rows`` rows, the same ones from both (seeded, so a search stays repeatable)."""
    if max_rows is None or len(x) <= max_rows:
        return x, y
    rows = np.sort(np.random.default_rng(0).choice(len(x), max_rows, replace=False))
    return x[rows], y[rows]


def _tap(model: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    """Values of ``names`` on ``x``, running only the nodes they depend on."""
    feed = model.graph.input[0].name
    wanted = [n for n in names if n != feed]
    values = {n: x for n in names if n == feed}
    if not wanted:
        return values
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    needed: set[int] = set()
    stack = list(wanted)
    while stack:
        index = producer.get(stack.pop())
        if index is None or index in needed:
            continue
        needed.add(index)
        stack.extend(i for i in model.graph.node[index].input if i)
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    kept = [node for i, node in enumerate(model.graph.node) if i in needed]
    del tapped.graph.node[:]
    tapped.graph.node.extend(kept)
    del tapped.graph.output[:]
    for name in wanted:
        tapped.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    values.update(predict(make_session(tapped), x, outputs=wanted))
    return values


def _install(model: onnx.ModelProto, node: onnx.NodeProto, weights: dict, w: np.ndarray, b: np.ndarray | None) -> None:
    """Put a fitted (out x in) matrix and bias back in the layer's own layout and dtype."""
    weight = weights[node.input[1]]
    new_weight = w.reshape(weight.shape) if node.op_type == "Conv" else w.T
    _replace(model, node, 1, new_weight.astype(weight.dtype), f"{node.name}_refit_w")
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
