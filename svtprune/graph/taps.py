"""Taps: models cut or widened so a run returns inner tensors, the one place such graphs are built.

Importance calibration, the bit search's thaw, the step-wise re-fit, neuron probes and shape probes
all read tensors inside a model; each asks here for the graph that exposes them and runs it through
``runtime.make_session``, so no other module edits a graph in order to read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import helper

from svtprune.runtime import make_session, predict

FLOAT = onnx.TensorProto.FLOAT


def with_outputs(
    model: onnx.ModelProto,
    names: Iterable[str],
    elem_type: int | None = FLOAT,
    types: Mapping[str, int] | None = None,
) -> onnx.ModelProto:
    """A copy whose graph also outputs ``names`` (each once, after the outputs it has).

    Declared as ``types[name]`` or else ``elem_type`` with an open shape; ``elem_type=None``
    declares no type, so ORT infers it (for tensors whose type the caller does not know).
    """
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    present = {o.name for o in tapped.graph.output}
    for name in dict.fromkeys(names):
        if name in present:
            continue
        kind = (types or {}).get(name, elem_type)
        value = onnx.ValueInfoProto(name=name) if kind is None else helper.make_tensor_value_info(name, kind, None)
        tapped.graph.output.append(value)
    return tapped


def upstream_of(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy that computes only ``names`` (its only outputs), keeping just the nodes they depend on."""
    producer = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    needed: set[int] = set()
    stack = list(names)
    while stack:
        index = producer.get(stack.pop())
        if index is None or index in needed:
            continue
        needed.add(index)
        stack.extend(i for i in model.graph.node[index].input if i)
    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    kept = [node for i, node in enumerate(model.graph.node) if i in needed]
    del tapped.graph.node[:]
    tapped.graph.node.extend(kept)
    del tapped.graph.output[:]
    for name in names:
        tapped.graph.output.append(helper.make_tensor_value_info(name, FLOAT, None))
    return tapped


def tap(model: onnx.ModelProto, names: list[str], x: np.ndarray, batch: int | None = None) -> dict[str, np.ndarray]:
    """Values of the (float) tensors ``names`` on ``x``, running only the nodes they depend on."""
    feed = model.graph.input[0].name
    wanted = [n for n in names if n != feed]
    values = {n: x for n in names if n == feed}
    if not wanted:
        return values
    values.update(predict(make_session(upstream_of(model, wanted)), x, batch, outputs=wanted))
    return values


def piece_of(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    inputs: Mapping[str, int],
    outputs: Iterable[str],
    initializers: Iterable[onnx.TensorProto],
) -> onnx.ModelProto:
    """A model of ``nodes`` alone: ``inputs`` (name -> element type) fed, ``outputs`` returned (types inferred).

    Run on its own, so a long graph is computed piece by piece (recover/stepwise.py) or a few
    constant-only nodes are evaluated once (quantization/thaw.py)."""
    graph = helper.make_graph(
        nodes,
        "piece",
        [helper.make_tensor_value_info(name, kind, None) for name, kind in inputs.items()],
        [onnx.ValueInfoProto(name=name) for name in outputs],
        list(initializers),
    )
    piece = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    piece.functions.extend(model.functions)
    return piece
