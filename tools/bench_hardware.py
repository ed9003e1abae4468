"""Benchmarks for issue 7: latency steps with width, latency-model fit and its error on pruned models.

python tools/bench_hardware.py sweep     # 1x1 Conv at widths 256..241, batch 1 x T=4 rows
python tools/bench_hardware.py model N   # fit on conv timings, predict N random pruned Spikformers
"""

from __future__ import annotations

import sys

import numpy as np

from svtprune.graph.analysis import analyze, constants_of
from svtprune.graph.io import load_model
from svtprune.graph.plan import uniform_plan
from svtprune.graph.surgery import prune
from svtprune.hardware.latency import fit_latency_model, time_model, width_sweep
from svtprune.importance import group_scores

REFERENCE = "models/reference/spikformer_fmnist.onnx"


def sweep() -> None:
    for width, ms in width_sweep(256, 18, 256, 49, 4):
        print(f"width {width}: {ms:.4f} ms")


def whole_model_costs(model) -> tuple[float, float]:  # noqa: ANN001
    """Weighted-op MACs and weight bytes of a whole model at batch 1."""
    from svtprune.hardware.energy import measure_energy

    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    report = measure_energy(model, x)
    weights = sum(v.nbytes for v in constants_of(model).values())
    return report.total_macs, float(weights)


def model(count: int) -> None:
    rng = np.random.default_rng(0)
    base = load_model(REFERENCE)
    analysis = analyze(base)
    scores = group_scores(analysis, "l2")
    x = np.random.default_rng(1).normal(size=(1, 1, 28, 28)).astype(np.float32)
    ratios = rng.uniform(0.0, 0.8, size=count)
    rows = []
    for ratio in ratios:
        pruned = prune(analysis, uniform_plan(analysis, float(ratio), scores))
        macs, nbytes = whole_model_costs(pruned)
        rows.append((ratio, macs, nbytes, time_model(pruned, {pruned.graph.input[0].name: x}, 10)))
    rows = np.array(rows)
    half = len(rows) // 2
    fit = fit_latency_model(rows[:half, 1], rows[:half, 2], rows[:half, 3])
    pred = fit.predict(rows[half:, 1], rows[half:, 2])
    err = np.abs(pred - rows[half:, 3]) / rows[half:, 3]
    for r, p in zip(rows[half:], pred, strict=True):
        print(f"ratio {r[0]:.2f}: measured {r[3]:.2f} ms, predicted {p:.2f} ms")
    print(
        f"fit on {half}, tested on {len(rows) - half}: "
        f"median |error| {np.median(err) * 100:.1f}%, max {err.max() * 100:.1f}%"
    )


if __name__ == "__main__":
    sweep() if sys.argv[1] == "sweep" else model(int(sys.argv[2]))
