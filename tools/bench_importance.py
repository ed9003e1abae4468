"""Accuracy of l2 / taylor / hessian importance at equal memory (uniform plan, no reconstruction).

python tools/bench_importance.py 0.1 0.25 0.5   # ratios; calibration = first 256 val images, accuracy on val[2000:4000]
"""

import sys
import time

from svtprune.data import load_npz
from svtprune.evaluate import top1
from svtprune.graph.analysis import analyze
from svtprune.graph.io import load_model, param_bytes
from svtprune.graph.plan import uniform_plan
from svtprune.graph.surgery import prune
from svtprune.importance import group_scores
from svtprune.runtime import logits_of, make_session

m = load_model("models/reference/spikformer_fmnist.onnx")
d = load_npz("models/data/fashion_mnist_val.npz")
calib, xe, ye = d.x[:256], d.x[2000:4000], d.y[2000:4000]
a = analyze(m)
for ratio in [float(r) for r in sys.argv[1:]]:
    for crit in ("l2", "taylor", "hessian"):
        t = time.time()
        s = group_scores(a, crit, calibration=calib)
        p = prune(a, uniform_plan(a, ratio, s))
        acc = top1(logits_of(make_session(p, threads=1), xe), ye)
        print(
            f"ratio={ratio} {crit}: saving={1 - param_bytes(p) / param_bytes(m):.3f} acc={acc:.1f}",
            flush=True,
        )
