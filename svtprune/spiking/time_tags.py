"""What following the time axis gives each tensor (a tag) and the graph (the sites where T lives).

Tags: ``Timed(axis)`` when one of a tensor's axes holds the T steps (alone, ``[T, B, ...]``, or as
the outer factor of a folded axis, ``[T*B, ...]``); ``Step(t)`` when it belongs to one unrolled
step (and depends on no later step); ``META`` for shape values read off a timed tensor (they
follow T by themselves); ``None`` for everything else. Nodes are named by their first output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from svtprune.spiking.tensor_shapes import Shapes

META = "meta"


@dataclass(frozen=True)
class Timed:
    """One axis holds the T steps as its outer factor; ``replicated``: every step holds the same values."""

    axis: int
    replicated: bool = False


@dataclass(frozen=True)
class Step:
    """A tensor of one unrolled step ``t`` (it depends on no later step)."""

    t: int


Tag = Timed | Step | str | None


class NotFollowable(Exception):
    """The time axis meets an op this module cannot carry it through; the message says which and why."""


@dataclass(frozen=True)
class Edit:
    """Input ``index`` of node ``node`` is a constant holding T (times ``inner``) at flat position ``position``."""

    node: str
    index: int
    position: int
    value: int


@dataclass
class Sites:
    """Every place T lives; nodes are named by their first output (node names may be empty)."""

    repeats: list[str] = field(default_factory=list)  # make the T copies of the image (Tile, Expand, Concat)
    edits: list[Edit] = field(default_factory=list)  # constants that spell T (repeats, reshape targets)
    folds: list[str] = field(default_factory=list)  # reshapes that fold T into the batch or back
    steps: dict[str, int] = field(default_factory=dict)  # Slice/Gather taking one step -> the step
    splits: list[str] = field(default_factory=list)  # Split into the T steps
    stacks: list[str] = field(default_factory=list)  # Concat of the steps, in order, into a time axis again
    means: list[str] = field(default_factory=list)  # ReduceMean over the time axis
    sums: list[tuple[str, str]] = field(default_factory=list)  # (ReduceSum over time, the Div/Mul by T after it)
    constants: list[tuple[str, int, int]] = field(default_factory=list)  # (node, input, axis): a constant [T, ...]
    outputs: dict[str, int] = field(default_factory=dict)  # graph outputs that keep the time axis -> its axis


@dataclass
class Flow:
    """Tags of every tensor, and the sites: the result of following the time axis."""

    steps: int
    tags: dict[str, Tag]
    sites: Sites
    shapes: Shapes

    def inner(self, name: str) -> int:
        """What the time axis of ``name`` folds beside T (1 for ``[T, B, ...]``, B for ``[T*B, ...]``)."""
        tag = self.tags[name]
        assert isinstance(tag, Timed)
        return self.shapes[name][tag.axis] // self.steps


def key(node: onnx.NodeProto) -> str:
    """A node's identity: its first output (names are optional in ONNX, outputs are unique)."""
    return node.output[0]
