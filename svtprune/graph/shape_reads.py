"""Where a dim read at run time goes: into a shape (safe) or into arithmetic (not once channels shrink).

``Expand(value, Shape(x))`` (a fixed-batch-free ``full_like``), ``ConstantOfShape`` and a Reshape
target built from ``Shape(x)`` all follow a pruned width by themselves. A read dim that becomes a
number (``Cast -> Sqrt -> Div``: an attention scale from the head size) would mean something else
after pruning; the channels on that dim are refused (``PropagationState.read_shape``).
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.labels import PropagationState, ShapeRead

SHAPE_SINKS = {("Expand", 1), ("ConstantOfShape", 0), ("Reshape", 1)}  # (op, input index) that take a shape
CARRIERS = {"Concat", "Unsqueeze", "Squeeze", "Identity"}  # keep a shape vector a shape vector
PICKERS = {"Gather", "Slice"}  # pick dims out of a shape vector


def follow_shape_reads(state: PropagationState, node: onnx.NodeProto) -> None:
    """Carry shape vectors through shape plumbing; any other use reads the dims they hold."""
    reads = [(i, state.shape_reads[n]) for i, n in enumerate(node.input) if n in state.shape_reads]
    if not reads:
        return
    if node.op_type in PICKERS and reads[0][0] == 0:
        state.shape_reads[node.output[0]] = _picked(state, node, reads[0][1])
        return
    if node.op_type in CARRIERS:
        state.shape_reads[node.output[0]] = [r for _, entries in reads for r in entries]
        return
    for index, _ in reads:
        if (node.op_type, index) not in SHAPE_SINKS:
            state.read_shape(node.input[index])


def _picked(state: PropagationState, node: onnx.NodeProto, entries: list[ShapeRead]) -> list[ShapeRead]:
    """The dims a constant Gather or Slice selects from a one-source shape vector (else all of them)."""
    consts = [state.constants.get(n) if n else None for n in node.input[1:]]
    if len(entries) != 1 or any(c is None for c in consts[: 1 if node.op_type == "Gather" else 2]):
        return entries
    read = entries[0]
    if node.op_type == "Gather":
        axes = tuple(read.axes[int(i)] for i in np.ravel(consts[0]))
    else:
        step = int(np.ravel(consts[3])[0]) if len(consts) > 3 and consts[3] is not None else 1
        axes = read.axes[slice(int(np.ravel(consts[0])[0]), int(np.ravel(consts[1])[0]), step)]
    return [ShapeRead(read.node, read.tensor, tuple(axes))]
