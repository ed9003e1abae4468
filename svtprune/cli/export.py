"""``svtprune export``: a reference SViT (spikingjelly model zoo) to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.options import Json, out_option
from svtprune.cli.render import emit_json, print_export


def export(
    out: Annotated[Path, out_option("ONNX file to write.")],
    arch: Annotated[str, typer.Option(help="spikformer, sdt or qkformer.")] = "spikformer",
    weights: Annotated[Path | None, typer.Option(help="Checkpoint from tools/train_reference.py.")] = None,
    embed: Annotated[int, typer.Option(help="Embedding width (random init only).", min=1)] = 64,
    depths: Annotated[int, typer.Option(help="Transformer blocks (random init only).", min=1)] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (random init only).", min=1)] = 4,
    steps: Annotated[int, typer.Option("--T", help="Time steps (random init only).", min=1)] = 4,
    in_channels: Annotated[int, typer.Option(help="Image channels (random init only).", min=1)] = 1,
    img_size: Annotated[int, typer.Option(help="Image height = width (random init only).", min=1)] = 28,
    batch: Annotated[int, typer.Option(help="Batch size traced at export (the axis stays dynamic).", min=1)] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: Json = False,
) -> None:
    """Export a reference SViT (spikingjelly model zoo) to ONNX with a dynamic batch axis.

    Example: svtprune export --arch spikformer --weights models/reference/spikformer_fmnist.pt -o m.onnx
    """
    from svtprune.jobs.export import export_reference

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
    )
    if as_json:
        emit_json(summary)
    else:
        print_export(summary)
