"""Surgery to fewer time steps: the same model running T' < T steps, its first T' steps unchanged.

Step t of a neuron never depends on a later step, so the T'-step model is the T-step one with
the later steps cut off: the repeat makes T' copies, every constant that spells T (a repeat
count, a reshape target such as ``[4, -1, C, H, W]``) spells T', each Concat of the steps keeps
the first T' of them, a Split into the steps makes T' parts, and whatever read only the later
steps is dead and removed. The time mean (``ReduceMean``) then averages the T' steps, a
``ReduceSum`` over time is divided by T' instead of T, and a raw ``[T, B, classes]`` output
becomes ``[T', B, classes]``.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.spiking.graph_edits import Constants, by_key, copy_of, drop_dead
from svtprune.spiking.time_axis import TimeAxis
from svtprune.spiking.time_tags import Flow


def shorten(model: onnx.ModelProto, axis: TimeAxis, steps: int) -> onnx.ModelProto:
    """``model`` running ``steps`` time steps (1 <= steps < T); its first ``steps`` steps computed as before."""
    check_steps(axis, steps)
    out = copy_of(model)
    nodes = by_key(out)
    cut(out, nodes, Constants(out), axis, steps, set(nodes))
    drop_dead(out)
    check_no_late_steps(out, axis, steps)
    return out


def check_steps(axis: TimeAxis, steps: int) -> None:
    if not 1 <= steps < axis.steps:
        raise UserError(f"must be in [1, {axis.steps - 1}] (the model runs T={axis.steps}), got {steps}", "timesteps")


def cut(
    out: onnx.ModelProto,
    nodes: dict[str, onnx.NodeProto],
    constants: Constants,
    axis: TimeAxis,
    steps: int,
    where: set[str],
) -> None:
    """The edits of the cut to ``steps``, in the nodes ``where`` (what is left dead is for the caller to drop)."""
    retime(nodes, constants, axis.flow, steps, where)
    sites = axis.flow.sites
    for name in sites.stacks:
        del nodes[name].input[steps:]
    for name in set(sites.splits) & where:
        _cut_split(nodes[name], constants, steps)
    for name, scale in sites.sums:
        _rescale(nodes[scale], name, constants, axis.steps, steps)
    for value in out.graph.output:
        if value.name in sites.outputs:
            dim = value.type.tensor_type.shape.dim[sites.outputs[value.name]]
            if dim.HasField("dim_value"):
                dim.dim_value = dim.dim_value // axis.steps * steps


def check_no_late_steps(out: onnx.ModelProto, axis: TimeAxis, steps: int) -> None:
    """Only the Concats of the steps read the later steps; anything else that does would need them."""
    sites = axis.flow.sites
    late = [name for name, t in sites.steps.items() if t >= steps and name in by_key(out)]
    if late:
        raise UserError(f"cannot cut the time axis: {late[0]!r} reads step {sites.steps[late[0]]} for the output")


def retime(nodes: dict[str, onnx.NodeProto], constants: Constants, flow: Flow, steps: int, where: set[str]) -> None:
    """Constants that spell T (repeat counts, reshape targets, T-long operands) spell ``steps``, in nodes ``where``."""
    edits: dict[tuple[str, int], list] = {}
    for edit in flow.sites.edits:
        if edit.node in where:
            edits.setdefault((edit.node, edit.index), []).append(edit)
    for (name, index), group in edits.items():
        node = nodes[name]
        value = constants.values[node.input[index]].copy()
        flat = value.reshape(-1)
        for edit in group:
            flat[edit.position] = edit.value // flow.steps * steps
        constants.replace(node, index, value, f"T{steps}")
    for name in flow.sites.repeats:
        if name in where and nodes[name].op_type == "Concat":
            del nodes[name].input[steps:]
    for name, index, at in flow.sites.constants:
        if name in where:
            node = nodes[name]
            value = constants.values[node.input[index]]
            keep = value.shape[at] // flow.steps * steps
            constants.replace(node, index, np.take(value, np.arange(keep), axis=at), f"T{steps}")


def _cut_split(node: onnx.NodeProto, constants: Constants, steps: int) -> None:
    """A Split into the T steps makes only the first ``steps`` parts."""
    if len(node.input) > 1 and node.input[1]:
        sizes = constants.values[node.input[1]]
        constants.replace(node, 1, sizes[:steps].copy(), f"T{steps}")
    for attr in node.attribute:
        if attr.name == "num_outputs":
            attr.i = steps
        elif attr.name == "split":  # opset < 13
            del attr.ints[steps:]
    del node.output[steps:]


def _rescale(node: onnx.NodeProto, summed: str, constants: Constants, before: int, steps: int) -> None:
    """The Div by T (or Mul by 1/T) after a ReduceSum over time divides by ``steps``."""
    index = 1 if node.input[0] == summed else 0
    value = constants.values[node.input[index]]
    scaled = value / before * steps if node.op_type == "Div" else value * before / steps
    constants.replace(node, index, scaled.astype(value.dtype), f"T{steps}")
