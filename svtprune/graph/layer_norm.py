"""A LayerNorm over pruned channels, written so that it still counts the removed ones as zeros.

The oracle keeps the original LayerNormalization and zeroes the removed channels (their inputs,
scale and bias): its mean and variance run over all C channels, C - C' of them zeros. With only
the C' kept channels in the tensor, the same numbers are

    mean = sum(x) / C          var = (sum((x - mean)^2) + (C - C') * mean^2) / C

which is what this writes in place of the node (plain ONNX ops that stock ONNX Runtime runs).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


def expand_layer_norms(model: onnx.ModelProto, kept_of: dict[str, tuple[int, int]]) -> None:
    """Replace each named LayerNormalization by its arithmetic for (C, C') = ``kept_of[name]``."""
    if not kept_of:
        return
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if node.name in kept_of:
            expanded, constants = _expanded(node, *kept_of[node.name])
            nodes.extend(expanded)
            model.graph.initializer.extend(constants)
        else:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _expanded(node: onnx.NodeProto, channels: int, kept: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
    p = f"{node.name}_of{channels}"
    constants = {
        f"{p}_axes": np.array([-1], np.int64),
        f"{p}_inv_c": np.array(1.0 / channels, np.float32),
        f"{p}_removed": np.array(float(channels - kept), np.float32),
        f"{p}_eps": np.array(epsilon, np.float32),
    }
    x, scale = node.input[0], node.input[1]
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    steps = [
        ("ReduceSum", [x, f"{p}_axes"], f"{p}_sum"),
        ("Mul", [f"{p}_sum", f"{p}_inv_c"], f"{p}_mean"),
        ("Sub", [x, f"{p}_mean"], f"{p}_centred"),
        ("Mul", [f"{p}_centred", f"{p}_centred"], f"{p}_squares"),
        ("ReduceSum", [f"{p}_squares", f"{p}_axes"], f"{p}_kept_ss"),
        ("Mul", [f"{p}_mean", f"{p}_mean"], f"{p}_mean_sq"),
        ("Mul", [f"{p}_mean_sq", f"{p}_removed"], f"{p}_removed_ss"),
        ("Add", [f"{p}_kept_ss", f"{p}_removed_ss"], f"{p}_ss"),
        ("Mul", [f"{p}_ss", f"{p}_inv_c"], f"{p}_var"),
        ("Add", [f"{p}_var", f"{p}_eps"], f"{p}_var_eps"),
        ("Sqrt", [f"{p}_var_eps"], f"{p}_std"),
        ("Div", [f"{p}_centred", f"{p}_std"], f"{p}_normed"),
        ("Mul", [f"{p}_normed", scale], f"{p}_scaled" if bias else node.output[0]),
    ]
    if bias:
        steps.append(("Add", [f"{p}_scaled", bias], node.output[0]))
    nodes = [
        helper.make_node(op, inputs, [out], name=f"{p}_{i}", **({"keepdims": 1} if op == "ReduceSum" else {}))
        for i, (op, inputs, out) in enumerate(steps)
    ]
    return nodes, [numpy_helper.from_array(v, k) for k, v in constants.items()]
