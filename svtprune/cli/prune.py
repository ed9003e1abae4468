"""``svtprune prune``: uniform structured pruning (the same ratio in every group), and fewer time steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from svtprune.cli.help import OUTPUT
from svtprune.cli.options import DeployFormat, Force, Json, ModelArg, number, out_option
from svtprune.cli.render import emit_json, print_prune

DEFAULT_RATIO = 0.3  # what --ratio means when neither --ratio nor a time option is given
PRUNING = "Pruning"  # the help panel of what prune removes


def prune(
    model: ModelArg,
    out: Annotated[Path, out_option("Pruned ONNX file to write.")],
    ratio: Annotated[
        float | None,
        typer.Option(
            help=f"Fraction of channels removed from every prunable group (default {DEFAULT_RATIO}; "
            "none when only --timesteps or --stem-once is given).",
            callback=number(minimum=0, below=1),
            show_default=False,
            rich_help_panel=PRUNING,
        ),
    ] = None,
    timesteps: Annotated[
        int | None,
        typer.Option(
            help="Run T' time steps instead of the model's T (1 <= T' < T): the first T' steps of every neuron "
            "exactly as before, the head averaging over T'. Alone, only the time axis is cut.",
            show_default=False,
            rich_help_panel=PRUNING,
        ),
    ] = None,
    stem_once: Annotated[
        bool | None,
        typer.Option(
            "--stem-once/--no-stem-once",
            help="Run the layers before the first neuron once per image instead of T times (exact; "
            "default on with --timesteps; alone, the only change).",
            show_default=False,
            rich_help_panel=PRUNING,
        ),
    ] = None,
    plan_out: Annotated[
        Path | None, typer.Option(help="Plan JSON (default: OUT with .plan.json).", rich_help_panel=OUTPUT)
    ] = None,
    importance: Annotated[
        str, typer.Option(help="Channel ranking: l2 (the papers') or l1.", rich_help_panel=PRUNING)
    ] = "l2",
    format: DeployFormat = "onnx",
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Uniform structured pruning (PSViT's first step): the same ratio in every group, by filter norm.

    With --timesteps T', the model runs T' of its T time steps (and, exactly, its stem once per image).

    Example: svtprune prune model.onnx --ratio 0.3 -o pruned.onnx

    Example: svtprune prune model.onnx --timesteps 2 -o fast.onnx
    """
    from svtprune.jobs.prune import claim_outputs, prune_uniform, write_outputs

    timed = timesteps is not None or stem_once
    if ratio is None and not timed:
        ratio = DEFAULT_RATIO
    with claim_outputs(out, plan_out, model, force, format) as outputs:
        if timed:
            from svtprune.jobs.timesteps import prune_timesteps

            once = stem_once if stem_once is not None else True
            result = prune_timesteps(model, timesteps, stem_once=once, ratio=ratio, importance=importance)
        else:
            result = prune_uniform(path=model, ratio=ratio, importance=importance)
        plan_path = write_outputs(result, outputs, format)
    summary = {
        "output": str(out),
        "plan": str(plan_path),
        "ratio": ratio or 0.0,
        "original_param_bytes": result.original_bytes,
        "pruned_param_bytes": result.pruned_bytes,
        "expected_param_bytes": result.expected_bytes,
        "memory_saving": 1 - result.pruned_bytes / result.original_bytes,
        "oracle": "the plain prune matched the oracle on random inputs before it was written",
        "refused_by_oracle": result.refused,
        "accuracy_measured": False,
    }
    if timed:
        meta = result.plan.meta
        summary.update(timesteps=meta["timesteps"], timesteps_original=meta["timesteps_original"])
        summary["stem_once"] = meta.get("stem_once", False)
    if result.deployment is not None:
        summary["deployment"] = result.deployment
    if as_json:
        emit_json(summary)
        return
    print_prune(summary)
    if timed:
        line = f"time steps: {summary['timesteps_original']} -> {summary['timesteps']}"
        once = summary["stem_once"]
        Console(stderr=True).print(line + (f"; {once}" if once else ""), highlight=False)
