"""``svtprune eval``: accuracy, bytes and latency of one model on ORT CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import DATA, EXPERT, OUTPUT
from svtprune.cli.options import DATA_KINDS, Json, ModelArg, PreprocessSpec
from svtprune.cli.render import emit_json, print_eval
from svtprune.cli.render_profile import print_profile


def eval_model(
    model: ModelArg,
    data: Annotated[Path, typer.Option(help=f"{DATA_KINDS}.", rich_help_panel=DATA)],
    reference: Annotated[
        Path | None, typer.Option(help="Model to agree with when data has no labels.", rich_help_panel=DATA)
    ] = None,
    batch: Annotated[
        int | None,
        typer.Option(
            help="Batch size for accuracy (default: up to 256, fewer for large activations).",
            min=1,
            rich_help_panel=EXPERT,
        ),
    ] = None,
    preprocess: PreprocessSpec = None,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="Also each layer's share of the batch-1 time, from ONNX Runtime's profiler.",
            rich_help_panel=OUTPUT,
        ),
    ] = False,
    as_json: Json = False,
) -> None:
    """Accuracy (or agreement), parameter and file bytes, median latency at batch 1 and 64 on ORT CPU.

    With --profile, also where the batch-1 time goes: each layer's share, from ONNX Runtime's profiler.

    Example: svtprune eval models/reference/spikformer_fmnist.onnx --data models/data/fashion_mnist_val.npz
    """
    from svtprune.jobs.evaluate import evaluate_file

    result = evaluate_file(
        model=model,
        data=data,
        reference=reference,
        batch=batch,
        progress=not as_json,
        preprocess=preprocess,
        profile=profile,
    )
    if as_json:
        emit_json(result.to_dict())
    else:
        print_eval(model, result.to_dict())
        if result.profile is not None:
            print_profile(result.profile)
