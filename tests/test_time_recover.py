"""Issue 30, item 3: a time-cut model's head re-fitted without labels to the original's logits (recover/time_cut.py).

The recovery may change only the head (and add a small branch at the output): every neuron must
spike as in the exact cut, the logits must come closer to the original's on the calibration images,
the result must be the same on every run, and ``verify`` must still pass the file (the head checked
as a re-fitted layer, everything else exactly).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from svtprune.jobs.compress import compress
from svtprune.jobs.timesteps import prune_timesteps
from svtprune.jobs.verify import verify
from svtprune.recover.time_cut import BRANCH, find_head, refit_time_cut, without_branch
from svtprune.runtime import logits_of, make_session
from svtprune.spiking.compute_once import compute_once
from svtprune.spiking.time_axis import find_time_axis
from svtprune.spiking.time_check import spikes_differ
from svtprune.spiking.zoo import ArchConfig
from tests.model_builders import spiking_model

ROOT = Path(__file__).resolve().parents[1]
SDT = ROOT / "models" / "reference" / "sdt_fmnist.onnx"
SPIKFORMER = ROOT / "models" / "reference" / "spikformer_fmnist.onnx"
VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"


@pytest.fixture(scope="module")
def spikformer_t4(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    """A small random Spikformer at T=4 (calibrated to fire, as the session's small models are)."""
    torch.set_num_threads(1)
    config = ArchConfig(arch="spikformer", T=4, embed_dims=32, depths=1, num_heads=4)
    return spiking_model(config, seed=1, path=tmp_path_factory.mktemp("recover") / "spikformer.onnx")


def calibration(count: int = 96) -> np.ndarray:
    return np.load(VAL)["x"][:count]


def squared_error(model: onnx.ModelProto, x: np.ndarray, target: np.ndarray) -> float:
    return float(((logits_of(make_session(model), x) - target) ** 2).mean())


@pytest.mark.parametrize("membrane", [False, True])
def test_recovery_brings_the_logits_closer_and_keeps_every_spike(
    spikformer_t4: onnx.ModelProto, membrane: bool
) -> None:
    axis = find_time_axis(spikformer_t4)
    cut, _ = compute_once(spikformer_t4, axis, 2)
    x = calibration()
    target = logits_of(make_session(spikformer_t4), x)
    result = refit_time_cut(spikformer_t4, cut, x, target, membrane=membrane, axis=axis)
    assert not result.what.startswith("none"), result.what
    assert squared_error(result.model, x, target) < squared_error(cut, x, target)
    assert spikes_differ(cut, result.model, 2) is None  # only the head moved
    assert result.agreement["cut"] < max(v for k, v in result.agreement.items() if k != "cut")
    kept = without_branch(result.model)
    assert [n.op_type for n in kept.graph.node] == [n.op_type for n in cut.graph.node]
    assert any(n.name.startswith(BRANCH) for n in result.model.graph.node) == ("membrane" in result.what)


def test_recovery_is_deterministic(spikformer_t4: onnx.ModelProto) -> None:
    axis = find_time_axis(spikformer_t4)
    cut, _ = compute_once(spikformer_t4, axis, 2)
    x = calibration()
    first, second = (refit_time_cut(spikformer_t4, cut, x, axis=axis) for _ in range(2))
    assert first.what == second.what and first.model.SerializeToString() == second.model.SerializeToString()


def test_recovery_says_why_not(spikformer_t4: onnx.ModelProto) -> None:
    """The cut given back untouched where no head is found or no re-fit agrees better (here: the original itself)."""
    axis = find_time_axis(spikformer_t4)
    x = calibration(32)
    same = refit_time_cut(spikformer_t4, spikformer_t4, x, axis=axis)
    assert same.model is spikformer_t4 and same.what.startswith("none: no re-fit agreed better")
    headless = onnx.ModelProto()
    headless.CopyFrom(spikformer_t4)
    head = find_head(headless)
    assert not isinstance(head, str)
    head.node.input[1] = head.node.input[0]  # the weight is no longer a constant
    assert isinstance(find_head(headless), str)


def test_prune_timesteps_with_data_verifies(tmp_path: Path) -> None:
    """``prune --timesteps 2`` with calibration images: the plan records the re-fit, verify passes the file."""
    x = np.load(VAL)["x"]
    result = prune_timesteps(SDT, 2, calibration=x[:300])
    record = result.plan.meta["time_recovery"]
    assert record["layers"] and not record["what"].startswith("none")
    out, plan = tmp_path / "sdt2.onnx", tmp_path / "sdt2.plan.json"
    onnx.save(result.model, str(out))
    plan.write_text(result.plan.to_json())
    checked = verify(SDT, out, plan, x[300:316])
    assert checked["passed"] and "re-fitted after the cut" in checked["time_steps"]
    assert checked["refit"]["structure_differences"] == [] and checked["refit"]["layers"] == record["layers"]


def test_compress_recovers_each_candidate_apart_from_its_judged_images(tmp_path: Path) -> None:
    """compress's time phase re-fits on the search split's calibration images, judges on the others, and says so."""
    data = np.load(VAL)
    small = tmp_path / "val600.npz"
    np.savez(small, x=data["x"][:600], y=data["y"][:600])  # 300 to search: 128 to re-fit on, 172 to judge
    out = tmp_path / "two.onnx"
    report = compress(SPIKFORMER, small, out, 5.0, timesteps=2, time_limit=1.0)
    section = report["timesteps"]
    assert section["chosen"] == 2 and section["recovery"] == section["candidates"][0]["recovery"]
    assert section["candidates"][0]["images"] <= 300 - 128
    meta = json.loads(out.with_suffix(".plan.json").read_text())["meta"]
    assert ("time_recovery" in meta) == (not section["recovery"].startswith("none"))
    assert verify(SPIKFORMER, out, out.with_suffix(".plan.json"), data["x"][600:616])["passed"]
