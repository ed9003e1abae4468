"""Every criterion behind one call: scores for each group of an analysis.

New data-free criteria register in ``CRITERIA`` with the same signature; data-driven ones
(``DATA_DRIVEN``) get the calibration statistics as a fourth argument.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from svtprune.graph.analysis import Analysis, Group, constants_of
from svtprune.importance.calibration import calibrate
from svtprune.importance.magnitude import l1_scores, l2_scores
from svtprune.importance.saliency import DATA_CRITERIA

Criterion = Callable[[Analysis, Group, dict[str, np.ndarray]], np.ndarray]

CRITERIA: dict[str, Criterion] = {"l2": l2_scores, "l1": l1_scores}

DATA_DRIVEN = ("taylor", "hessian")  # need calibration images (svtprune.importance.saliency)


def group_scores(
    analysis: Analysis, criterion: str = "l2", calibration: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Scores for every group (refused ones too, for reports).

    ``calibration`` (images) is needed by the data-driven criteria and ignored by the others."""
    if criterion not in CRITERIA and criterion not in DATA_DRIVEN:
        raise ValueError(f"unknown importance {criterion!r}; choose one of {sorted([*CRITERIA, *DATA_DRIVEN])}")
    weights = constants_of(analysis.model)
    if criterion in DATA_DRIVEN:
        if calibration is None:
            raise ValueError(f"importance {criterion!r} needs calibration images")
        stats = calibrate(analysis, calibration)
        fn = DATA_CRITERIA[criterion]
        return {g.name: fn(analysis, g, weights, stats) for g in analysis.groups}
    return {g.name: CRITERIA[criterion](analysis, g, weights) for g in analysis.groups}
