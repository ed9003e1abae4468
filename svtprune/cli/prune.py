"""``svtprune prune``: uniform structured pruning (the same ratio in every group), and fewer time steps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from svtprune.cli.help import DATA, OUTPUT
from svtprune.cli.options import DATA_KINDS, DeployFormat, Force, Json, ModelArg, PreprocessSpec, number, out_option
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
    drop_tokens: Annotated[
        int | None,
        typer.Option(
            help="Leave the K tokens that move the logits least (measured on --data, no labels) out of the "
            "blocks: training-free token pruning, an approximation whose accuracy prune does not measure.",
            callback=number(minimum=1),
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
    data: Annotated[
        Path | None,
        typer.Option(
            help=f"{DATA_KINDS}. With --timesteps: the cut's head is re-fitted without labels to the original's "
            "logits on the first 1,000 images, kept only where it agrees better (cross-validated).",
            show_default=False,
            rich_help_panel=DATA,
        ),
    ] = None,
    preprocess: PreprocessSpec = None,
    format: DeployFormat = "onnx",
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Uniform structured pruning (PSViT's first step): the same ratio in every group, by filter norm.

    With --timesteps T', the model runs T' of its T time steps (and, exactly, its stem once per image).

    Example: svtprune prune model.onnx --ratio 0.3 -o pruned.onnx

    Example: svtprune prune model.onnx --timesteps 2 -o fast.onnx
    """
    from svtprune.errors import UserError
    from svtprune.jobs.prune import claim_outputs, prune_uniform, write_outputs

    timed = timesteps is not None or stem_once or drop_tokens is not None
    if data is not None and timesteps is None and drop_tokens is None:
        raise UserError(
            "is read only with --timesteps or --drop-tokens (to re-fit the head, to rank tokens); "
            "prune measures nothing",
            "data",
        )
    if drop_tokens is not None and data is None:
        from svtprune.jobs.token_step import NEEDS_DATA

        raise UserError(NEEDS_DATA, "drop_tokens")
    if ratio is None and not timed:
        ratio = DEFAULT_RATIO
    with claim_outputs(out, plan_out, model, force, format) as outputs:
        if timed:
            from svtprune.jobs.timesteps import calibration_images, prune_timesteps

            once, calibration = (
                stem_once if stem_once is not None else True,
                calibration_images(data, model, preprocess),
            )
            result = prune_timesteps(
                model,
                timesteps,
                stem_once=once,
                ratio=ratio,
                importance=importance,
                calibration=calibration,
                drop_tokens=drop_tokens,
            )
        else:
            result = prune_uniform(path=model, ratio=ratio, importance=importance)
        plan_path = write_outputs(result, outputs, format)
    summary = prune_summary(result, out, plan_path, ratio, timed)
    if as_json:
        emit_json(summary)
        return
    print_prune(summary)
    if (result.norm_folding or {}).get("applied"):
        Console(stderr=True).print(f"{result.norm_folding['applied']}, measured faster", highlight=False)
    if timed:
        line = f"time steps: {summary['timesteps_original']} -> {summary['timesteps']}"
        once, recovery = summary["stem_once"], summary.get("time_recovery")
        line += (f"; {once}" if once else "") + (f"; {recovery['what']}" if recovery else "")
        if summary.get("tokens_kept") is not None:
            line += f"; {len(summary['tokens_kept'])} of {summary['tokens']} tokens through the blocks"
        Console(stderr=True).print(line, highlight=False)


def prune_summary(result: Any, out: Path, plan_path: Path, ratio: float | None, timed: bool) -> dict:
    """What ``prune --json`` prints: the bytes, what the oracle checked, and that accuracy was not measured."""
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
        "norm_folding": result.norm_folding,
    }
    if timed:
        meta = result.plan.meta
        summary.update(timesteps=meta["timesteps"], timesteps_original=meta["timesteps_original"])
        summary["stem_once"] = meta.get("stem_once", False)
        summary["time_recovery"] = meta.get("time_recovery")
        summary.update(tokens_kept=meta.get("tokens_kept"), tokens=meta.get("tokens"))
    if result.deployment is not None:
        summary["deployment"] = result.deployment
    return summary
