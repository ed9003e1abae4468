"""The analyze job: channel groups, why some are refused, the spiking neurons found, the time and token axes."""

from __future__ import annotations

from pathlib import Path

import onnx

from svtprune.graph.analysis import analyze, group_table, prunable_bytes
from svtprune.graph.io import load_model, param_bytes
from svtprune.spiking.neurons import find_neurons
from svtprune.spiking.time_axis import find_time_axis
from svtprune.spiking.tokens import find_token_axis


def analyze_report(path: str | Path) -> dict:
    """What ``svtprune analyze`` shows: one row per group and one per neuron, as plain data."""
    model = load_model(path)
    analysis = analyze(model)
    neurons = find_neurons(analysis.model)
    reach, total = prunable_bytes(analysis)
    return {
        "model": str(path),
        "nodes": len(model.graph.node),
        "param_bytes": param_bytes(model),
        "prunable_param_bytes": reach,
        "prunable_share": reach / max(total, 1),
        "groups": group_table(analysis),
        "neurons": [
            {"name": n.name, "time_steps": n.time_steps, "threshold": n.thresholds[0], "after": n.feeds_from}
            for n in neurons
        ],
        "time_axis": time_axis_section(model),
        "tokens": tokens_section(model),
    }


def time_axis_section(model: onnx.ModelProto) -> dict:
    """T and where it lives (and a line for people), or ``T`` None and why the graph has no time axis to follow."""
    axis = find_time_axis(model)
    if isinstance(axis, str):
        return {"T": None, "reason": axis, "line": f"time axis: none followed ({axis})"}
    return {**axis.summary(), "line": axis.line()}


def tokens_section(model: onnx.ModelProto) -> dict:
    """The blocks' tokens that ``--drop-tokens`` can leave out (and a line), or ``count`` None and why not."""
    axis = find_token_axis(model)
    if isinstance(axis, str):
        first = axis.split("; after ")[0]
        return {"count": None, "reason": axis, "line": f"tokens: none can be left out ({first})"}
    line = f"tokens: {axis.line()}; --drop-tokens can leave some out"
    return {"count": axis.count, "grid": list(axis.grid), "after": axis.merge, "line": line}
