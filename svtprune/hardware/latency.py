"""CPU latency, measured and modelled: where ORT's kernels step with width, and a fitted model.

No lookup tables: per op type, latency ≈ a·MACs + b·bytes + c, with (a, b, c) fitted by least
squares on a few layers timed on the machine that runs the search. ``width_sweep`` times one
1x1 Conv (the layer form of SViT linear layers) at widths w, w-1, ... so the block size at
which latency steps is read off a measurement, not assumed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


@dataclass
class LatencyModel:
    """latency_ms ≈ a·MACs + b·bytes + c for one op type."""

    a: float
    b: float
    c: float

    def predict(self, macs: np.ndarray | float, nbytes: np.ndarray | float) -> np.ndarray:
        return self.a * np.asarray(macs, dtype=np.float64) + self.b * np.asarray(nbytes, dtype=np.float64) + self.c


def fit_latency_model(macs: np.ndarray, nbytes: np.ndarray, latency_ms: np.ndarray) -> LatencyModel:
    """Least-squares fit of (a, b, c); needs at least three points that are not collinear."""
    design = np.column_stack([np.asarray(macs, float), np.asarray(nbytes, float), np.ones(len(macs))])
    if len(macs) < 3 or np.linalg.matrix_rank(design) < 3:
        raise ValueError("need >= 3 timing points with independent MACs and bytes")
    scale = np.abs(design).max(axis=0)
    coef, *_ = np.linalg.lstsq(design / scale, np.asarray(latency_ms, float), rcond=None)
    a, b, c = coef / scale
    return LatencyModel(float(a), float(b), float(c))


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


def conv1x1_cost(c_in: int, c_out: int, length: int, batch: int) -> tuple[float, float]:
    """(MACs, bytes moved: input + weights + output, fp32) of ``conv1x1_model``."""
    macs = float(batch * length * c_in * c_out)
    nbytes = 4.0 * (batch * length * (c_in + c_out) + c_in * c_out)
    return macs, nbytes


def time_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], repeats: int = 20) -> float:
    """Median wall time (ms) of one ORT run, one intra-op thread (stable on shared cores)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def width_sweep(
    width: int, steps: int, c_other: int, length: int, batch: int, repeats: int = 20
) -> list[tuple[int, float]]:
    """Latency (ms) of a 1x1 Conv as its output width goes w, w-1, ..., w-steps+1."""
    x = np.random.default_rng(1).normal(size=(batch, c_other, length)).astype(np.float32)
    return [
        (w, time_model(conv1x1_model(c_other, w, length, batch), {"x": x}, repeats))
        for w in range(width, width - steps, -1)
    ]
