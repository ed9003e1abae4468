"""The time-axis prune job: fewer time steps (``prune --timesteps T'``), the stem run once, channels optional.

Channels first (when ``--ratio`` is given, the uniform prune as ``prune`` does it), then the cut
to T' steps and the exact rewrite that runs the layers before the first neuron once per image,
then a check on random images that every neuron's first T' steps spike as before.
The plan records T and T' in its meta, so a reader of the plan sees the model runs fewer steps.
With data (``calibration``), the cut's head is then re-fitted without labels to the original's
logits on those images (recover/time_cut.py), where that agrees better with the original,
cross-validated; the plan's ``time_recovery`` says so and names the re-fitted layers, which
``verify`` then checks as re-fitted ones (every neuron still spikes as the exact cut's).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from svtprune.checks import load_checked_data
from svtprune.errors import UserError
from svtprune.graph.io import load_model, param_bytes
from svtprune.graph.plan import Plan
from svtprune.jobs.prune import PruneResult, prune_uniform
from svtprune.jobs.token_step import NEEDS_DATA, without_tokens
from svtprune.recover.time_cut import changed_layers, refit_time_cut
from svtprune.spiking.compute_once import compute_once
from svtprune.spiking.time_axis import TimeAxis, find_time_axis
from svtprune.spiking.time_check import spikes_differ
from svtprune.spiking.timesteps import shorten

RECOVERY_IMAGES = 1000  # the first images of --data the head is re-fitted on (1,000: +0.7 points at T'=2 on the SDT)


def time_axis_of(model: onnx.ModelProto, path: str | Path) -> TimeAxis:
    """The model's time axis; a graph without one this tool can follow is the user's input problem (exit 2)."""
    axis = find_time_axis(model)
    if isinstance(axis, str):
        raise UserError(f"{path}: no time axis to cut: {axis}")
    return axis


def check_timesteps(timesteps: int, steps: int) -> None:
    if not 1 <= timesteps < steps:
        raise UserError(f"must be in [1, {steps - 1}]: the model runs T={steps} steps, got {timesteps}", "timesteps")


def prune_timesteps(
    path: str | Path,
    timesteps: int | None,
    stem_once: bool = True,
    ratio: float | None = None,
    importance: str = "l2",
    calibration: np.ndarray | None = None,
    drop_tokens: int | None = None,
) -> PruneResult:
    """The model at ``path`` cut to ``timesteps`` steps (None: all T), its stem once, its channels by ``ratio``,
    ``drop_tokens`` tokens left out of its blocks (ranked on ``calibration``); with ``calibration`` images
    (unlabelled), the cut's head re-fitted to the original's logits on them."""
    original = load_model(path)
    if timesteps is not None:
        check_timesteps(timesteps, time_axis_of(original, path).steps)  # before any channel is pruned
    if ratio is not None:
        result = prune_uniform(path=path, ratio=ratio, importance=importance)
        model, plan, expected = result.model, result.plan, result.expected_bytes - result.pruned_bytes
        refused = result.refused
    else:
        model, plan, expected, refused = original, Plan(meta={"source": str(path)}), 0, []
    axis = time_axis_of(model, path)
    plan.meta["timesteps_original"] = axis.steps
    plan.meta["timesteps"] = axis.steps if timesteps is None else timesteps
    full, steps = model, plan.meta["timesteps"]
    if stem_once:  # both rewrites from one reading of the time axis (at T' = 1 it cannot be read again)
        model, plan.meta["stem_once"] = compute_once(model, axis, steps)
    elif steps != axis.steps:
        model = shorten(model, axis, steps)
    problem = spikes_differ(full, model, steps)
    if problem is not None:
        raise UserError(f"{path}: cannot cut the time axis of this graph exactly ({problem})")
    if drop_tokens:
        if calibration is None:
            raise UserError(NEEDS_DATA, "drop_tokens")
        model, tokens = without_tokens(model, drop_tokens, calibration, path)
        plan.meta.update(tokens)
    if calibration is not None and (steps < axis.steps or drop_tokens):
        recovery = refit_time_cut(original, model, calibration[:RECOVERY_IMAGES], axis=axis)
        plan.meta["time_recovery"] = {"what": recovery.what, "layers": changed_layers(model, recovery.model)}
        model = recovery.model
    size = param_bytes(model)  # the time rewrites change only a few shape constants: what they hold is expected
    return PruneResult(model, plan, param_bytes(original), size, size + expected, refused=refused)


def calibration_images(
    data: str | Path | None, model: str | Path, preprocess: str | Path | None = None
) -> np.ndarray | None:
    """The first ``RECOVERY_IMAGES`` images of ``--data`` (checked against the model; labels unused), or None."""
    if data is None:
        return None
    return load_checked_data(data, load_model(model), preprocess).x[:RECOVERY_IMAGES]
