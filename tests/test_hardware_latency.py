"""Latency model: the fit on synthetic timings and the cost features on hand-counted graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtprune.hardware.latency import conv1x1_model, cost_features, fit_latency_model


def test_fit_recovers_known_coefficients_from_noisy_timings() -> None:
    rng = np.random.default_rng(0)
    truth = {"conv_macs": 2e-7, "other_elements": 3e-6, "call": 0.05}
    rows = [
        {"conv_macs": float(m), "other_elements": float(e), "call": 1.0}
        for m, e in zip(rng.uniform(1e5, 1e7, 30), rng.uniform(1e3, 1e5, 30), strict=True)
    ]
    latency = np.array([sum(truth[k] * row[k] for k in truth) for row in rows])
    fit = fit_latency_model(rows, latency * (1 + 0.01 * rng.normal(size=len(rows))))
    assert fit.coefficients["conv_macs"] == pytest.approx(truth["conv_macs"], rel=0.05)
    assert fit.coefficients["other_elements"] == pytest.approx(truth["other_elements"], rel=0.2)
    assert np.allclose(fit.predict(rows), latency, rtol=0.05)


def test_fit_keeps_coefficients_non_negative() -> None:
    rng = np.random.default_rng(1)
    rows = [{"a": float(x), "b": float(y), "call": 1.0} for x, y in rng.uniform(1, 10, size=(20, 2))]
    latency = np.array([2.0 * row["a"] - 0.5 * row["b"] + 20 for row in rows])  # a negative true cost
    fit = fit_latency_model(rows, latency)
    assert min(fit.coefficients.values()) >= 0.0


def test_fit_refuses_degenerate_points() -> None:
    rows = [{"a": 1.0, "call": 1.0}, {"a": 2.0, "call": 1.0}]
    with pytest.raises(ValueError):
        fit_latency_model(rows, np.array([1.0, 2.0]))
    collinear = [{"a": float(i), "b": 2.0 * i} for i in range(10)]
    with pytest.raises(ValueError):
        fit_latency_model(collinear, np.arange(10.0))


def test_cost_features_count_a_hand_example() -> None:
    # Conv1d 3 -> 2, length 5, batch 4: 4*2*5 outputs x 3 inputs each = 120 MACs
    features = cost_features(conv1x1_model(3, 2, 5, 4), batch=4)
    assert features["conv_macs"] == 120
    assert features["weighted_elements"] == 4 * 2 * 5 + 4 * 3 * 5
    assert features["other_elements"] == 0 and features["call"] == 1


def test_cost_features_follow_the_symbolic_batch() -> None:
    # x [N, 6] @ w [6, 4], then Relu: MatMul MACs and elementwise elements scale with N
    w = numpy_helper.from_array(np.ones((6, 4), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    for batch in (1, 64):
        features = cost_features(model, batch)
        assert features["matmul_macs"] == batch * 4 * 6
        assert features["other_elements"] == batch * 4
