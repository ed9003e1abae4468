"""Verifying a quantized or fine-tuned file: its structure and grids against the plain prune of its plan.

Quantized and fine-tuned weights are not the original's, so such a file can never equal the oracle
(``verify`` checks the plain prune of the plan against it instead). What holds for the file, with its
DequantizeLinear and Cast chains folded back to float32 (``thaw``): every node of the plain prune, wired
the same, and every constant at the plain prune's shape, so every group keeps the plan's widths. For a
quantized file also: each layer the plan quantizes is stored at the plan's bit width and no other is;
its integers lie in that width's range; the weight the graph computes with is their dequantization.
How far the weights and the logits moved from the plain prune is reported, never judged: fine-tuning
and GPTQ rounding move them on purpose.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.jobs.verify_refit import output_shift, shown, stored_constants, structure_differences
from svtprune.quantization import thaw
from svtprune.quantization.grid import dequantize, grid_bounds
from svtprune.quantization.scheme import FP32, QuantizedWeight

ON_GRID = 1e-5  # in steps of the layer's grid: what float32 dequantization may leave
FLOAT = "float32"


def rewritten_section(
    candidate: onnx.ModelProto, plain: onnx.ModelProto, bits: dict[str, int], refit: list[str], x: np.ndarray
) -> dict:
    """The report's ``rewritten`` part: what was checked, the differences found, and how far the file moved."""
    thawed = thaw(candidate)
    floats = candidate if thawed is None else thawed.model
    differences = structure_differences(floats, plain, set(refit), values_free=True)
    section: dict[str, object] = {
        "compared_with": "the plain prune of the plan's channels (which the oracle checks)",
        "structure": "every node and its wiring as in the plain prune, every constant at its shape",
        "structure_differences": shown(differences),
    }
    problems: list[str] = []
    if bits or thawed is not None:
        stored = thawed.bits if thawed is not None else {}
        grids = thawed.grids if thawed is not None else {}
        problems = bit_mismatches(bits, stored) + [p for n in stored for p in grid_problems(n, grids[n], floats)]
        section["quantization"] = {
            "layers": len(stored),
            "problems": shown(problems),
            **weight_shift(floats, plain, stored, set(refit)),
        }
    if not differences:
        section.update(output_shift(candidate, plain, x))
    section["passed"] = not differences and not problems
    return section


def bit_mismatches(planned: dict[str, int], stored: dict[str, int]) -> list[str]:
    """Layers whose stored width is not the plan's (a float layer is 32 bits on both sides)."""
    planned = {name: b for name, b in planned.items() if b != FP32}
    return [
        f"{name}: the plan gives {_width(planned.get(name))}, the file stores {_width(stored.get(name))}"
        for name in sorted(set(planned) | set(stored))
        if planned.get(name) != stored.get(name)
    ]


def _width(bits: int | None) -> str:
    return FLOAT if bits is None else f"{bits} bits"


def grid_problems(name: str, grid: QuantizedWeight, floats: onnx.ModelProto) -> list[str]:
    """Integers outside the width's range, or a weight the graph computes with that is not their dequantization."""
    scale, zero, low, high = grid_bounds(grid)
    problems = []
    if grid.values.min(initial=low) < low or grid.values.max(initial=high) > high:
        problems.append(f"{name}: integers outside {low}..{high} ({grid.bits} bits)")
    if grid.zero_point is not None and (zero.min() < low or zero.max() > high):
        problems.append(f"{name}: zero point outside {low}..{high}")
    weight = stored_constants(floats).get(name)
    if weight is None or weight.shape != grid.values.shape:
        return [*problems, f"{name}: the graph does not compute with the stored integers"]
    off = np.abs(weight - dequantize(grid)) / np.maximum(np.abs(scale), np.finfo(np.float32).tiny)
    if off.max(initial=0.0) > ON_GRID:
        problems.append(f"{name}: weight off its grid by up to {float(off.max()):.3g} steps")
    return problems


def weight_shift(
    floats: onnx.ModelProto, plain: onnx.ModelProto, stored: dict[str, int], refit: set[str]
) -> dict[str, object]:
    """The largest difference between a quantized weight and the plain prune's weight at the same node input.

    Matched by node and input position; the re-fitted layers are left out (the re-fit moved their weights).
    """
    values_f, values_p = stored_constants(floats), stored_constants(plain)
    plain_nodes = {n.name: n for n in plain.graph.node}
    worst: tuple[float, str] = (0.0, "")
    for node in floats.graph.node:
        other = plain_nodes.get(node.name)
        for index, name in enumerate(node.input):
            if name not in stored or node.name in refit or other is None or index >= len(other.input):
                continue
            before = values_p.get(other.input[index])
            if before is not None and before.shape == values_f[name].shape:
                worst = max(worst, (float(np.abs(values_f[name] - before).max(initial=0.0)), name))
    return {"max_weight_difference": worst[0], "max_weight_difference_layer": worst[1] or None}
