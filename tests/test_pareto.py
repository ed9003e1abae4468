"""The trade-offs a search explored (issue 17 item 2): the front of its measured candidates.

Oracle for the front: the definition checked pair by pair on random points (a point is on it
when no other point is at least as good on both criteria and better on one).
"""

from __future__ import annotations

import numpy as np
import pytest

from svtprune.search.pareto import explored, non_dominated


@pytest.mark.parametrize("seed", range(5))
def test_the_front_is_every_point_nothing_beats(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = [{"param_bytes": int(b), "accuracy_drop": float(d)}
              for b, d in zip(rng.integers(1, 20, 40), rng.integers(-3, 6, 40), strict=True)]  # fmt: skip
    front = non_dominated(points)
    beaten = {
        (p["param_bytes"], p["accuracy_drop"])
        for p in points
        for q in points
        if q["param_bytes"] <= p["param_bytes"] and q["accuracy_drop"] <= p["accuracy_drop"]
        and (q["param_bytes"], q["accuracy_drop"]) != (p["param_bytes"], p["accuracy_drop"])
    }  # fmt: skip
    expected = sorted({(p["param_bytes"], p["accuracy_drop"]) for p in points} - beaten)
    assert [(p["param_bytes"], p["accuracy_drop"]) for p in front] == expected
    drops = [p["accuracy_drop"] for p in front]
    assert drops == sorted(drops, reverse=True)  # more bytes buy strictly less drop along the front


def test_only_candidates_measured_on_every_image_stand_on_the_front() -> None:
    report = {
        "command": "compress",
        "original": {"accuracy_search": 90.0, "accuracy_judged": 91.0, "param_bytes": 1000},
        "compressed": {"param_bytes": 400, "accuracy": 90.5},
        "evaluations": [
            {"label": "lucky screen", "param_bytes": 300, "accuracy": 95.0, "images": 256},
            {"label": "whole split", "param_bytes": 600, "accuracy": 90.5, "images": 900},
        ],
        "quantization": {"evaluations": [{"label": "bits", "param_bytes": 200, "accuracy": 89.0, "images": 1000}]},
    }
    section = explored(report)
    assert [p["label"] for p in section["candidates"]] == ["lucky screen", "whole split", "bits"]
    assert [p["label"] for p in section["front"]] == ["bits", "whole split"]
    drops = {p["label"]: p["accuracy_drop"] for p in section["candidates"]}
    assert drops == {"lucky screen": -4.0, "whole split": 0.5, "bits": 1.0}  # each against its stage's baseline
    assert section["files"]["compressed"]["param_bytes"] == 400
