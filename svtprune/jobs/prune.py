"""The prune job: uniform structured pruning (PSViT's first step) and writing model + plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from svtprune.deploy import deploy_paths, deployment
from svtprune.errors import UserError
from svtprune.graph.analysis import Analysis, analyze
from svtprune.graph.io import load_model, model_bytes, param_bytes
from svtprune.graph.plan import Plan, keep_mask, uniform_plan
from svtprune.graph.surgery import prune
from svtprune.importance import CRITERIA, DATA_DRIVEN, group_scores
from svtprune.jobs.fold_step import META_KEY, fold_if_faster
from svtprune.jobs.oracle_guard import guard_plan
from svtprune.outputs import OutputSet


@dataclass
class PruneResult:
    """The pruned model, its plan, and the byte counts the summary reports."""

    model: onnx.ModelProto
    plan: Plan
    original_bytes: int
    pruned_bytes: int
    expected_bytes: int
    deployment: dict | None = None  # what write_outputs wrote beside the model for ``format`` 'ort'
    refused: list[str] = field(default_factory=list)  # groups left whole: their prune failed the oracle
    norm_folding: dict | None = None  # the BN fold's section (jobs/fold_step.py), once the file is written


def prune_uniform(path: str | Path, ratio: float, importance: str = "l2") -> PruneResult:
    """The PSViT first step: the same ratio in every prunable group, filters ranked by norm."""
    if not 0.0 <= ratio < 1.0:
        raise UserError(f"must be in [0, 1), got {ratio}", option="ratio")
    check_importance(importance)
    model = load_model(path)
    analysis = analyze(model)
    if not analysis.prunable_groups:
        reasons = "; ".join(sorted({r for g in analysis.groups for r in g.refused})) or "no weighted layers"
        raise UserError(f"{path}: no prunable channel group ({reasons})")
    plan = uniform_plan(analysis, ratio, group_scores(analysis, importance))
    plan.meta.update({"source": str(path), "importance": importance})
    refused = guard_plan(analysis, plan)  # never write a model that fails the oracle
    if refused:
        plan.meta["refused_by_oracle"] = refused
    pruned = prune(analysis, plan)
    expected = expected_param_bytes(analysis, plan)
    return PruneResult(pruned, plan, param_bytes(model), param_bytes(pruned), expected, refused=refused)


def check_importance(importance: str) -> None:
    """prune takes no data, so only the data-free criteria rank its channels (say so before loading anything)."""
    if importance in DATA_DRIVEN:
        raise UserError(
            f"{importance!r} needs calibration images, which prune does not take; use {' or '.join(CRITERIA)} "
            "(compress ranks channels by it on its data)",
            option="importance",
        )
    if importance not in CRITERIA:
        raise UserError(f"must be one of {', '.join(CRITERIA)}, got {importance!r}", option="importance")


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
        kind = analysis.stored.get(tensor.name, tensor.data_type)  # as the file stores it (float16 + Cast)
        total += int(np.prod(dims)) * onnx.helper.tensor_dtype_to_np_dtype(kind).itemsize
    return total


def fold_norms_if_faster(result: PruneResult) -> None:
    """The result's BNs folded into the layers before them where ORT runs that faster (jobs/fold_step.py), in
    place: the plan's meta records it for ``verify``, and the byte counts lose the BNs' constants."""
    before = param_bytes(result.model)
    result.model, result.norm_folding = fold_if_faster(result.model)
    if result.norm_folding["applied"]:
        result.plan.meta[META_KEY] = result.norm_folding["applied"]
        saved = before - param_bytes(result.model)
        result.pruned_bytes, result.expected_bytes = result.pruned_bytes - saved, result.expected_bytes - saved


def claim_outputs(
    out: str | Path, plan_out: str | Path | None, model: str | Path, force: bool, format: str = "onnx"
) -> OutputSet:
    """The pruned model and its plan (default ``out`` with ``.plan.json``), checked and locked before pruning.

    With ``format`` 'ort', also the ``.ort`` file and its operator config (deploy.py)."""
    out = Path(out)
    paths = (out, Path(plan_out) if plan_out else out.with_suffix(".plan.json"), *deploy_paths(out, format))
    return OutputSet.claim(paths, (model,), force)


def write_outputs(result: PruneResult, outputs: OutputSet, format: str = "onnx") -> Path:
    """The pruned model and its plan (and the ORT files), all or none; returns the plan's path.

    The model's BNs are folded into their layers first where that is faster (``fold_norms_if_faster``).
    With ``format`` 'ort', ``result.deployment`` says what was written beside the model."""
    fold_norms_if_faster(result)
    out, plan_path = outputs.paths[:2]
    data = model_bytes(result.model)
    extra = deployment(data, out, format)
    outputs.write({out: data, plan_path: result.plan.to_json(), **(extra.contents() if extra else {})})
    result.deployment = extra.section() if extra else None
    return plan_path
