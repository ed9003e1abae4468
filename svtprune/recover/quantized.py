"""Quantization-aware fine-tuning: a quantized model trains on the grid its file stores it on.

Thawing folds the stored integers back to float weights; each weight then passes through its
own grid (the file's scales and zero points, rounded to nearest, straight-through gradient),
each int8 side vector through its grid and each float16 one through float16, so the loss is
the quantized model's loss and the trained weights are written back as integers on the same
grid: what was trained is what runs.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
import torch

from svtprune.quantization import QuantizedWeight, Quantizer, Thawed, grid_bounds, side_vector_names, thaw
from svtprune.recover.convert import OnnxModule, convert


class _StraightThrough(torch.autograd.Function):
    """Forward: the stored value, exactly; backward: the identity (rounding has no useful gradient)."""

    @staticmethod
    def forward(ctx, value: torch.Tensor, store: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # noqa: ANN001
        return store(value)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return grad, None


class _OnGrid:
    def __init__(self, grid: QuantizedWeight) -> None:
        scale, zero, self.low, self.high = grid_bounds(grid)
        self.scale, self.zero = torch.from_numpy(scale), torch.from_numpy(zero)

    def _round(self, value: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(value / self.scale) + self.zero, self.low, self.high)
        return (q - self.zero) * self.scale

    def __call__(self, value: torch.Tensor) -> torch.Tensor:
        return _StraightThrough.apply(value, self._round)


def _as_half(value: torch.Tensor) -> torch.Tensor:
    return _StraightThrough.apply(value, lambda v: v.half().float())


def trainable_student(student: onnx.ModelProto) -> tuple[onnx.ModelProto, OnnxModule, Thawed | None]:
    """(float graph to write back into, its module, how it was quantized or None for a float student)."""
    thawed = thaw(student)
    float_model = thawed.model if thawed else student
    module = convert(float_model)
    if thawed is not None:
        trainable = set(module.trainable)
        for name, grid in thawed.grids.items():
            if name in trainable:
                module.stored[name] = _OnGrid(grid)
        if thawed.scheme.half_side:
            for name in set(side_vector_names(float_model)) & trainable - set(module.stored):
                module.stored[name] = _as_half
    return float_model, module, thawed


def stored_again(tuned: onnx.ModelProto, thawed: Thawed | None) -> onnx.ModelProto:
    """The written-back float model stored as the student was: same bits, same grids.

    The weights are the trained ones exactly, but ONNX Runtime's default session fuses a 4-bit
    MatMul into MatMulNBits, which quantizes its input activations to int8 (its accuracy level 4):
    logits then differ from the module's by ~1e-2, so the export check runs before this step.
    """
    if thawed is None:
        return tuned
    return Quantizer(tuned, thawed.scheme, grids=thawed.grids).apply(thawed.bits)
