"""Benchmarks for issue 7: latency steps with width, latency-model fit and its error on pruned models.

python tools/bench_hardware.py sweep     # 1x1 Conv at widths 256..241, batch 1 x T=4 rows
python tools/bench_hardware.py model N   # fit on N pruned Spikformers (random rate per group), test on N others
"""

from __future__ import annotations

import sys

import numpy as np

from svtprune.graph.analysis import analyze
from svtprune.graph.io import load_model
from svtprune.graph.plan import Plan, kept_for_ratio
from svtprune.graph.surgery import prune
from svtprune.hardware.latency import cost_features, fit_latency_model, width_sweep
from svtprune.importance import group_scores
from svtprune.runtime import measured_latency

REFERENCE = "models/reference/spikformer_fmnist.onnx"
PASSES = 3


def sweep() -> None:
    for width, ms in width_sweep(256, 18, 256, 49, 4):
        print(f"width {width}: {ms:.4f} ms")


def random_plan(analysis, scores, rng) -> Plan:  # noqa: ANN001
    """Each prunable group at its own random rate in [0, 0.7]: plans a search could visit."""
    plan = Plan(meta={"method": "random"})
    for group in analysis.prunable_groups:
        plan.kept[group.name] = kept_for_ratio(analysis, group, float(rng.uniform(0.0, 0.7)), scores[group.name])
    return plan


def model(count: int) -> None:
    """Fit the latency model on ``count`` random pruned Spikformers, test it on ``count`` others."""
    rng = np.random.default_rng(0)
    base = load_model(REFERENCE)
    analysis = analyze(base)
    scores = group_scores(analysis, "l2")
    models = [base] + [prune(analysis, random_plan(analysis, scores, rng)) for _ in range(2 * count - 1)]
    timings = np.full((len(models), 2), np.inf)
    for _ in range(PASSES):  # interleaved passes, fastest kept: a busy spell hits one pass, not every model
        for index, pruned in enumerate(models):
            timings[index] = np.minimum(timings[index], measured_latency(pruned))
    rows = []  # (batch, features, measured ms)
    for index, (pruned, (b1, b64)) in enumerate(zip(models, timings, strict=True)):
        rows += [(1, cost_features(pruned, 1), b1), (64, cost_features(pruned, 64), b64)]
        print(f"model {index}: {b1:.2f} ms at batch 1, {b64:.1f} ms at batch 64", flush=True)
    fit_rows, test_rows = rows[: 2 * count], rows[2 * count :]
    for batch in (1, 64):  # one model per batch size: the per-call cost and cache behaviour differ
        fitted = [(f, ms) for b, f, ms in fit_rows if b == batch]
        fit = fit_latency_model([f for f, _ in fitted], np.array([ms for _, ms in fitted]))
        print(f"batch {batch} coefficients:", {k: f"{v:.3g}" for k, v in fit.coefficients.items()})
        tested = [(f, ms) for b, f, ms in test_rows if b == batch]
        predicted = fit.predict([f for f, _ in tested])
        measured = np.array([ms for _, ms in tested])
        error = np.abs(predicted - measured) / measured
        print(
            f"batch {batch}: fit on {count} models, tested on {len(tested)}: "
            f"median |error| {np.median(error) * 100:.1f}%, max {error.max() * 100:.1f}%"
        )


if __name__ == "__main__":
    sweep() if sys.argv[1] == "sweep" else model(int(sys.argv[2]))
