"""Latency-model fit on synthetic timings (no timed assertions)."""

from __future__ import annotations

import numpy as np
import pytest

from svtprune.hardware.latency import conv1x1_cost, conv1x1_model, fit_latency_model


def test_fit_recovers_known_coefficients_from_noisy_timings() -> None:
    rng = np.random.default_rng(0)
    shapes = [(ci, co, 49, b) for ci in (64, 128, 256) for co in (32, 96, 256) for b in (1, 16)]
    macs, nbytes = np.array([conv1x1_cost(*s) for s in shapes]).T
    truth = (2e-7, 3e-6, 0.05)
    latency = truth[0] * macs + truth[1] * nbytes + truth[2]
    model = fit_latency_model(macs, nbytes, latency * (1 + 0.01 * rng.normal(size=len(macs))))
    assert model.a == pytest.approx(truth[0], rel=0.05)
    assert model.b == pytest.approx(truth[1], rel=0.2)
    assert np.allclose(model.predict(macs, nbytes), latency, rtol=0.05)


def test_fit_refuses_degenerate_points() -> None:
    with pytest.raises(ValueError):
        fit_latency_model(np.array([1.0, 2.0]), np.array([1.0, 2.0]), np.array([1.0, 2.0]))


def test_cost_counts_a_hand_example() -> None:
    macs, nbytes = conv1x1_cost(3, 2, 5, 1)
    assert macs == 30 and nbytes == 4 * (5 * 5 + 6)
    assert [d.dim_value for d in conv1x1_model(3, 2, 5, 1).graph.output[0].type.tensor_type.shape.dim] == [1, 2, 5]
