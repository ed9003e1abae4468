"""Small edits of an ONNX graph that both time rewrites (fewer steps, computing the copies once) make.

Constants are never changed in place: another node may read the same constant in a place
that has nothing to do with time (``[4, -1, ...]`` can be a head count), so each edited
constant becomes a new initializer read by the edited node only.
"""

from __future__ import annotations

import heapq

import numpy as np
import onnx
from onnx import numpy_helper

from svtprune.graph.analysis import constants_of


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]  # shapes change: ORT and shape inference recompute them
    return out


def by_key(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Nodes by their first output (the key ``time_flow`` names nodes by)."""
    return {node.output[0]: node for node in model.graph.node}


class Constants:
    """Reads a model's constants and adds edited copies as new initializers (unique names)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.values = constants_of(model)
        self.made: dict[tuple, str] = {}
        self.names = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}

    def add(self, value: np.ndarray, base: str) -> str:
        """A new initializer holding ``value``, named ``base`` (or ``base_1``, ... when taken); its name."""
        name, count = base, 1
        while name in self.names:
            name, count = f"{base}_{count}", count + 1
        self.names.add(name)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self.values[name] = np.asarray(value)
        return name

    def replace(self, node: onnx.NodeProto, index: int, value: np.ndarray, tag: str) -> None:
        """Input ``index`` of ``node`` becomes a constant holding ``value`` (one per source and value)."""
        value = np.asarray(value)
        found = (node.input[index], tag, value.dtype.str, value.shape, value.tobytes())
        if found not in self.made:
            self.made[found] = self.add(value, f"{node.input[index]}_{tag}")
        node.input[index] = self.made[found]


def rename_inputs(model: onnx.ModelProto, renamed: dict[str, str]) -> None:
    """Every read of a tensor in ``renamed`` (by nodes and graph outputs) reads its new name instead."""
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for value in model.graph.output:
        if value.name in renamed:  # an output keeps its name: an Identity gives it the new tensor
            model.graph.node.append(onnx.helper.make_node("Identity", [renamed[value.name]], [value.name]))


def drop_dead(model: onnx.ModelProto) -> None:
    """Remove nodes no output needs, then the initializers nothing reads."""
    needed = {o.name for o in model.graph.output}
    kept = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    used = [t for t in model.graph.initializer if t.name in needed]
    del model.graph.initializer[:]
    model.graph.initializer.extend(used)


def sort_nodes(model: onnx.ModelProto) -> None:
    """Order the nodes topologically (ONNX requires it), keeping the present order wherever it is one.

    Rewrites append the nodes they add; this puts each right where its inputs exist."""
    nodes = list(model.graph.node)
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    waiting = [0] * len(nodes)
    readers: dict[int, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in set(node.input):
            if name in producer and producer[name] != i:
                waiting[i] += 1
                readers.setdefault(producer[name], []).append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for reader in readers.get(i, []):
            waiting[reader] -= 1
            if waiting[reader] == 0:
                heapq.heappush(ready, reader)
    if len(order) != len(nodes):
        raise ValueError("the rewritten graph has a cycle")
    del model.graph.node[:]
    model.graph.node.extend(order)
