"""Calibration statistics for the data-driven criteria (``svtprune.importance.saliency``).

For every weighted consumer (a sink member: Conv/MatMul reading the group's channels) we
accumulate H = XᵀX of its input over calibration data, channels as columns. Removing input
column j of the consumer's weight W (rows = input channels):

* ``hessian`` (OBS): the smallest output error reachable when the remaining columns are
  updated optimally, ||X W - X' W'||² = ||w_j||² / [H⁻¹]_jj (exact for one column).
* ``taylor`` (gradient-free, first order in the removed weights): the output error with no
  compensation, ||X_j w_j||² = H_jj ||w_j||².

Scores of coupled consumers add up per channel. Convs with kernels > 1 or groups use the
diagonal (their im2col Hessian would be k² times larger); a group without a weighted consumer
falls back to L2 so it is never ranked as worthless by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from svtprune.graph.analysis import Analysis, Member
from svtprune.graph.taps import with_outputs
from svtprune.runtime import batches, make_session

DAMPING = 1e-6  # relative to mean(diag H): keeps H invertible when a channel never fires


@dataclass
class Calibration:
    """Per activation tensor: H = XᵀX over calibration rows (channels last)."""

    hessians: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0


def nodes_by_name(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def activation(node: onnx.NodeProto, member: Member) -> tuple[str, int] | None:
    """(activation tensor, its channel axis) a sink weight multiplies, or None if unsupported."""
    if node.op_type == "Conv" and member.input_index == 1:
        return node.input[0], 1
    if node.op_type in ("MatMul", "Gemm") and member.input_index == 1 and member.axis == 0:
        if node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute):
            return None
        return node.input[0], -1
    return None


def full_hessian(node: onnx.NodeProto, weight: np.ndarray) -> bool:
    if node.op_type != "Conv":
        return True
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    return groups == 1 and int(np.prod(weight.shape[2:])) == 1


def wanted_activations(analysis: Analysis) -> dict[str, int]:
    nodes = nodes_by_name(analysis.model)
    wanted: dict[str, int] = {}
    for group in analysis.groups:
        for member in group.members:
            spot = activation(nodes[member.node], member) if member.role == "sink" else None
            if spot is not None:
                wanted[spot[0]] = spot[1]
    return wanted


def calibrate(analysis: Analysis, x: np.ndarray, batch: int = 64) -> Calibration:
    """Run the normalised model on ``x`` once and accumulate XᵀX for every consumer input."""
    wanted = wanted_activations(analysis)
    session = make_session(with_outputs(analysis.model, wanted, elem_type=None), env_threads=False)
    names = list(wanted)
    calibration = Calibration()
    for values in batches(session, x, batch, names):
        for name, value in values.items():
            rows = np.moveaxis(value.astype(np.float64), wanted[name], -1).reshape(-1, value.shape[wanted[name]])
            h = rows.T @ rows
            calibration.hessians[name] = calibration.hessians.get(name, 0) + h
    calibration.rows += len(x)
    return calibration
