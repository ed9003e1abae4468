"""``svtprune analyze``: the channel groups, what is refused and why, the neurons found."""

from __future__ import annotations

from rich.console import Console

from svtprune.cli.options import Json, ModelArg
from svtprune.cli.render import emit_json, print_analyze


def analyze(model: ModelArg, as_json: Json = False) -> None:
    """List the channel groups that can be pruned together, the spiking neurons found, and the time axis (T).

    Example: svtprune analyze models/reference/spikformer_fmnist.onnx
    """
    from svtprune.jobs.analyze import analyze_report

    report = analyze_report(model)
    if as_json:
        emit_json(report)
    else:
        print_analyze(model, report)
        Console().print(report["time_axis"]["line"], highlight=False, soft_wrap=True)
        Console().print(report["tokens"]["line"], highlight=False, soft_wrap=True)
