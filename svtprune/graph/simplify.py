"""Exporter idioms rewritten into the plain form the analysis follows (each exact, value for value).

The dynamo exporter's attention (``scaled_dot_product_attention`` decomposed) transposes k through
a detour: ``[B, H, N, D] -> Reshape [B*H, N, D] -> Transpose -> Reshape [B, H, D, N]``. Merging the
batch with the heads hides the heads inside a dimension of unknown size, so the channels could not
be followed; one Transpose of the 4-D tensor computes the same values.
"""

from __future__ import annotations

import onnx
from onnx import helper

Dims = list[int | None]


def fold_head_detours(model: onnx.ModelProto, shapes: dict[str, Dims]) -> bool:
    """Replace every ``Reshape (merge the first two axes) -> Transpose -> Reshape (split them)`` chain."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    replaced: dict[int, onnx.NodeProto] = {}
    dropped: set[int] = set()
    for merge in model.graph.node:
        chain = _detour(merge, consumers, shapes, outputs)
        if chain is None:
            continue
        transpose, split = chain
        perm = [int(p) for p in helper.get_attribute_value(transpose.attribute[0])]
        full = [0, 1] + [p + 1 for p in perm[1:]]
        replaced[id(split)] = helper.make_node(
            "Transpose", [merge.input[0]], [split.output[0]], name=f"{split.name}_heads", perm=full
        )
        dropped |= {id(merge), id(transpose)}
    if not replaced:
        return False
    nodes = [replaced.get(id(n), n) for n in model.graph.node if id(n) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return True


def _detour(
    merge: onnx.NodeProto, consumers: dict, shapes: dict[str, Dims], outputs: set[str]
) -> tuple[onnx.NodeProto, onnx.NodeProto] | None:
    """(Transpose, Reshape) when ``merge`` starts a merge-transpose-split chain that keeps axis 0 put."""
    if merge.op_type != "Reshape":
        return None
    x, merged = shapes.get(merge.input[0]), shapes.get(merge.output[0])
    if not x or not merged or len(x) < 3 or len(merged) != len(x) - 1 or merged[1:] != x[2:]:
        return None
    if x[1] is None or any(d is None for d in x[2:]):
        return None
    nexts = consumers.get(merge.output[0], [])
    if len(nexts) != 1 or nexts[0].op_type != "Transpose" or merge.output[0] in outputs:
        return None
    transpose = nexts[0]
    perm = [int(p) for a in transpose.attribute if a.name == "perm" for p in helper.get_attribute_value(a)]
    if not perm or perm[0] != 0 or len(transpose.attribute) != 1:
        return None
    nexts = consumers.get(transpose.output[0], [])
    if len(nexts) != 1 or nexts[0].op_type != "Reshape" or transpose.output[0] in outputs:
        return None
    split = nexts[0]
    moved, out = shapes.get(transpose.output[0]), shapes.get(split.output[0])
    if not moved or not out or out[:2] != x[:2] or out[2:] != moved[1:]:
        return None
    return transpose, split
