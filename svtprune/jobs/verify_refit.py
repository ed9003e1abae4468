"""Verifying a re-fitted file: its structure against the plain prune of its plan, and how far the re-fit moved it.

A least-squares re-fit changes the weights (and maybe adds a bias) of the layers the plan names, so
the file cannot equal the oracle. Everything else must be the plain prune of the same plan exactly:
every node with its attributes and inputs, every weight outside the re-fitted layers value for value,
the re-fitted weights' shapes. A group whose every member is a re-fitted weight shows only its width
(which channels it kept is in the re-fitted values alone): such groups are listed, not claimed checked.
How much the outputs differ from the plain prune is measured and reported, never counted as a pass
or a failure.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.analysis import Analysis, constants_of
from svtprune.graph.io import attribute
from svtprune.graph.plan import Plan

REFIT_INPUTS = (1, 2)  # weight and bias: the inputs a re-fit replaces
SHOWN = 5  # differences listed in the report


def refit_section(candidate: onnx.ModelProto, plain: onnx.ModelProto, refit: list[str], x: np.ndarray) -> dict:
    """The report's ``refit`` part: the layers, the structural differences (none if it holds), the output shift."""
    differences = structure_differences(candidate, plain, set(refit))
    section: dict[str, object] = {
        "layers": sorted(refit),
        "compared_with": "the plain prune of the same channels (which the oracle checks)",
        "structure_differences": shown(differences),
    }
    return section if differences else {**section, **output_shift(candidate, plain, x)}


def output_shift(candidate: onnx.ModelProto, plain: onnx.ModelProto, x: np.ndarray) -> dict[str, float]:
    """How far ``candidate``'s logits are from the plain prune's on ``x``: the largest difference, the agreement."""
    from svtprune.runtime import logits_of, make_session

    logits_c, logits_p = logits_of(make_session(candidate), x), logits_of(make_session(plain), x)
    return {
        "max_logit_difference": float(np.abs(logits_c - logits_p).max(initial=0.0)),
        "prediction_agreement": float((logits_c.argmax(axis=1) == logits_p.argmax(axis=1)).mean()),
    }


def shown(differences: list[str]) -> list[str]:
    """The first few differences, and how many more there are."""
    return differences[:SHOWN] + ([f"... {len(differences) - SHOWN} more"] * (len(differences) > SHOWN))


def shape_only_groups(analysis: Analysis, plan: Plan) -> list[str]:
    """Pruned groups whose every member is a re-fitted weight or bias: which channels they kept, only the
    re-fitted values carry, so the structure check sees their widths but cannot tell their channels apart."""
    refit = set(plan.refit)
    hidden = []
    for group in analysis.prunable_groups:
        if len(plan.kept.get(group.name, range(group.size))) == group.size:
            continue
        if all(m.node in refit and m.input_index in REFIT_INPUTS for m in group.members):
            hidden.append(group.name)
    return hidden


def stored_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Constant tensors as the graph computes with them: a float16 weight read through its Cast to float32."""
    values = constants_of(model)
    for node in model.graph.node:
        if node.op_type == "Cast" and node.input[0] in values and attribute(node, "to") == onnx.TensorProto.FLOAT:
            values[node.output[0]] = values[node.input[0]].astype(np.float32)
    return values


def structure_differences(
    candidate: onnx.ModelProto, plain: onnx.ModelProto, refit: set[str], values_free: bool = False
) -> list[str]:
    """Where ``candidate`` is not ``plain`` apart from the re-fitted layers' weight and bias values.

    ``values_free`` (a quantized or fine-tuned file): every constant need only have the plain prune's shape.
    """
    values_c, values_p = stored_constants(candidate), stored_constants(plain)
    nodes_c = {n.name: n for n in candidate.graph.node if n.output[0] not in values_c}  # storage Casts left out
    nodes_p = {n.name: n for n in plain.graph.node if n.output[0] not in values_p}
    differences = [f"node {name} is only in {where}" for name, where in _one_sided(nodes_c, nodes_p)]
    if [o.name for o in candidate.graph.output] != [o.name for o in plain.graph.output]:
        differences.append("the graph outputs differ")
    for name in sorted(set(nodes_c) & set(nodes_p)):
        a, b = nodes_c[name], nodes_p[name]
        if a.op_type != b.op_type or list(a.attribute) != list(b.attribute) or list(a.output) != list(b.output):
            differences.append(f"node {name} differs (operator, attributes or outputs)")
            continue
        inputs_b = list(b.input) + [""] * (len(a.input) - len(b.input)) if name in refit else list(b.input)
        if len(a.input) != len(inputs_b):
            differences.append(f"node {name} has {len(a.input)} inputs, the plain prune {len(b.input)}")
            continue
        for index, (in_a, in_b) in enumerate(zip(a.input, inputs_b, strict=True)):
            refitted = name in refit and index in REFIT_INPUTS
            free = values_free or refitted
            problem = _input_difference(values_c.get(in_a), values_p.get(in_b), in_a == in_b, free, refitted)
            if problem:
                differences.append(f"node {name} input {index}: {problem}")
    return differences


def _one_sided(nodes_c: dict, nodes_p: dict) -> list[tuple[str, str]]:
    only_c = [(name, "the file") for name in sorted(set(nodes_c) - set(nodes_p))]
    return only_c + [(name, "the plain prune") for name in sorted(set(nodes_p) - set(nodes_c))]


def _input_difference(
    value_c: np.ndarray | None, value_p: np.ndarray | None, same_name: bool, free: bool, refitted: bool
) -> str | None:
    """What differs in one input; ``free``: its values may differ (re-fitted, quantized or fine-tuned)."""
    if value_c is None and value_p is None:
        return None if same_name else "reads another tensor"
    if refitted and value_p is None and value_c is not None:
        return None  # a bias the re-fit added has no counterpart
    if value_c is None or value_p is None or value_c.shape != value_p.shape:
        return "a constant on one side only, or of another shape"
    return None if free or np.array_equal(value_c, value_p) else "another value"
