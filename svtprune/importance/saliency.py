"""Data-driven channel importance: OBS (second order) and Taylor saliency from calibration XᵀX."""

from __future__ import annotations

import numpy as np

from svtprune.graph.analysis import Analysis, Group
from svtprune.importance.calibration import DAMPING, Calibration, activation, full_hessian, nodes_by_name
from svtprune.importance.magnitude import l2_scores


def column_saliency(
    weight_rows: np.ndarray, hessian: np.ndarray, second_order: bool, damping: float = DAMPING
) -> np.ndarray:
    """Per input row j of ``weight_rows`` [C_in, out]: OBS (second order) or Taylor error."""
    norms = (weight_rows.astype(np.float64) ** 2).reshape(weight_rows.shape[0], -1).sum(axis=1)
    diag = np.diag(hessian).copy()
    if not second_order:
        return norms * diag
    damp = damping * max(float(diag.mean()), 1e-12)
    inverse = np.linalg.inv(hessian + damp * np.eye(len(diag)))
    return norms / np.diag(inverse)


def _scores(
    analysis: Analysis, group: Group, weights: dict[str, np.ndarray], calibration: Calibration, second: bool
) -> np.ndarray:
    nodes = nodes_by_name(analysis.model)
    position = {int(c): i for i, c in enumerate(group.channels)}
    total = np.zeros(group.size, dtype=np.float64)
    used = False
    for member in group.members:
        node = nodes.get(member.node)
        spot = activation(node, member) if member.role == "sink" and node is not None else None
        if spot is None or spot[0] not in calibration.hessians:
            continue
        weight = weights[member.initializer]
        rows = np.moveaxis(weight, member.axis, 0) if node.op_type != "Conv" else np.moveaxis(weight, 1, 0)
        hessian = calibration.hessians[spot[0]]
        full = full_hessian(node, weight)
        per_row = column_saliency(rows, hessian if full else np.diag(np.diag(hessian)), second and full)
        for p, atom in enumerate(member.ids.tolist()):
            channel = int(analysis.channel_of_atom[atom])
            if channel in position:
                total[position[channel]] += per_row[p]
                used = True
    return total if used else l2_scores(analysis, group, weights)


def hessian_scores(
    analysis: Analysis, group: Group, weights: dict[str, np.ndarray], calibration: Calibration
) -> np.ndarray:
    return _scores(analysis, group, weights, calibration, second=True)


def taylor_scores(
    analysis: Analysis, group: Group, weights: dict[str, np.ndarray], calibration: Calibration
) -> np.ndarray:
    return _scores(analysis, group, weights, calibration, second=False)


DATA_CRITERIA = {"hessian": hessian_scores, "taylor": taylor_scores}
