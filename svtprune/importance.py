"""Channel importance: how much each channel of a group is worth keeping.

The papers' criterion is the L2 norm of a channel's filters; coupled channels (a residual
stream fed by several layers) sum the squared norms of every producer. New criteria
register in ``CRITERIA`` with the same signature.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from svtprune.graph.analysis import Analysis, Group, constants_of

Criterion = Callable[[Analysis, Group, dict[str, np.ndarray]], np.ndarray]


def _filter_norms(analysis: Analysis, group: Group, weights: dict[str, np.ndarray], power: int) -> np.ndarray:
    position = {int(c): i for i, c in enumerate(group.channels)}
    total = np.zeros(group.size, dtype=np.float64)
    for member in group.members:
        if member.role != "source":
            continue
        tensor = np.moveaxis(weights[member.initializer].astype(np.float64), member.axis, 0)
        per_slice = (np.abs(tensor) ** power).reshape(tensor.shape[0], -1).sum(axis=1)
        for p, atom in enumerate(member.ids.tolist()):
            channel = int(analysis.channel_of_atom[atom])
            if channel in position:
                total[position[channel]] += per_slice[p]
    return total


def l2_scores(analysis: Analysis, group: Group, weights: dict[str, np.ndarray]) -> np.ndarray:
    return np.sqrt(_filter_norms(analysis, group, weights, 2))


def l1_scores(analysis: Analysis, group: Group, weights: dict[str, np.ndarray]) -> np.ndarray:
    return _filter_norms(analysis, group, weights, 1)


CRITERIA: dict[str, Criterion] = {"l2": l2_scores, "l1": l1_scores}


DATA_DRIVEN = ("taylor", "hessian")  # need calibration images (svtprune.importance_data)


def group_scores(
    analysis: Analysis, criterion: str = "l2", calibration: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Scores for every group (refused ones too, for reports).

    ``calibration`` (images) is needed by the data-driven criteria and ignored by the others."""
    if criterion not in CRITERIA and criterion not in DATA_DRIVEN:
        raise ValueError(f"unknown importance {criterion!r}; choose one of {sorted([*CRITERIA, *DATA_DRIVEN])}")
    weights = constants_of(analysis.model)
    if criterion in DATA_DRIVEN:
        from svtprune import importance_data

        if calibration is None:
            raise ValueError(f"importance {criterion!r} needs calibration images")
        stats = importance_data.calibrate(analysis, calibration)
        fn = importance_data.DATA_CRITERIA[criterion]
        return {g.name: fn(analysis, g, weights, stats) for g in analysis.groups}
    return {g.name: CRITERIA[criterion](analysis, g, weights) for g in analysis.groups}
