"""``svtprune energy``: synaptic operations and 45 nm energy from measured firing rates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from svtprune.errors import UserError


def energy_command(
    model: Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)],
    data: Annotated[Path, typer.Option(help=".npz with x (N x C x H x W); firing rates are measured on it.")],
    limit: Annotated[int, typer.Option(help="Use at most this many images.")] = 512,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")] = False,
) -> None:
    """Per-layer MACs, firing rates, SOPs and energy per image (E_MAC 4.6 pJ, E_AC 0.9 pJ, 45 nm).

    Example: svtprune energy models/reference/spikformer_fmnist.onnx --data models/data/fashion_mnist_val.npz
    """
    from svtprune.data import load_npz
    from svtprune.graph.io import load_model
    from svtprune.hardware.energy import SOURCE, measure_energy
    from svtprune.runtime import check_data, make_session

    if limit < 1:
        raise UserError("--limit must be at least 1")
    onnx_model = load_model(model)
    dataset = load_npz(data)
    x = dataset.x[:limit]
    check_data(make_session(onnx_model), x)
    report = measure_energy(onnx_model, x).to_dict()
    if as_json:
        typer.echo(json.dumps(report))
        return
    table = Table(title=f"{model} on {report['images']} images (per image)")
    for column in ("layer", "op", "input", "firing rate", "dense MACs", "ops", "energy (nJ)"):
        table.add_column(column, justify="left" if column in ("layer", "op", "input") else "right")
    for layer in report["layers"]:
        kind = "spikes" if layer["spike_input"] else "real"
        table.add_row(
            layer["node"],
            layer["op"],
            kind,
            f"{layer['firing_rate']:.3f}",
            f"{layer['macs']:,.0f}",
            f"{layer['ops']:,.0f}",
            f"{layer['energy_pj'] / 1e3:,.1f}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"total: {report['total_sops']:,.0f} SOPs + {report['total_macs_real_input']:,.0f} MACs "
        f"(dense {report['total_dense_macs']:,.0f}) = {report['energy_uJ_per_image']:.2f} µJ per image  [{SOURCE}]"
    )


def register(app: typer.Typer) -> None:
    app.command("energy")(energy_command)
