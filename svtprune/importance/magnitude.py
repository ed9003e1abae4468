"""Data-free channel importance: the L2 (the papers' criterion) or L1 norm of a channel's filters.

Coupled channels (a residual stream fed by several layers) sum the squared norms of every producer.
"""

from __future__ import annotations

import numpy as np

from svtprune.graph.analysis import Analysis, Group


def filter_norms(analysis: Analysis, group: Group, weights: dict[str, np.ndarray], power: int) -> np.ndarray:
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
    return np.sqrt(filter_norms(analysis, group, weights, 2))


def l1_scores(analysis: Analysis, group: Group, weights: dict[str, np.ndarray]) -> np.ndarray:
    return filter_norms(analysis, group, weights, 1)
