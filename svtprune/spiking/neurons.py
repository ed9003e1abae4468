"""Find spiking neurons in any exported graph by their pattern, and tap their membranes.

A neuron fires where a comparison against a constant threshold (``GreaterOrEqual``,
``Greater``; ``Less`` forms mirrored) turns into a float spike (``Cast`` or ``Where``). The
compared tensor, peeled of threshold subtractions, is the membrane potential. Time steps
of one neuron are tied by the reset path: elementwise arithmetic from one step's spike or
membrane into the next step's membrane. Nothing here depends on node names, so graphs
from either torch exporter, or hand-written neurons, are recognised the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from svtprune.graph.io import attribute
from svtprune.graph.taps import with_outputs

FIRE_OPS = {"GreaterOrEqual", "Greater", "Less", "LessOrEqual"}
STATE_OPS = {"Add", "Sub", "Mul", "Div", "Neg", "Cast", "Where", "Identity", "Max", "Min", "Clip"}
Constants = dict[str, np.ndarray]
Producers = dict[str, onnx.NodeProto]


@dataclass
class Neuron:
    """One spiking layer: its time steps in order, membrane and spike tensor of each."""

    name: str
    membranes: list[str] = field(default_factory=list)
    spikes: list[str] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    feeds_from: str = ""  # the weighted node whose output charges it (for reports)

    @property
    def time_steps(self) -> int:
        return len(self.spikes)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers and Constant-node tensors by name (thresholds may be either)."""
    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        value = attribute(node, "value") if node.op_type == "Constant" else None
        if value is not None:
            values[node.output[0]] = numpy_helper.to_array(value)
    return values


def _scalar(value: np.ndarray | None) -> float | None:
    if value is None or value.size != 1:
        return None
    return float(value.ravel()[0])


def find_neurons(model: onnx.ModelProto) -> list[Neuron]:
    """Every neuron in the graph, in execution order, named neuron_0, neuron_1, ..."""
    consts = _constants(model)
    producer = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    fires = []
    for node in model.graph.node:
        found = _match_fire(node, consts, producer, consumers)
        if found is not None:
            fires.append(found)
    return _cluster(fires, producer, consts)


def _match_fire(
    node: onnx.NodeProto, consts: Constants, producer: Producers, consumers: dict[str, list[onnx.NodeProto]]
) -> tuple[str, str, float] | None:
    """(membrane, spike, threshold) when ``node`` is the comparison of a neuron."""
    if node.op_type not in FIRE_OPS or len(node.input) != 2:
        return None
    a, b = node.input
    threshold = _scalar(consts.get(b))
    compared = a
    if threshold is None:
        threshold, compared = _scalar(consts.get(a)), b
        if threshold is None:
            return None
    spike = None
    for user in consumers.get(node.output[0], []):
        if user.op_type == "Cast" and helper.get_attribute_value(user.attribute[0]) == onnx.TensorProto.FLOAT:
            spike = user.output[0]
        elif user.op_type == "Where" and user.input[0] == node.output[0]:
            if _scalar(consts.get(user.input[1])) is not None and _scalar(consts.get(user.input[2])) is not None:
                spike = user.output[0]  # Where(fire, 1, 0): a spike; Where(mask, x, y) is not
    if spike is None:
        return None
    # peel threshold subtractions: GreaterOrEqual(v - 1.0, 0.0) fires at v >= 1.0
    source = producer.get(compared)
    while source is not None and source.op_type in ("Sub", "Add") and _scalar(consts.get(source.input[1])) is not None:
        shift = _scalar(consts.get(source.input[1]))
        threshold += shift if source.op_type == "Sub" else -shift
        compared = source.input[0]
        source = producer.get(compared)
    return compared, spike, threshold


def _cluster(fires: list[tuple[str, str, float]], producer: Producers, consts: Constants) -> list[Neuron]:
    """Fires tied by reset arithmetic into one neuron each, numbered in execution order."""
    owner = {}
    for index, (membrane, spike, _) in enumerate(fires):
        owner[membrane] = index
        owner[spike] = index
    parent = list(range(len(fires)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for index, (membrane, _, _) in enumerate(fires):
        for earlier in _state_ancestors(membrane, producer, consts, owner):
            if earlier != index:
                parent[find(index)] = find(earlier)
    neurons: dict[int, Neuron] = {}
    for index, (membrane, spike, threshold) in enumerate(fires):
        neuron = neurons.setdefault(find(index), Neuron(name=""))
        neuron.membranes.append(membrane)
        neuron.spikes.append(spike)
        neuron.thresholds.append(threshold)
    ordered = list(neurons.values())
    for number, neuron in enumerate(ordered):
        neuron.name = f"neuron_{number}"
        neuron.feeds_from = _weighted_ancestor(neuron.membranes[0], producer)
    return ordered


def _state_ancestors(start: str, producer: Producers, consts: Constants, owner: dict[str, int]) -> set[int]:
    """Fire indices reached backwards from a membrane through elementwise state arithmetic."""
    found, stack, seen = set(), [start], {start}
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.op_type not in STATE_OPS:
            continue
        for name in node.input:
            if name in owner and name != start:
                found.add(owner[name])
            if name and name not in seen and name not in consts:
                seen.add(name)
                stack.append(name)
    return found


def _weighted_ancestor(start: str, producer: Producers) -> str:
    """The nearest Conv/MatMul/Gemm upstream of ``start`` (breadth first), named for reports."""
    stack, seen = [start], {start}
    while stack:
        node = producer.get(stack.pop(0))
        if node is None:
            continue
        if node.op_type in ("Conv", "MatMul", "Gemm"):
            return node.name or node.output[0]
        for name in node.input:
            if name and name not in seen:
                seen.add(name)
                stack.append(name)
    return ""


def with_taps(model: onnx.ModelProto, neurons: list[Neuron], spikes: bool = False) -> onnx.ModelProto:
    """A copy whose extra graph outputs are every membrane (and spike) tensor, per time step."""
    return with_outputs(model, [name for n in neurons for name in n.membranes + (n.spikes if spikes else [])])
