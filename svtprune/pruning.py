"""The analyze / prune / verify jobs as library calls; the CLI is a thin layer over these."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.graph.analysis import Analysis, analyze, constants_of
from svtprune.graph.io import load_model, param_bytes, save_model, write_text_atomic
from svtprune.graph.plan import Plan, keep_mask, uniform_plan
from svtprune.graph.surgery import prune, zero_out
from svtprune.importance import group_scores
from svtprune.spiking.neurons import find_neurons, with_taps


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
                "heads": len(group.head_rows),
                "params": int(params),
                "members": sorted({f"{m.initializer}[{m.axis}]:{m.role}" for m in group.members}),
                "prunable": group.prunable,
                "refused": group.refused,
            }
        )
    return rows


def analyze_report(path: str | Path) -> dict:
    model = load_model(path)
    analysis = analyze(model)
    neurons = find_neurons(analysis.model)
    return {
        "model": str(path),
        "nodes": len(model.graph.node),
        "param_bytes": param_bytes(model),
        "groups": group_table(analysis),
        "neurons": [
            {"name": n.name, "time_steps": n.time_steps, "threshold": n.thresholds[0], "after": n.feeds_from}
            for n in neurons
        ],
    }


@dataclass
class PruneResult:
    model: onnx.ModelProto
    plan: Plan
    original_bytes: int
    pruned_bytes: int
    expected_bytes: int


def prune_uniform(path: str | Path, ratio: float, importance: str = "l2") -> PruneResult:
    """The PSViT first step: the same ratio in every prunable group, filters ranked by norm."""
    if not 0.0 <= ratio < 1.0:
        raise UserError(f"--ratio must be in [0, 1), got {ratio}")
    model = load_model(path)
    analysis = analyze(model)
    if not analysis.prunable_groups:
        reasons = "; ".join(sorted({r for g in analysis.groups for r in g.refused})) or "no weighted layers"
        raise UserError(f"{path}: no prunable channel group ({reasons})")
    plan = uniform_plan(analysis, ratio, group_scores(analysis, importance))
    plan.meta.update({"source": str(path), "importance": importance})
    pruned = prune(analysis, plan)
    expected = expected_param_bytes(analysis, plan)
    return PruneResult(pruned, plan, param_bytes(model), param_bytes(pruned), expected)


def expected_param_bytes(analysis: Analysis, plan: Plan) -> int:
    """What the file should weigh after the plan, from the plan alone (not from surgery).

    A weight cut on two axes (a layer that consumes one group and produces another) keeps
    the product of the kept fractions, so this is per tensor, not a sum over groups.
    """
    atom_keep = keep_mask(analysis, plan)
    kept_along: dict[str, dict[int, int]] = {}
    for member in analysis.members:
        kept_along.setdefault(member.initializer, {})[member.axis] = int(atom_keep[member.ids].sum())
    total = 0
    for tensor in analysis.model.graph.initializer:
        dims = list(tensor.dims)
        for axis, count in kept_along.get(tensor.name, {}).items():
            dims[axis] = count
        total += int(np.prod(dims)) * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return total


def write_outputs(result: PruneResult, out: str | Path, plan_out: str | Path | None, force: bool) -> Path:
    out = Path(out)
    plan_path = Path(plan_out) if plan_out else out.with_suffix(".plan.json")
    if plan_path.exists() and not force:
        raise UserError(f"{plan_path} already exists; pass --force to overwrite it")
    save_model(result.model, out, force=force)
    write_text_atomic(plan_path, result.plan.to_json())
    return plan_path


def verify(original: str | Path, pruned: str | Path, plan_path: str | Path, x: np.ndarray | None = None) -> dict:
    """Run the oracle: the pruned file must equal the original with the plan's slices zeroed."""
    analysis = analyze(load_model(original))
    plan = Plan.load(plan_path)
    oracle = zero_out(analysis, plan)
    candidate = load_model(pruned)
    if x is None:
        x = _random_input(analysis.model)
    out_o = _run(with_taps(oracle, find_neurons(oracle), spikes=True), x)
    out_p = _run(with_taps(candidate, find_neurons(candidate), spikes=True), x)
    logits = oracle.graph.output[0].name
    diff = float(np.abs(out_o[logits] - out_p[candidate.graph.output[0].name]).max())
    spikes_o = _spike_counts(oracle, out_o)
    spikes_p = _spike_counts(candidate, out_p)
    spikes_equal = len(spikes_o) == len(spikes_p) and all(
        np.array_equal(a, b) for a, b in zip(spikes_o, spikes_p, strict=False)
    )
    return {
        "max_logit_difference": diff,
        "neurons": len(spikes_o),
        "spike_counts_equal": bool(spikes_equal),
        "passed": bool(diff <= 1e-4 and spikes_equal),
        "samples": int(x.shape[0]),
    }


def _spike_counts(model: onnx.ModelProto, outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [
        np.stack([outputs[s].reshape(outputs[s].shape[0], -1).sum(axis=1) for s in neuron.spikes])
        for neuron in find_neurons(model)
    ]


def _random_input(model: onnx.ModelProto, batch: int = 8) -> np.ndarray:
    value = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else batch for d in value.type.tensor_type.shape.dim]
    return np.random.default_rng(0).standard_normal(dims).astype(np.float32)


def _run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    from svtprune.evaluate import make_session, predict

    return predict(make_session(model), x)
