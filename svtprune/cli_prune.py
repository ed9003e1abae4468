"""CLI commands for graph analysis and structured pruning: analyze, prune, verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from svtprune.errors import ConstraintError

ModelArg = Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")]


def analyze_command(model: ModelArg, as_json: JsonOpt = False) -> None:
    """List the channel groups that can be pruned together, and the spiking neurons found.

    Example: svtprune analyze models/reference/spikformer_fmnist.onnx
    """
    from svtprune.pruning import analyze_report

    report = analyze_report(model)
    if as_json:
        typer.echo(json.dumps(report))
        return
    console = Console()
    table = Table(title=f"{model}: {report['nodes']} nodes, {report['param_bytes']:,} parameter bytes")
    table.add_column("group", overflow="fold", min_width=24)
    for column in ("channels", "heads", "params", "members"):
        table.add_column(column, justify="right")
    table.add_column("status", overflow="fold")
    for row in report["groups"]:
        status = "prunable" if row["prunable"] else "refused: " + "; ".join(row["refused"])
        table.add_row(
            row["group"],
            str(row["channels"]),
            str(row["heads"] or ""),
            f"{row['params']:,}",
            str(len(row["members"])),
            status,
        )
    console.print(table)
    steps = {n["time_steps"] for n in report["neurons"]}
    console.print(f"{len(report['neurons'])} spiking neurons found, time steps {sorted(steps)}")


def prune_command(
    model: ModelArg,
    out: Annotated[Path, typer.Option("-o", "--out", help="Pruned ONNX file to write.")],
    ratio: Annotated[float, typer.Option(help="Fraction of channels removed from every prunable group.")] = 0.3,
    plan_out: Annotated[Path | None, typer.Option(help="Plan JSON (default: OUT with .plan.json).")] = None,
    importance: Annotated[str, typer.Option(help="Channel ranking: l2 (the papers') or l1.")] = "l2",
    force: ForceOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Uniform structured pruning (PSViT's first step): the same ratio in every group, by filter norm.

    Example: svtprune prune model.onnx --ratio 0.3 -o pruned.onnx
    """
    from svtprune.pruning import prune_uniform, write_outputs

    result = prune_uniform(model, ratio, importance)
    plan_path = write_outputs(result, out, plan_out, force)
    summary = {
        "output": str(out),
        "plan": str(plan_path),
        "ratio": ratio,
        "original_param_bytes": result.original_bytes,
        "pruned_param_bytes": result.pruned_bytes,
        "expected_param_bytes": result.expected_bytes,
        "memory_saving": 1 - result.pruned_bytes / result.original_bytes,
    }
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        Console(stderr=True).print(
            f"wrote {out} ({result.pruned_bytes:,} parameter bytes, was {result.original_bytes:,}: "
            f"{summary['memory_saving']:.1%} saved) and {plan_path}"
        )


def verify_command(
    original: ModelArg,
    pruned: Annotated[Path, typer.Argument(help="Pruned ONNX file.", show_default=False)],
    plan: Annotated[Path, typer.Option(help="Plan JSON written by prune or compress.")],
    data: Annotated[Path | None, typer.Option(help=".npz whose x to run (default: random inputs).")] = None,
    samples: Annotated[int, typer.Option(help="How many images of --data to run.")] = 64,
    as_json: JsonOpt = False,
) -> None:
    """Check a pruned model against the oracle: the original with the removed slices zeroed.

    A sample passes when logits agree to 1e-4 and every neuron's spike count is identical, or when
    the first difference is a membrane sitting on its threshold (float summation order). Exit 0 when
    no sample fails, else 1.
    Example: svtprune verify model.onnx pruned.onnx --plan pruned.plan.json
    """
    from svtprune.data import load_npz
    from svtprune.pruning import verify

    x = load_npz(data).x[:samples] if data else None
    result = verify(original, pruned, plan, x)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        verdict = "PASS" if result["passed"] else "FAIL"
        Console(stderr=True).print(
            f"{verdict}: {result.get('exact', 0)} of {result['samples']} samples identical (logits to 1e-4, "
            f"every spike count), {result.get('threshold_ties', 0)} diverge at a membrane on its threshold "
            f"(float summation order), {result.get('failures', result['samples'])} fail"
        )
    if not result["passed"]:
        raise ConstraintError("pruned model does not match the oracle")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
    app.command("prune")(prune_command)
    app.command("verify")(verify_command)
