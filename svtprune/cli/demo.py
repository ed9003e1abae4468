"""``svtprune demo``: compress the shipped reference Spikformer and show where the report is."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import METHOD, OUTPUT
from svtprune.cli.render import print_compress, print_demo_start, progress


def demo(
    out_dir: Annotated[
        Path, typer.Option(help="Folder for the compressed model and its report.", rich_help_panel=OUTPUT)
    ] = Path("svtprune-demo"),
    calib: Annotated[
        int,
        typer.Option(
            help="Images the search scores candidates on (the rest are held out).", min=1, rich_help_panel=METHOD
        ),
    ] = 400,
) -> None:
    """Compress the shipped reference Spikformer within 1 accuracy point and show where the report is.

    The search scores candidates on --calib images (400 keeps the demo to minutes on two cores; the
    accuracy reported is measured on the other 3,600).
    """
    from svtprune.jobs.demo import DEMO_MAX_ACCURACY_DROP, demo_output, run_demo, shipped_files

    print_demo_start(*shipped_files(), DEMO_MAX_ACCURACY_DROP)
    with progress("compressing") as say:
        report = run_demo(out_dir=out_dir, calib=calib, progress=say)
    print_compress(report, demo_output(out_dir))
