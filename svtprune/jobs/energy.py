"""The energy job: synaptic operations and 45 nm energy per image, from measured firing rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from svtprune.checks import check_dataset, load_checked_model
from svtprune.data import Dataset
from svtprune.data_sources import check_preprocess_used, load_data
from svtprune.errors import UserError


def energy_report(model: str | Path, data: str | Path, limit: int = 512, preprocess: Any = None) -> dict:
    """Per-layer MACs, firing rates, SOPs and energy on at most ``limit`` images of ``data``."""
    from svtprune.hardware.energy import measure_energy

    if limit < 1:
        raise UserError(f"must be at least 1, got {limit}", option="limit")
    check_preprocess_used(preprocess, [data])
    onnx_model = load_checked_model(model)
    x = load_data(data, preprocess).x[:limit]
    check_dataset(onnx_model, Dataset(x, None), data)  # the image size; energy reads no labels
    return measure_energy(onnx_model, x).to_dict()
