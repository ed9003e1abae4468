"""``svtprune prune``: uniform structured pruning, the same ratio in every group."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.options import DeployFormat, Force, Json, ModelArg, number, out_option
from svtprune.cli.render import emit_json, print_prune


def prune(
    model: ModelArg,
    out: Annotated[Path, out_option("Pruned ONNX file to write.")],
    ratio: Annotated[
        float,
        typer.Option(
            help="Fraction of channels removed from every prunable group.", callback=number(minimum=0, below=1)
        ),
    ] = 0.3,
    plan_out: Annotated[Path | None, typer.Option(help="Plan JSON (default: OUT with .plan.json).")] = None,
    importance: Annotated[str, typer.Option(help="Channel ranking: l2 (the papers') or l1.")] = "l2",
    format: DeployFormat = "onnx",
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Uniform structured pruning (PSViT's first step): the same ratio in every group, by filter norm.

    Example: svtprune prune model.onnx --ratio 0.3 -o pruned.onnx
    """
    from svtprune.jobs.prune import claim_outputs, prune_uniform, write_outputs

    with claim_outputs(out, plan_out, model, force, format) as outputs:
        result = prune_uniform(path=model, ratio=ratio, importance=importance)
        plan_path = write_outputs(result, outputs, format)
    summary = {
        "output": str(out),
        "plan": str(plan_path),
        "ratio": ratio,
        "original_param_bytes": result.original_bytes,
        "pruned_param_bytes": result.pruned_bytes,
        "expected_param_bytes": result.expected_bytes,
        "memory_saving": 1 - result.pruned_bytes / result.original_bytes,
    }
    if result.deployment is not None:
        summary["deployment"] = result.deployment
    if as_json:
        emit_json(summary)
    else:
        print_prune(summary)
