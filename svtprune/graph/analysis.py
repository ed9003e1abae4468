"""Channel-dependency analysis: the groups of channels that must be removed together.

Labels are propagated once through the graph in topological order (see ``svtprune.graph.ops``);
coupled atoms become one *channel*; the channels produced by one weighted node (or tied to
them) form one *group*, the unit a plan prunes. Groups that meet something unsafe are kept
but marked refused, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from svtprune.graph.labels import FIXED, Member, PropagationState, ShapeFixup, UnionFind
from svtprune.graph.normalize import normalize, tensor_shapes
from svtprune.graph.ops import HANDLERS
from svtprune.graph.shape_reads import follow_shape_reads
from svtprune.graph.storage import check_compute_type, stored_types


@dataclass
class Group:
    """Channels pruned as one unit. ``channels`` are class ids; position i is channel i."""

    name: str
    channels: np.ndarray
    members: list[Member]
    sources: list[str]
    refused: list[str] = field(default_factory=list)
    head_rows: list[np.ndarray] = field(default_factory=list)  # grid rows (channel ids) if split into heads
    row_heads: list[int] = field(default_factory=list)  # each row's head: its index on its grid's head axis
    heads: int = 0  # attention heads: grid rows of the finest piece the head grid is cut into (q, k, v apart)
    heads_removable: bool = True  # False when a head-wise sum needs every head to keep a channel

    @property
    def size(self) -> int:
        return len(self.channels)

    @property
    def prunable(self) -> bool:
        return not self.refused


@dataclass
class Analysis:
    model: onnx.ModelProto  # the normalised model every plan applies to
    groups: list[Group]
    channel_of_atom: np.ndarray  # atom id -> channel id
    fixups: list[ShapeFixup]
    grids: list[np.ndarray]  # atom-id grids whose kept pattern must stay rectangular
    row_links: list[tuple[np.ndarray, np.ndarray]]
    members: list[Member]
    pinned_rows: list[np.ndarray] = field(default_factory=list)
    stored: dict[str, int] = field(default_factory=dict)  # weight -> its type in the file, where not float32

    def group(self, name: str) -> Group:
        for group in self.groups:
            if group.name == name:
                return group
        raise KeyError(name)

    @property
    def prunable_groups(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


LAYOUT_OPS = ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def constants_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(a.t)
    return consts


def propagate(model: onnx.ModelProto) -> PropagationState:
    state = PropagationState(shapes=tensor_shapes(model), constants=constants_of(model))
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        follow_shape_reads(state, node)
        if node.op_type in LAYOUT_OPS and node.input and node.input[0] in state.normalised:
            state.normalised[node.output[0]] = state.normalised[node.input[0]]  # for the reason a refusal gives
        handler = HANDLERS.get(node.op_type)
        if handler is None:
            state.refuse_inputs(list(node.input), f"operator {node.op_type} ({node.name}) is not supported")
            continue
        handler(state, node)
        for out in node.output:
            _drop_shadowed(state, out)
            state.views.extend(lbl.ids for lbl in state.labels.get(out, []) if lbl.ids.ndim > 1)
    state.members = [m for m in state.members if (m.ids != FIXED).any()]
    for output in model.graph.output:
        for label in state.labels.get(output.name, []):
            state.refuse(label.ids, f"reaches the model output {output.name}")
    return state


def _drop_shadowed(state: PropagationState, name: str) -> None:
    """A label of fixed positions adds nothing where a finer label covers the same axes."""
    labels = state.labels.get(name, [])
    keep = [
        lbl
        for lbl in labels
        if (lbl.ids != FIXED).any() or not any(o is not lbl and set(lbl.axes) <= set(o.axes) for o in labels)
    ]
    if len(keep) != len(labels):
        state.labels[name] = keep


def analyze(model: onnx.ModelProto, normalized: bool = False) -> Analysis:
    """Normalise (unless told it already is) and find every channel group.

    Weights the file stores as float16 (folded to float32 by normalisation) are remembered, so
    that what surgery writes keeps their storage type; a graph that computes in float16 is refused.
    """
    if not normalized:
        check_compute_type(model)
    stored = {} if normalized else stored_types(model)
    model = model if normalized else normalize(model)
    initializers = {t.name for t in model.graph.initializer}
    stored = {name: kind for name, kind in stored.items() if name in initializers}
    state = propagate(model)
    n_atoms = len(state.atom_source)
    channel_of_atom = np.array([state.atoms.find(a) for a in range(n_atoms)], dtype=np.int64)
    groups = _build_groups(state, channel_of_atom)
    return Analysis(
        model,
        groups,
        channel_of_atom,
        state.fixups,
        state.grids,
        state.row_links,
        state.members,
        state.pinned_rows,
        stored,
    )


def _build_groups(state: PropagationState, channel_of_atom: np.ndarray) -> list[Group]:
    """One group per set of channels tied to the same weighted producer."""
    n_atoms = len(channel_of_atom)
    tie = UnionFind()
    tie.add(n_atoms)
    first_atom_of: dict[str, int] = {}
    for atom, source in enumerate(state.atom_source):
        first = first_atom_of.setdefault(source, atom)
        tie.union(first, channel_of_atom[atom])
        tie.union(atom, channel_of_atom[atom])
    for grid in state.grids:  # channels reshaped together into heads are pruned together
        flat = grid.ravel()
        flat = flat[flat != FIXED]
        for atom in flat[1:].tolist():
            tie.union(int(flat[0]), atom)
    group_of_atom = np.array([tie.find(a) for a in range(n_atoms)], dtype=np.int64)
    groups = []
    for root in sorted(set(group_of_atom.tolist())):
        atoms = np.flatnonzero(group_of_atom == root)
        channels = np.unique(channel_of_atom[atoms])
        atom_set = set(atoms.tolist())
        members = [m for m in state.members if atom_set.intersection(np.ravel(m.ids).tolist())]
        sources = sorted({state.atom_source[a] for a in atoms.tolist()}, key=lambda s: atoms.tolist())
        refused = sorted({state.refusals[a] for a in atoms.tolist() if a in state.refusals})
        if any(a in state.fixed_atoms for a in atoms.tolist()):
            refused.append("tied to a channel that cannot be removed (a model input or output)")
        group = Group(_group_name(members, sources), channels, members, sources, refused)
        grids = _head_grids(state.grids, atom_set)
        if grids:
            group.head_rows = [channel_of_atom[r] for grid in grids for r in grid.reshape(-1, grid.shape[-1])]
            group.row_heads = [r % grid.shape[-2] for grid in grids for r in range(grid.size // grid.shape[-1])]
            group.heads = _head_count(grids[0], state.views)
        group.heads_removable = not any(set(r.ravel().tolist()) & atom_set for r in state.pinned_rows)
        groups.append(group)
    groups.sort(key=lambda g: min(state.atom_source.index(s) for s in g.sources))
    return groups


def _group_name(members: list[Member], sources: list[str]) -> str:
    for member in members:
        if member.role == "source":
            name = member.initializer
            for suffix in (".weight", "_weight", ".bias"):
                name = name.removesuffix(suffix)
            return name
    return sources[0]


def _head_grids(grids: list[np.ndarray], atoms: set[int]) -> list[np.ndarray]:
    """The head grids that cover this group, largest first (a grid's innermost axis is one head's width).

    One fused qkv projection gives one grid; separate q/k and v projections tied into one group give
    one grid each, and every one of them must keep the same count per head, or the channels outside
    the largest grid would be dropped by a plan that only sees its rows.
    """
    candidates = [g for g in grids if g.ndim >= 2 and set(np.ravel(g).tolist()) <= atoms | {FIXED} and _wide_rows(g)]
    chosen: list[np.ndarray] = []
    covered: set[int] = set()
    for grid in sorted(candidates, key=lambda g: (-g.size, g.shape[0])):
        grid_atoms = set(np.ravel(grid).tolist()) - {FIXED}
        if grid_atoms & covered or (chosen and grid.shape[-1] != chosen[0].shape[-1]):
            continue
        chosen.append(grid)
        covered |= grid_atoms
    return chosen


def _wide_rows(grid: np.ndarray) -> bool:
    """A head holds several channels; a grid whose rows each repeat one channel (a flattened
    ``[C, H*W]`` map, a GroupNorm's reshape) lays out channels, not heads."""
    rows = grid.reshape(-1, grid.shape[-1])
    return any(len(set(row.tolist()) - {FIXED}) > 1 for row in rows)


def _head_count(grid: np.ndarray, views: list[np.ndarray]) -> int:
    """Heads: the fewest grid rows any later view of the grid's channels spans.

    A reshape to ``[3 * heads, width]`` (or ``[3, heads, width]``) stacks q, k and v on the
    head axis; the Split, Slice or Gather that takes them apart leaves views of ``heads`` rows,
    and every per-head operation after it keeps that count. Rows are matched by atom id, so a
    transposed view counts the same.
    """
    rows = grid.reshape(-1, grid.shape[-1])
    row_of = {int(a): r for r, row in enumerate(rows) for a in row.tolist() if a != FIXED}
    best = len(rows)
    for view in views:
        atoms = set(np.ravel(view).tolist()) - {FIXED}
        if atoms and atoms <= row_of.keys():
            best = min(best, len({row_of[a] for a in atoms}))
    return best


def prunable_bytes(analysis: Analysis) -> tuple[int, int]:
    """(bytes of the weights some prunable group cuts, bytes of every float weight) in the analysed model.

    A weight counts once even when it belongs to two groups (a layer's rows to one, its columns
    to the next): the share says how much of the file pruning can reach at all.
    """
    from svtprune.graph.io import tensor_bytes

    prunable = {g.name for g in analysis.prunable_groups}
    channel_group = {int(c): g.name for g in analysis.groups for c in g.channels}
    reached = set()
    for member in analysis.members:
        atoms = np.ravel(member.ids)
        atoms = atoms[atoms >= 0]
        if any(channel_group.get(int(analysis.channel_of_atom[a])) in prunable for a in atoms[:1]):
            reached.add(member.initializer)
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    sizes = {t.name: tensor_bytes(t) for t in analysis.model.graph.initializer if t.data_type in floats}
    return sum(sizes[name] for name in reached if name in sizes), sum(sizes.values())


def group_table(analysis: Analysis) -> list[dict]:
    """One row per group: what a person needs to decide what to prune."""
    weights = constants_of(analysis.model)
    rows = []
    for group in analysis.groups:
        params = 0
        atoms = set(np.flatnonzero(np.isin(analysis.channel_of_atom, group.channels)).tolist())
        for member in group.members:
            tensor = weights[member.initializer]
            per_slice = tensor.size // max(tensor.shape[member.axis], 1)
            params += per_slice * sum(1 for a in member.ids.tolist() if a in atoms)
        rows.append(
            {
                "group": group.name,
                "channels": group.size,
                "heads": group.heads,
                "params": int(params),
                "members": sorted({f"{m.initializer}[{m.axis}]:{m.role}" for m in group.members}),
                "prunable": group.prunable,
                "refused": group.refused,
            }
        )
    return rows
