"""The analyze job: channel groups, why some are refused, and the spiking neurons found."""

from __future__ import annotations

from pathlib import Path

from svtprune.graph.analysis import analyze, group_table
from svtprune.graph.io import load_model, param_bytes
from svtprune.spiking.neurons import find_neurons


def analyze_report(path: str | Path) -> dict:
    """What ``svtprune analyze`` shows: one row per group and one per neuron, as plain data."""
    model = load_model(path)
    analysis = analyze(model)
    neurons = find_neurons(analysis.model)
    return {
        "model": str(path),
        "nodes": len(model.graph.node),
        "param_bytes": param_bytes(model),
        "groups": group_table(analysis),
        "neurons": [
            {"name": n.name, "time_steps": n.time_steps, "threshold": n.thresholds[0], "after": n.feeds_from}
            for n in neurons
        ],
    }
