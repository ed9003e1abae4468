"""The shared shell of the search commands: a status line while they run, the report on --json."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from svtprune.errors import ConstraintError

# fine-tuning options shared by compress and quantize
FinetuneData = Annotated[
    Path | None,
    typer.Option(help="Training .npz (never the --data images): fine-tune the result from the original model."),
]
FinetuneEpochs = Annotated[int, typer.Option(help="Passes over --finetune-data.")]
FinetuneLr = Annotated[float, typer.Option(help="AdamW peak learning rate of the fine-tuning.")]
ScaleCodes = Annotated[
    bool,
    typer.Option(
        "--scale-codes/--float16-scales",
        help="Store each quantized layer's scales as uint8 codes of one power-of-two step (1 byte per channel) "
        "or as float16 (2 bytes).",
    ),
]
Int8Biases = Annotated[
    bool,
    typer.Option(
        "--int8-biases/--float16-biases",
        help="Store a layer's bias (and the scale and shift of a BatchNormalization right after it) as int8 "
        "with one scale (1 byte per value) once its weight takes 4 bits or fewer, or keep them float16 (2 bytes).",
    ),
]
FinetuneSearchDrop = Annotated[
    float | None, typer.Option(help="Points the search may lose before fine-tuning (default 3x --max-accuracy-drop).")
]


def run_search(label: str, run: Callable[[Callable[[str], None]], dict], as_json: bool) -> dict | None:
    """``run(progress)`` under a status line; with ``as_json`` the report (a failed one too) goes to stdout.

    Returns the report for the command to print, or None when it was already printed as JSON.
    """
    with Console(stderr=True).status(label) as status:
        try:
            report = run(status.update)
        except ConstraintError as exc:
            if as_json and exc.report:
                typer.echo(json.dumps(exc.report))
            raise
    if as_json:
        typer.echo(json.dumps(report))
        return None
    return report
