"""CPU latency, measured and modelled: where ORT's kernels step with width, and a fitted model.

No lookup tables: latency ≈ Σ coefficient · feature over per-op-type costs read from the graph
(Conv MACs, MatMul MACs, weighted-layer elements, elements of every other node, one per call),
the coefficients fitted by non-negative least squares on whole models timed on the machine that
runs the search. ``width_sweep`` times one
1x1 Conv (the layer form of SViT linear layers) at widths w, w-1, ... so the block size at
which latency steps is read off a measurement, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from svtprune.graph.io import with_batch
from svtprune.runtime import make_session, timed_runs_ms


@dataclass
class LatencyModel:
    """latency_ms ≈ Σ coefficient · feature, non-negative, features as ``cost_features`` names them."""

    coefficients: dict[str, float]

    def predict(self, features: dict[str, float] | list[dict[str, float]]) -> np.ndarray:
        rows = [features] if isinstance(features, dict) else features
        return np.array([sum(c * row.get(name, 0.0) for name, c in self.coefficients.items()) for row in rows])


def fit_latency_model(features: list[dict[str, float]], latency_ms: np.ndarray) -> LatencyModel:
    """Non-negative least squares over the features (a negative cost per MAC would be nonsense).

    The residuals are relative (each row divided by its measured time): a search compares
    candidates by ratios, and a 1 ms model should not be fitted 100 times looser than a 100 ms one.
    Columns are scaled to unit maximum so MACs (1e8) and a per-call constant (1) weigh alike.
    """
    from scipy.optimize import nnls

    names = sorted({name for row in features for name in row})
    design = np.array([[row.get(name, 0.0) for name in names] for row in features], dtype=np.float64)
    if len(features) <= len(names) or np.linalg.matrix_rank(design) < len(names):
        raise ValueError(f"need more than {len(names)} timing points whose features are independent")
    latency = np.asarray(latency_ms, dtype=np.float64)
    design = design / latency[:, None]
    scale = np.abs(design).max(axis=0)
    coef, _ = nnls(design / scale, np.ones(len(latency)))
    return LatencyModel({name: float(c / s) for name, c, s in zip(names, coef, scale, strict=True)})


def cost_features(model: onnx.ModelProto, batch: int) -> dict[str, float]:
    """What a CPU spends time on, per run at ``batch`` images, read from inferred shapes.

    conv_macs / matmul_macs: multiply-accumulates of Conv and MatMul/Gemm; weighted_elements:
    their input and output elements (memory traffic, im2col); other_elements: output elements
    of every other node (the unrolled neurons, normalisation, reshapes); call: 1 per run.
    """
    shapes = _shapes_at_batch(model, batch)
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    features = {"conv_macs": 0.0, "matmul_macs": 0.0, "weighted_elements": 0.0, "other_elements": 0.0, "call": 1.0}
    for node in model.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if out is None:
            continue
        out_elements = float(np.prod(out))
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            x = shapes.get(node.input[0])
            w = weights.get(node.input[1]) or shapes.get(node.input[1])
            if x is None or w is None:
                continue
            if node.op_type == "Conv":
                features["conv_macs"] += out_elements * float(np.prod(w[1:]))
            else:
                features["matmul_macs"] += out_elements * float(x[-1])
            features["weighted_elements"] += out_elements + float(np.prod(x))
        elif node.op_type not in ("Shape", "Constant"):
            features["other_elements"] += out_elements
    return features


def _shapes_at_batch(model: onnx.ModelProto, batch: int) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor with the symbolic batch axis of the inputs set to ``batch``."""
    inferred = shape_inference.infer_shapes(with_batch(model, batch), data_prop=True)
    shapes = {}
    for value in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    return shapes


def conv1x1_model(c_in: int, c_out: int, length: int, batch: int) -> onnx.ModelProto:
    """A lone Conv1d(c_in, c_out, 1) on [batch, c_in, length], random weights."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(c_out, c_in, 1)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    graph = helper.make_graph(
        [node],
        "conv1x1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c_in, length])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, c_out, length])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], repeats: int = 20) -> float:
    """Median wall time (ms) of one ORT run, one intra-op thread (stable on shared cores)."""
    return float(np.median(timed_runs_ms(make_session(model, threads=1), feeds, repeats)))


def width_sweep(
    width: int, steps: int, c_other: int, length: int, batch: int, repeats: int = 20
) -> list[tuple[int, float]]:
    """Latency (ms) of a 1x1 Conv as its output width goes w, w-1, ..., w-steps+1."""
    x = np.random.default_rng(1).normal(size=(batch, c_other, length)).astype(np.float32)
    return [
        (w, time_model(conv1x1_model(c_other, w, length, batch), {"x": x}, repeats))
        for w in range(width, width - steps, -1)
    ]
