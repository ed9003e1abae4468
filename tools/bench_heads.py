"""Whole attention heads vs the same number of channels inside every head (issue 7).

python tools/bench_heads.py   # reference Spikformer; re-fit on val[:128]; accuracy on val[2000:4000]

For each attention group alone, and for both together: drop the k lowest-L2 heads, or cut the same
share of channels inside every head; both with the least-squares re-fit compress uses, and both
timed with ORT (fastest of 30 runs at batch 1, 5 at batch 64, one thread).
"""

from __future__ import annotations

import numpy as np

from svtprune.data import load_npz
from svtprune.evaluate import top1
from svtprune.graph.analysis import analyze
from svtprune.graph.io import load_model, param_bytes
from svtprune.graph.plan import Plan, head_units, kept_for_ratio
from svtprune.importance import group_scores
from svtprune.runtime import logits_of, make_session, measured_latency
from svtprune.search.prune_executor import PruneExecutor as Executor

REFERENCE = "models/reference/spikformer_fmnist.onnx"
DATA = "models/data/fashion_mnist_val.npz"


class HeadExecutor(Executor):
    """Plans where some groups lose whole heads instead of a share of every head."""

    heads: dict[str, int]

    def plan_for(self, ratios: dict[str, float]) -> Plan:
        plan = super().plan_for(ratios)
        for group in self.analysis.prunable_groups:
            if self.heads.get(group.name):
                plan.kept[group.name] = kept_for_ratio(
                    self.analysis, group, 0.0, self.scores[group.name], drop_heads=self.heads[group.name]
                )
        return plan


def main() -> None:
    model = load_model(REFERENCE)
    data = load_npz(DATA)
    analysis = analyze(model)
    attention = [g for g in analysis.prunable_groups if g.head_rows]
    heads = {g.name: len(head_units(analysis, g)) for g in attention}
    x, y = data.x[2000:4000], data.y[2000:4000]
    executor = HeadExecutor(
        analysis, group_scores(analysis, "l2"), data, data.y, param_bytes(model), calibration=data.x[:128]
    )
    base = top1(logits_of(make_session(model), x), y)
    b1, b64 = measured_latency(model)
    print(f"original: {base:.2f}%, {b1:.2f} ms / {b64:.1f} ms; heads {heads}", flush=True)
    settings = [[g.name] for g in attention] + [[g.name for g in attention]]
    for names in settings:
        for drop in (1, 2):
            for form in ("whole heads", "inside heads"):
                share = drop / min(heads[n] for n in names)
                executor.heads = {n: drop for n in names} if form == "whole heads" else {}
                ratios = {} if form == "whole heads" else {n: share for n in names}
                pruned = executor.build(ratios)
                accuracy = top1(logits_of(make_session(pruned), x), y)
                p1, p64 = measured_latency(pruned)
                print(
                    f"{'+'.join(names)} {form} {share:.0%}: {accuracy:.2f}% ({accuracy - base:+.2f}), "
                    f"saved {1 - param_bytes(pruned) / param_bytes(model):.1%}, "
                    f"{b1 / p1:.3f}x / {b64 / p64:.3f}x",
                    flush=True,
                )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
