"""``svtprune energy``: synaptic operations and 45 nm energy from measured firing rates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import DATA
from svtprune.cli.options import DATA_KINDS, Json, ModelArg, PreprocessSpec
from svtprune.cli.render import emit_json, print_energy


def energy(
    model: ModelArg,
    data: Annotated[Path, typer.Option(help=f"{DATA_KINDS}; firing rates are measured on it.", rich_help_panel=DATA)],
    limit: Annotated[int, typer.Option(help="Use at most this many images.", min=1, rich_help_panel=DATA)] = 512,
    preprocess: PreprocessSpec = None,
    as_json: Json = False,
) -> None:
    """Per-layer MACs, firing rates, SOPs and energy per image (E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm).

    Example: svtprune energy models/reference/spikformer_fmnist.onnx --data models/data/fashion_mnist_val.npz
    """
    from svtprune.jobs.energy import energy_report

    report = energy_report(model=model, data=data, limit=limit, preprocess=preprocess)
    if as_json:
        emit_json(report)
    else:
        print_energy(model, report)
