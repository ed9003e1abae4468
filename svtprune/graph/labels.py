"""The propagation state: which channels each tensor carries along which axes.

An *atom* is one output channel of one weighted producer (a Conv filter, a MatMul column).
A *label* says that the positions of some tensor axes hold atoms: ``ids`` has one entry per
position (atom id, or -1 for a channel that can never go). Couplings between atoms (a
residual Add lines up channel i of two producers) are kept in a union-find; the classes it
forms are the channels a plan keeps or removes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FIXED = -1  # a position no plan may remove (an image channel, a model output)


@dataclass(frozen=True)
class Label:
    ids: np.ndarray  # atom ids laid out over ``axes`` (ids.ndim == len(axes))
    axes: tuple[int, ...]  # ascending tensor axes

    def moved(self, axes: tuple[int, ...]) -> Label:
        order = np.argsort(axes)
        return Label(np.transpose(self.ids, order), tuple(int(a) for a in np.sort(axes)))


@dataclass
class Member:
    """A slice of an initializer that belongs to channels: position p along ``axis`` is atom ids[p]."""

    node: str
    input_index: int
    initializer: str
    axis: int
    ids: np.ndarray
    role: str  # "source" (produces the channel), "sink" (consumes it) or "param"


@dataclass
class ShapeFixup:
    """A constant that encodes channel counts and must be rewritten after pruning."""

    node: str
    kind: str  # "reshape", "split", "slice", "expand", "group" (depthwise Conv) or "layernorm"
    axes: tuple[int, ...]  # axes of the node's output that the label spans
    ids: np.ndarray  # the label at those axes; its compacted shape gives the new dims
    output_index: int = 0
    split_axis: int = 0  # for "split": the tensor axis being split


@dataclass(frozen=True)
class ShapeRead:
    """Dims of ``tensor`` that a Shape node read at run time (the batch, or a dim the folder could not fix)."""

    node: str
    tensor: str
    axes: tuple[int, ...]


class UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def add(self, count: int) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        return np.arange(start, start + count, dtype=np.int64)

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class PropagationState:
    """Everything the op handlers write; turned into groups by ``analysis``."""

    shapes: dict[str, list[int | None]]
    constants: dict[str, np.ndarray]
    labels: dict[str, list[Label]] = field(default_factory=dict)
    shape_only: set[str] = field(default_factory=set)
    atoms: UnionFind = field(default_factory=UnionFind)
    atom_source: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    fixups: list[ShapeFixup] = field(default_factory=list)
    grids: list[np.ndarray] = field(default_factory=list)
    views: list[np.ndarray] = field(default_factory=list)  # every multi-axis label a tensor carries
    row_links: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pinned_rows: list[np.ndarray] = field(default_factory=list)  # rows (heads) that must keep a channel
    shape_reads: dict[str, list[ShapeRead]] = field(default_factory=dict)  # shape vectors: which dims they hold
    normalised: dict[str, str] = field(default_factory=dict)  # tensor -> the normalisation over channels behind it
    nonzero: set[int] = field(default_factory=set)  # atoms that a zeroed slice may not leave at zero somewhere
    expanded: dict[str, tuple[str, str]] = field(default_factory=dict)  # Expand output -> (node, constant it repeats)
    refusals: dict[int, str] = field(default_factory=dict)
    fixed_atoms: set[int] = field(default_factory=set)

    def new_atoms(self, count: int, source: str) -> np.ndarray:
        self.atom_source.extend([source] * count)
        return self.atoms.add(count)

    def couple(self, a: np.ndarray, b: np.ndarray, why: str) -> None:
        """Positions of a and b must go together; a fixed position pins its partner."""
        for x, y in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
            if x == FIXED and y == FIXED:
                continue
            if x == FIXED or y == FIXED:
                self.fixed_atoms.add(y if x == FIXED else x)
                continue
            self.atoms.union(x, y)

    def refuse(self, ids: np.ndarray, reason: str) -> None:
        for atom in np.unique(ids).tolist():
            if atom != FIXED:
                self.refusals.setdefault(atom, reason)

    def refuse_inputs(self, inputs: list[str], reason: str) -> None:
        for name in inputs:
            for label in self.labels.get(name, []):
                self.refuse(label.ids, reason)

    def read_shape(self, name: str) -> None:
        """A value computed from ``name``'s dims is used: the channels on those dims cannot change size.

        Folding turned every static dim into a constant, so what is still read here is read at run
        time; a channel count read so (an attention scale from the head size, a width in a target
        the folder could not resolve) would mean something else once pruned: refuse those channels.
        """
        for read in self.shape_reads[name]:
            for label in self.labels.get(read.tensor, []):
                if set(label.axes) & set(read.axes):
                    why = f"{read.node} reads the channel count at run time (pruning would change its value)"
                    self.refuse(label.ids, why)

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)
