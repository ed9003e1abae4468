"""Plans: which channels of each group stay and how many bits each layer keeps, as JSON a person can read.

A plan names each group and lists the kept channel positions; ``keep_mask`` turns it
into one boolean per atom that surgery and the oracle both use, after checking that
heads stay rectangular (every kept head the same width) and coupled heads agree.
Every command writes one format, ``svtprune-plan/2`` (kept channels per group, weight bits
per quantized layer, and the layers whose weights a least-squares re-fit changed, so that
``verify`` knows which weights are not the original's); ``svtprune-plan/1`` (channels only) and
the early quantize command's ``svtprune-quant-plan/1`` (bits only) still load, as plans without a re-fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from svtprune.errors import UserError
from svtprune.graph.analysis import Analysis, Group
from svtprune.graph.labels import FIXED

PLAN_FORMAT = "svtprune-plan/2"


@dataclass
class Plan:
    kept: dict[str, list[int]] = field(default_factory=dict)  # group name -> kept channel positions
    meta: dict[str, object] = field(default_factory=dict)
    bits: dict[str, int] = field(default_factory=dict)  # quantized layer (weight initializer) -> weight bits
    refit: list[str] = field(default_factory=list)  # layers (node names) whose weights and bias were re-fitted

    def to_json(self, analysis: Analysis | None = None) -> str:
        groups = {}
        for name, kept in self.kept.items():
            entry: dict[str, object] = {"kept": sorted(int(k) for k in kept)}
            if analysis is not None:
                group = analysis.group(name)
                entry["size"] = group.size
                entry["members"] = sorted({f"{m.initializer}[axis {m.axis}, {m.role}]" for m in group.members})
            groups[name] = entry
        bits = {name: int(b) for name, b in sorted(self.bits.items())}
        data = {"format": PLAN_FORMAT, "meta": self.meta, "groups": groups, "bits": bits}
        if self.refit:  # only when there was one: plans without a re-fit read as before
            data["refit"] = sorted(self.refit)
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        try:
            data = json.loads(text)
            if data.get("format") == "svtprune-quant-plan/1":  # bits only, scheme and source beside them
                meta = {k: v for k, v in data.items() if k not in ("format", "bits")}
                return cls({}, meta, {name: int(b) for name, b in data["bits"].items()})
            kept = {name: [int(k) for k in entry["kept"]] for name, entry in data["groups"].items()}
            bits = {name: int(b) for name, b in data.get("bits", {}).items()}
            refit = [str(name) for name in data.get("refit", [])]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"not a svtprune plan JSON: {exc}") from exc
        return cls(kept, dict(data.get("meta", {})), bits, refit)

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        """The plan in ``path``; a missing, binary (an ONNX file given by mistake) or malformed file names ``plan``."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"file not found: {path}", option="plan")
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(
                f"{path} is not a plan JSON (it holds binary data, like an ONNX or .npz file)", option="plan"
            ) from None
        try:
            return cls.from_json(text)
        except UserError as exc:
            raise UserError(f"{path} is {exc.problem}", option="plan") from exc


def compacted_shape(mask: np.ndarray) -> tuple[int, ...] | None:
    """Shape of a kept pattern once removed positions are squeezed out; None if ragged."""
    if mask.ndim == 1:
        return (int(mask.sum()),)
    rows = [compacted_shape(row) for row in mask if row.any()]
    if not rows or any(r != rows[0] for r in rows):
        return None if rows else (0,) * mask.ndim
    return (len(rows), *rows[0])


def keep_mask(analysis: Analysis, plan: Plan) -> np.ndarray:
    """One flag per atom (index -1 = fixed positions, always kept); raises UserError if invalid."""
    keep_channel = np.ones(len(analysis.channel_of_atom), dtype=bool)
    for name, kept in plan.kept.items():
        try:
            group = analysis.group(name)
        except KeyError:
            raise UserError(f"plan names group {name!r}, which this model does not have") from None
        if not group.prunable and len(set(kept)) != group.size:
            raise UserError(f"group {name} is refused ({'; '.join(group.refused)}) but the plan prunes it")
        if any(k < 0 or k >= group.size for k in kept):
            raise UserError(f"plan for group {name} has a position outside 0..{group.size - 1}")
        if not kept:
            raise UserError(f"plan removes every channel of group {name}")
        removed = np.setdiff1d(np.arange(group.size), np.asarray(kept, dtype=np.int64))
        keep_channel[group.channels[removed]] = False
    atom_keep = np.append(keep_channel[analysis.channel_of_atom], True)  # index -1 -> fixed
    _check_structure(analysis, atom_keep)
    return atom_keep


def _check_structure(analysis: Analysis, atom_keep: np.ndarray) -> None:
    for grid in analysis.grids:
        if compacted_shape(atom_keep[grid]) is None:
            raise UserError("plan leaves heads of different widths; prune every head to the same width")
    for rows in analysis.pinned_rows:
        if not atom_keep[rows].any(axis=1).all():
            raise UserError("plan removes a whole head that a head-wise sum needs; prune inside the heads only")
    for rows_a, rows_b in analysis.row_links:
        alive_a = atom_keep[rows_a].any(axis=1)
        alive_b = atom_keep[rows_b].any(axis=1)
        if not np.array_equal(alive_a, alive_b):
            raise UserError("plan removes a head on one side of an attention product but not the other")


# -- building plans -------------------------------------------------------------------------


def head_units(analysis: Analysis, group: Group) -> list[np.ndarray]:
    """Whole heads as channel positions of the group: rows tied by coupling or attention links."""
    if not group.head_rows or not group.heads_removable:
        return []
    position = {int(c): i for i, c in enumerate(group.channels)}
    rows = [np.array(sorted({position[int(c)] for c in row if int(c) in position})) for row in group.head_rows]
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    keys = [frozenset(r.tolist()) for r in rows]
    heads = group.row_heads or list(range(len(rows)))
    for i in range(len(rows)):
        for j in range(i):
            if keys[i] & keys[j] or heads[i] == heads[j]:  # q, k and v of one head go together
                parent[find(i)] = find(j)
    for rows_a, rows_b in analysis.row_links:
        for ra, rb in zip(rows_a, rows_b, strict=True):
            ia = _row_index(keys, analysis, position, ra)
            ib = _row_index(keys, analysis, position, rb)
            if ia is not None and ib is not None:
                parent[find(ia)] = find(ib)
    units: dict[int, set[int]] = {}
    for i, row in enumerate(rows):
        units.setdefault(find(i), set()).update(row.tolist())
    return [np.array(sorted(u)) for u in units.values()]


def _row_index(keys: list[frozenset], analysis: Analysis, position: dict[int, int], atoms: np.ndarray) -> int | None:
    row = frozenset(position[int(c)] for c in analysis.channel_of_atom[atoms[atoms != FIXED]] if int(c) in position)
    for i, key in enumerate(keys):
        if key == row:
            return i
    return None


def kept_for_ratio(
    analysis: Analysis, group: Group, ratio: float, scores: np.ndarray, drop_heads: int = 0
) -> list[int]:
    """Keep the highest-scoring channels; with heads, the same count in every head."""
    if not group.head_rows:
        n_keep = max(1, group.size - int(round(ratio * group.size)))
        return sorted(np.argsort(-scores, kind="stable")[:n_keep].tolist())
    position = {int(c): i for i, c in enumerate(group.channels)}
    units = head_units(analysis, group)
    unit_scores = [float(scores[u].sum()) for u in units]
    dropped = set(np.argsort(unit_scores, kind="stable")[: min(drop_heads, len(units) - 1)].tolist())
    dead = set().union(*(units[i].tolist() for i in dropped)) if dropped else set()
    kept: set[int] = set()
    for row in group.head_rows:
        cols = [position[int(c)] for c in row]
        if set(cols) & dead:
            continue
        n_keep = max(1, len(cols) - int(round(ratio * len(cols))))
        order = sorted(cols, key=lambda c: -scores[c])
        kept.update(order[:n_keep])
    loose = sorted(set(range(group.size)) - {position[int(c)] for row in group.head_rows for c in row})
    if loose:  # channels outside every head grid follow the ratio on their own
        n_keep = max(1, len(loose) - int(round(ratio * len(loose))))
        kept.update(sorted(loose, key=lambda c: -scores[c])[:n_keep])
    return sorted(kept)


def uniform_plan(analysis: Analysis, ratio: float, scores: dict[str, np.ndarray]) -> Plan:
    """The PSViT first step: the same ratio in every prunable group."""
    plan = Plan(meta={"method": "uniform", "ratio": ratio})
    for group in analysis.prunable_groups:
        plan.kept[group.name] = kept_for_ratio(analysis, group, ratio, scores[group.name])
    return plan
