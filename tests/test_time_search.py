"""Issue 30, item 3: ``compress`` weighs fewer time steps (jobs/time_step.py), and ``verify`` checks time-cut plans.

The compress runs use 400 images of the shipped validation split (200 to search, 200 held out) and a
short ``time_limit`` for the channel search, so the time phase, which runs before it, is what is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from svtprune.cli.app import run as cli
from svtprune.errors import ConstraintError, UserError
from svtprune.jobs.compress import compress
from svtprune.jobs.options import CompressOptions, parse_timesteps
from svtprune.jobs.timesteps import prune_timesteps
from svtprune.jobs.verify import verify
from svtprune.spiking.neurons import find_neurons

ROOT = Path(__file__).resolve().parents[1]
SPIKFORMER = ROOT / "models" / "reference" / "spikformer_fmnist.onnx"
SDT = ROOT / "models" / "reference" / "sdt_fmnist.onnx"
VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"
SECTION_KEYS = {"original", "chosen", "stem_once", "share_of_budget", "search_budget_points", "candidates", "reason"}
CANDIDATE_KEYS = {"timesteps", "accuracy_search", "accuracy_held", "verdict", "images", "stderr"}


@pytest.fixture(scope="module")
def small_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = np.load(VAL)
    path = tmp_path_factory.mktemp("data") / "val400.npz"
    np.savez(path, x=data["x"][:400], y=data["y"][:400])
    return path


def test_speed_goal_cuts_time_steps_and_verify_passes(small_val: Path, tmp_path: Path) -> None:
    out = tmp_path / "fast.onnx"
    # the latency objective without a speed goal: no speed constraint for a loaded test machine to miss
    report = compress(SPIKFORMER, small_val, out, 5.0, objective="latency", time_limit=3.0)
    section = report["timesteps"]
    assert SECTION_KEYS <= set(section) and section["original"] == 4 and section["chosen"] < 4
    assert all(CANDIDATE_KEYS <= set(c) for c in section["candidates"])
    chosen = [c for c in section["candidates"] if c["timesteps"] == section["chosen"]][0]
    assert chosen["verdict"] == "accepted" and chosen["latency_ms_b1"] > 0
    meta = json.loads(out.with_suffix(".plan.json").read_text())["meta"]
    assert meta["timesteps"] == section["chosen"] and meta["timesteps_original"] == 4 and "stem_once" in meta
    assert {n.time_steps for n in find_neurons(onnx.load(str(out)))} == {section["chosen"]}
    assert "id='time-candidates'" in out.with_suffix(".report.html").read_text()
    # no speed goal to meet, so tokens are left out too (issue 30 item 5), each count judged like a T'
    tokens = section["tokens"]
    assert tokens["total"] == 49 and tokens["candidates"][0]["left_out"] == 5
    kept = meta.get("tokens_kept", list(range(49)))
    assert len(kept) == 49 - tokens["left_out"]
    assert "id='token-candidates'" in out.with_suffix(".report.html").read_text()
    result = verify(SPIKFORMER, out, out.with_suffix(".plan.json"), np.load(small_val)["x"][:16])
    assert result["passed"] and "time steps" in result["time_steps"]
    assert ("tokens through the blocks" in result["time_steps"]) == bool(tokens["left_out"])


def test_no_budget_keeps_every_time_step(small_val: Path, tmp_path: Path) -> None:
    with pytest.raises(ConstraintError) as caught:  # nothing can go at 0 points: exit 1, nothing written
        compress(SPIKFORMER, small_val, tmp_path / "x.onnx", 0.0, min_speedup=1.5, time_limit=1.0)
    section = caught.value.report["timesteps"]
    assert section["chosen"] == 4 and section["candidates"][0]["verdict"] == "rejected"
    assert not (tmp_path / "x.onnx").exists()


def test_forced_time_steps_without_a_speed_goal(small_val: Path, tmp_path: Path) -> None:
    out = tmp_path / "three.onnx"
    report = compress(SPIKFORMER, small_val, out, 5.0, timesteps=3, time_limit=1.0)
    assert report["timesteps"]["mode"] == "forced" and report["timesteps"]["chosen"] == 3
    assert json.loads(out.with_suffix(".plan.json").read_text())["meta"]["timesteps"] == 3
    assert report["constraints"]["objective"] == "memory"


def test_memory_goal_alone_leaves_time_alone(small_val: Path, tmp_path: Path) -> None:
    try:  # the channel search has a second: whether it removes anything is not the point here
        report = compress(SPIKFORMER, small_val, tmp_path / "m.onnx", 5.0, time_limit=1.0)
    except ConstraintError as exc:
        report = exc.report
    assert report["timesteps"] is None and report["constraints"]["objective"] == "memory"


def test_verify_checks_a_plan_cut_after_its_channels(tmp_path: Path) -> None:
    """``prune --timesteps --ratio`` prunes channels on the T-step model, then cuts: the oracle is the cut original."""
    result = prune_timesteps(SPIKFORMER, 2, ratio=0.3)
    out, plan = tmp_path / "p.onnx", tmp_path / "p.plan.json"
    onnx.save(result.model, str(out))
    plan.write_text(result.plan.to_json())
    checked = verify(SPIKFORMER, out, plan, np.load(VAL)["x"][:8])
    assert checked["passed"] and checked["exact"] + checked["threshold_ties"] == 8
    assert "2 of its 4 time steps" in checked["time_steps"]
    data = json.loads(plan.read_text())
    del data["meta"]["timesteps"], data["meta"]["stem_once"]  # without them the oracle runs 4 steps: no match
    plan.write_text(json.dumps(data))
    assert not verify(SPIKFORMER, out, plan, np.load(VAL)["x"][:8])["passed"]


def test_timesteps_option_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert parse_timesteps("auto") == "auto" and parse_timesteps("3") == 3 and parse_timesteps("keep") == "keep"
    for bad in ("x", "0", "2.5", 0, True):
        with pytest.raises(UserError, match="timesteps"):
            CompressOptions(timesteps=bad)
    code = cli(["compress", str(SPIKFORMER), "--data", str(VAL), "--timesteps", "4", "-o", str(tmp_path / "x.onnx")])
    assert code == 2 and "--timesteps must be in [1, 3]" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()
    for bad in ("x", "0", "-1"):
        with pytest.raises(UserError, match="drop_tokens"):
            CompressOptions(drop_tokens=bad)
    base = ["compress", "--data", str(VAL), "-o", str(tmp_path / "y.onnx"), "--drop-tokens"]
    assert cli([base[0], str(SPIKFORMER), *base[1:], "49"]) == 2
    assert "--drop-tokens must be in [1, 48]: the blocks see 49 tokens" in capsys.readouterr().err
    assert cli([base[0], str(SDT), *base[1:], "1"]) == 2
    err = capsys.readouterr().err
    assert "--drop-tokens" in err and "no tokens to leave out" in err and "Traceback" not in err
    assert not (tmp_path / "y.onnx").exists()
