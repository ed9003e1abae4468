"""``svtprune export``: a reference SViT (spikingjelly model zoo) to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import DATA, EXPERT, OUTPUT
from svtprune.cli.options import Json, number, out_option
from svtprune.cli.render import emit_json, print_export
from svtprune.errors import ConstraintError
from svtprune.jobs.export_config import NAMED_CONFIGS

MODEL, SIZE = "Model", "Size"  # export's own help panels: which model, and its size without --config


def export(
    out: Annotated[Path, out_option("ONNX file to write.")],
    config: Annotated[
        str | None, typer.Option(help=f"A published size: {', '.join(NAMED_CONFIGS)}.", rich_help_panel=MODEL)
    ] = None,
    arch: Annotated[
        str | None, typer.Option(help="spikformer (default), sdt, qkformer or maxformer.", rich_help_panel=MODEL)
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Checkpoint from tools/train_reference.py.", rich_help_panel=MODEL)
    ] = None,
    embed: Annotated[
        int | None, typer.Option(help="Embedding width (default 64).", min=1, rich_help_panel=SIZE)
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option(
            help="Blocks (default 2); qkformer/maxformer: A,B,C per stage (default 1,1,1).", rich_help_panel=SIZE
        ),
    ] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads (default 4).", min=1, rich_help_panel=SIZE)] = None,
    steps: Annotated[
        int | None, typer.Option("--T", help="Time steps (default 4).", min=1, rich_help_panel=SIZE)
    ] = None,
    in_channels: Annotated[
        int | None, typer.Option(help="Image channels (default 1).", min=1, rich_help_panel=SIZE)
    ] = None,
    img_size: Annotated[
        int | None, typer.Option(help="Image height = width (default 28).", min=1, rich_help_panel=SIZE)
    ] = None,
    num_classes: Annotated[int | None, typer.Option(help="Classes (default 10).", min=1, rich_help_panel=SIZE)] = None,
    patch_size: Annotated[
        int | None, typer.Option(help="Spikformer patch: 4 or 16 (default 4).", min=1, rich_help_panel=SIZE)
    ] = None,
    mlp_ratio: Annotated[
        float | None,
        typer.Option(help="MLP width / embedding (default 4).", callback=number(above=0), rich_help_panel=SIZE),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Calibration images (.npz) instead of random ones.", rich_help_panel=DATA)
    ] = None,
    calib_images: Annotated[
        int | None, typer.Option(help="Calibration batch (default 16, 4 above 64 px).", min=2, rich_help_panel=DATA)
    ] = None,
    allow_dead: Annotated[
        bool, typer.Option("--allow-dead", help="Export even if calibration leaves it dead.", rich_help_panel=EXPERT)
    ] = False,
    batch: Annotated[
        int, typer.Option(help="Batch size traced at export (the axis stays dynamic).", min=1, rich_help_panel=EXPERT)
    ] = 2,
    seed: Annotated[
        int, typer.Option(help="Seed of the random initialisation and images.", rich_help_panel=EXPERT)
    ] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.", rich_help_panel=OUTPUT)] = False,
    as_json: Json = False,
) -> None:
    """Export a reference SViT (spikingjelly model zoo) to ONNX with a dynamic batch axis.

    Without --weights the model is random, calibrated on a small batch so that 5-30 % of each
    layer's neurons fire (exit 1 if it stays dead). --config picks a published size; the size
    options override it (the defaults shown apply without --config). Sizes apply to random
    initialisation only: a checkpoint carries its own.

    Example: svtprune export --config spikformer_cifar10 -o spikformer_cifar10.onnx
    """
    from svtprune.jobs.export import export_reference

    try:
        summary = export_reference(
            out=out,
            arch=arch,
            weights=weights,
            embed=embed,
            depths=depths,
            heads=heads,
            steps=steps,
            in_channels=in_channels,
            img_size=img_size,
            batch=batch,
            seed=seed,
            force=force,
            config=config,
            num_classes=num_classes,
            patch_size=patch_size,
            mlp_ratio=mlp_ratio,
            data=data,
            calib_images=calib_images,
            allow_dead=allow_dead,
        )
    except ConstraintError as exc:  # a dead network: with --json its calibration report still goes to stdout
        if as_json and exc.report:
            emit_json(exc.report)
        raise
    if as_json:
        emit_json(summary)
    else:
        print_export(summary)
