"""An exact speed-up: the layers before the first neuron run once per image instead of T times.

A static-image SViT repeats the image T times and runs the stem (convolutions, BatchNorm, the
reshapes that fold T into the batch) on T identical copies. Every tensor tagged
``Timed(replicated=True)`` holds T equal copies; this rewrite computes those at one copy
(the constants that spell T spell 1 there) and gives each reader what it read before:
- a read of one step (Slice / Gather / Split into the steps) reads the single copy,
- ``Shape`` reads the single copy's shape with its time axis scaled back by T,
- anything else reads the single copy tiled T times (the repeat moved to where it is needed).
Shapes computed at run time from the copies (TorchScript exports) are recomputed from the single
copy for the layers that now run once. Every layer does the same arithmetic per image, so the
outputs are the original's bit for bit on every model tested (ORT's CPU kernels compute each
image of a batch alike); tests/test_time_axis.py checks it.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from svtprune.spiking.graph_edits import Constants, by_key, copy_of, drop_dead, rename_inputs, sort_nodes
from svtprune.spiking.time_axis import TimeAxis
from svtprune.spiking.time_tags import META, Flow, Timed
from svtprune.spiking.timesteps import check_no_late_steps, check_steps, cut, retime, shorten

SUFFIX = "/once"
NOTHING = "nothing runs on the image's copies before the first neuron"
SHAPING = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Expand", "Tile", "Concat", "Transpose"}


def compute_once(model: onnx.ModelProto, axis: TimeAxis, steps: int | None = None) -> tuple[onnx.ModelProto, str]:
    """``model`` with its layers before the first neuron run once per image, and a line saying what moved.

    With ``steps`` < T, also the cut to ``steps`` time steps (``timesteps.shorten``), from the same analysis
    (at T' = 1 a time axis of length 1 can no longer be told from any other axis, so it is not re-read).
    Returns ``model`` itself (and the reason) when nothing before the first neuron can run once."""
    flow = axis.flow
    steps = axis.steps if steps is None else steps
    region = {node.output[0] for node in model.graph.node if _replicated(flow.tags, node)}
    work = [node for node in model.graph.node if node.output[0] in region]
    if not any(node.output[0] not in flow.sites.repeats for node in work):
        return (model if steps == axis.steps else shorten(model, axis, steps)), NOTHING
    out = copy_of(model)
    nodes, constants = by_key(out), Constants(out)
    if steps != axis.steps:
        check_steps(axis, steps)
        cut(out, nodes, constants, axis, steps, set(nodes) - region)
    retime(nodes, constants, flow, 1, region)
    once = {o: o + SUFFIX for name in region for o in nodes[name].output}
    clones = _MetaClones(out, flow.tags, once)
    for name in region:
        node = nodes[name]
        for i, tensor in enumerate(node.input):
            if tensor in once:
                node.input[i] = once[tensor]
            elif flow.tags.get(tensor) == META:
                node.input[i] = clones.once(tensor)
        node.output[:] = [once[o] for o in node.output]
        if node.op_type == "Tile" and name in flow.sites.repeats:
            _drop_if_ones(node, constants)
    if clones.refused:
        return (model if steps == axis.steps else shorten(model, axis, steps)), clones.refused
    added, renamed = _readers(out, region, once, flow, steps, constants)
    out.graph.node.extend(clones.added + added)
    rename_inputs(out, renamed)
    sort_nodes(out)  # the added nodes were appended
    drop_dead(out)
    if steps != axis.steps:
        check_no_late_steps(out, axis, steps)
    moved = sum(1 for node in work if node.op_type not in SHAPING)
    if steps == 1:
        return out, f"{moved} layers before the first neuron run once (at one time step they did already)"
    return out, f"{moved} layers before the first neuron run once per image instead of {steps} times"


def _replicated(tags: dict, node: onnx.NodeProto) -> bool:
    return all(isinstance(tags.get(o), Timed) and tags[o].replicated for o in node.output if o)


def _drop_if_ones(node: onnx.NodeProto, constants: Constants) -> None:
    """A repeat that now makes one copy is an Identity (which ORT removes)."""
    if np.all(constants.values[node.input[1]] == 1):
        node.op_type = "Identity"
        del node.input[1:]


def _readers(
    model: onnx.ModelProto, region: set[str], once: dict[str, str], flow: Flow, steps: int, constants: Constants
) -> tuple[list[onnx.NodeProto], dict[str, str]]:
    """What each reader outside the region reads instead of the T copies: new nodes and renamed tensors."""
    added: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}
    tiled: set[str] = set()
    for node in [n for n in model.graph.node if n.output[0] not in region]:
        for i, tensor in enumerate(node.input):
            if tensor not in once:
                continue
            single, tag, rank = once[tensor], flow.tags[tensor], len(flow.shapes[tensor])
            if i == 0 and (node.output[0] in flow.sites.steps or node.output[0] in flow.sites.splits):
                if node.op_type == "Gather":  # step t of equal copies is copy 0
                    node.input[0] = single
                    constants.replace(node, 1, np.zeros((), constants.values[node.input[1]].dtype), "once")
                else:  # a Slice of one step has the single copy's shape, and so has each part of a Split
                    renamed.update({o: single for o in node.output})
            elif node.op_type == "Shape":
                node.input[0] = single
                added.append(_scaled_shape(node, tag, rank, steps, constants))
            elif tensor not in tiled:
                tiled.add(tensor)
                added.append(_tile(single, tensor, tag.axis, rank, steps, constants))
    for value in model.graph.output:
        if value.name in once and value.name not in tiled:
            tag, rank = flow.tags[value.name], len(flow.shapes[value.name])
            added.append(_tile(once[value.name], value.name, tag.axis, rank, steps, constants))
    return added, renamed


def _tile(single: str, full: str, axis: int, rank: int, steps: int, constants: Constants) -> onnx.NodeProto:
    repeats = np.ones(rank, dtype=np.int64)
    repeats[axis] = steps
    name = constants.add(repeats, f"{full}_repeats")
    return helper.make_node("Tile", [single, name], [full], name=f"{full}/tile")


def _scaled_shape(node: onnx.NodeProto, tag: Timed, rank: int, steps: int, constants: Constants) -> onnx.NodeProto:
    """``Shape`` of the single copy, renamed, and a Mul that puts T back on its time axis."""
    scale = np.ones(rank, dtype=np.int64)
    scale[tag.axis] = steps
    start, end = _attr(node, "start", 0), _attr(node, "end", rank)
    factor = constants.add(scale[slice(start, end)], f"{node.output[0]}_time")
    full = node.output[0]
    node.output[0] = full + "/single"
    return helper.make_node("Mul", [node.output[0], factor], [full], name=f"{full}/time")


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


class _MetaClones:
    """Shapes computed at run time from the copies, recomputed from the single copy (for the region)."""

    def __init__(self, model: onnx.ModelProto, tags: dict, once: dict[str, str]) -> None:
        self.tags, self.once_names = tags, once
        self.producer = {o: node for node in model.graph.node for o in node.output}
        self.made: dict[str, str] = {}
        self.added: list[onnx.NodeProto] = []
        self.refused = ""

    def once(self, tensor: str) -> str:
        if tensor in self.once_names:
            return self.once_names[tensor]
        if self.tags.get(tensor) != META:
            return tensor
        if tensor not in self.made:
            node = self.producer[tensor]
            if node.op_type == "Shape" and node.input[0] not in self.once_names:
                self.refused = "a shape computed at run time reads a tensor after the first neuron"
            inputs, outputs = [self.once(i) for i in node.input], [o + SUFFIX for o in node.output]
            clone = helper.make_node(node.op_type, inputs, outputs)
            clone.attribute.extend(node.attribute)
            clone.name = (node.name or node.output[0]) + SUFFIX
            self.made.update({o: o + SUFFIX for o in node.output})
            self.added.append(clone)
        return self.made[tensor]
