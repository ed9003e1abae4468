"""Second-order (OBS) saliency against brute-force least squares; data criteria on a real graph."""

from __future__ import annotations

import numpy as np

from svtprune.graph.analysis import analyze
from svtprune.importance import column_saliency, group_scores


def _brute_force(x: np.ndarray, w: np.ndarray, j: int, update: bool) -> float:
    """Output error after removing input j, with the remaining rows refitted by lstsq (or not)."""
    target = x @ w
    keep = [i for i in range(w.shape[0]) if i != j]
    if not update:
        return float(((target - x[:, keep] @ w[keep]) ** 2).sum())
    fitted, *_ = np.linalg.lstsq(x[:, keep], target, rcond=None)
    return float(((target - x[:, keep] @ fitted) ** 2).sum())


def test_obs_saliency_equals_optimal_error_and_picks_best_channel() -> None:
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(8, 8))
    x = rng.normal(size=(200, 8)) @ mix  # correlated inputs: the update matters
    w = rng.normal(size=(8, 5))
    h = x.T @ x
    obs = column_saliency(w, h, second_order=True, damping=0.0)
    errors = np.array([_brute_force(x, w, j, update=True) for j in range(8)])
    assert np.allclose(obs, errors, rtol=1e-4)
    assert int(np.argmin(obs)) == int(np.argmin(errors))
    taylor = column_saliency(w, h, second_order=False)
    plain = np.array([_brute_force(x, w, j, update=False) for j in range(8)])
    assert np.allclose(taylor, plain, rtol=1e-8)
    assert np.all(obs <= taylor + 1e-9)  # compensation never hurts


def test_data_criteria_score_every_group(small_models, images) -> None:  # noqa: ANN001
    analysis = analyze(small_models["spikformer"])
    x = images[:4]
    l2 = group_scores(analysis, "l2")
    for name in ("hessian", "taylor"):
        scores = group_scores(analysis, name, calibration=x)
        assert set(scores) == set(l2)
        for group in analysis.prunable_groups:
            s = scores[group.name]
            assert s.shape == (group.size,) and np.all(np.isfinite(s)) and np.all(s >= 0)
