"""Issue 30, item 5: tokens left out of a spiking transformer's blocks (spiking/tokens.py, prune --drop-tokens).

The independent oracle is PyTorch: the reference Spikformer's own modules, run with only the kept
tokens after the patch stem (its blocks take a flat row of tokens). Leaving no token out must
change nothing, bit for bit; graphs whose blocks read the grid as a grid are refused with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from svtprune.cli.app import run as cli
from svtprune.jobs.verify import verify
from svtprune.runtime import logits_of, make_session
from svtprune.spiking.compute_once import compute_once
from svtprune.spiking.export import build_checked, load_weights
from svtprune.spiking.time_axis import find_time_axis
from svtprune.spiking.tokens import drop_tokens, find_token_axis
from svtprune.spiking.zoo import reset_states

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "models" / "reference"
VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"
KEEP = [t for t in range(49) if t not in (0, 1, 5, 6, 7, 14, 21, 35, 42, 48)]  # the grid's edges, mostly


@torch.no_grad()
def pytorch_kept(steps: int, keep: list[int] | None, x: np.ndarray) -> np.ndarray:
    """The reference Spikformer in PyTorch at ``steps`` time steps, its blocks fed only the tokens ``keep``."""
    config, state = load_weights(REFERENCE / "spikformer_fmnist.pt")
    net = build_checked(config, state).eval().net
    net.T = steps
    seq = net.patch_embed(net._to_sequence(torch.from_numpy(x)))
    if keep is not None:
        seq = seq.flatten(3)[..., keep].unsqueeze(3)
    for block in net.blocks:
        seq = block(seq)
    logits = net.head(seq.flatten(3).mean(-1)).mean(0).numpy()
    reset_states(net)
    return logits


def images_off(a: np.ndarray, b: np.ndarray) -> int:
    return int((np.abs(a - b).max(axis=1) > 1e-4).sum())


@pytest.fixture(scope="module")
def spikformer() -> onnx.ModelProto:
    return onnx.load(REFERENCE / "spikformer_fmnist.onnx")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.load(VAL)["x"][:48].astype(np.float32)


@pytest.mark.parametrize("steps", [4, 2])
def test_leaving_tokens_out_matches_pytorch(spikformer: onnx.ModelProto, images: np.ndarray, steps: int) -> None:
    model = spikformer
    if steps < 4:
        model, _ = compute_once(spikformer, find_time_axis(spikformer), steps)
    axis = find_token_axis(model)
    assert not isinstance(axis, str), axis
    assert (axis.count, axis.grid) == (49, (7, 7))
    got = logits_of(make_session(drop_tokens(model, axis, KEEP)), images)
    want = pytorch_kept(steps, KEEP, images)
    # ONNX Runtime and PyTorch sum in different orders, so a membrane on its threshold may fire in one
    # only: the whole model already differs on as many images as that; leaving tokens out adds at most one
    ties = images_off(logits_of(make_session(model), images), pytorch_kept(steps, None, images))
    assert images_off(got, want) <= ties + 1
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.97
    assert images_off(got, logits_of(make_session(model), images)) > len(images) // 2  # the change is real


def test_keeping_every_token_changes_nothing(small_models: dict, images: np.ndarray) -> None:
    for name in ("spikformer", "qkformer"):
        model = small_models[name]
        axis = find_token_axis(model)
        assert not isinstance(axis, str), axis
        x = np.random.default_rng(0).standard_normal((3, *images.shape[1:])).astype(np.float32)
        whole = drop_tokens(model, axis, list(range(axis.count)))
        assert np.array_equal(logits_of(make_session(whole), x), logits_of(make_session(model), x))
        fewer = logits_of(make_session(drop_tokens(model, axis, list(range(1, axis.count)))), x[:1])
        assert fewer.shape == (1, 10)


def test_refuses_blocks_that_read_the_grid(small_models: dict) -> None:
    """The SDT's attention works on the 2-D grid; after its last flattening no layer runs per token."""
    reason = find_token_axis(small_models["sdt"])
    assert isinstance(reason, str)
    assert "per token" in reason or "splits or merges the token axis" in reason


def test_prune_drop_tokens_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fast.onnx"
    source = REFERENCE / "spikformer_fmnist.onnx"
    args = ["prune", str(source), "--timesteps", "2", "--drop-tokens", "9", "--data", str(VAL), "-o"]
    assert cli([*args, str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tokens"] == 49 and len(summary["tokens_kept"]) == 40
    plan = json.loads(out.with_suffix(".plan.json").read_text())
    assert plan["meta"]["tokens_kept"] == summary["tokens_kept"]
    report = verify(source, out, out.with_suffix(".plan.json"))
    assert report["passed"], report
    assert "40 of 49 tokens" in report["time_steps"]
    assert cli(["prune", str(source), "--drop-tokens", "9", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "--drop-tokens needs --data" in capsys.readouterr().err
    too_many = [*args[:5], "49", *args[6:], str(tmp_path / "y.onnx")]
    assert cli(too_many) == 2
    err = capsys.readouterr().err
    assert "--drop-tokens must be in [1, 48]" in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "y.onnx").exists()


CORPUS = ROOT / "tests" / "data" / "corpus"


def test_every_export_of_a_model_leaves_the_same_tokens_out_alike() -> None:
    """The corpus's exports of one model (dynamo opsets 18 and 20, dynamic and fixed batch, whose fixed-shape
    starting membranes are folded into per-token constants): the token axis is followed in every one or in
    none, and the same tokens left out give the same logits in each (each export matches PyTorch to 1e-6)."""
    graphs = json.loads((CORPUS / "corpus.json").read_text())["graphs"]
    families: dict[str, list[dict]] = {}
    for entry in graphs:
        if entry["spiking"]:
            families.setdefault(entry["family"], []).append(entry)
    followed = set()
    for family, entries in families.items():
        logits, refused = [], []
        for entry in entries:
            model = onnx.load(CORPUS / entry["file"])
            axis = find_token_axis(model)
            if isinstance(axis, str):
                refused.append(entry["name"])
                continue
            keep = list(range(1, axis.count, 2))
            batch = entry["batch"] if isinstance(entry["batch"], int) else 2
            x = np.random.default_rng(0).standard_normal([batch, *entry["input_shape"][1:]])
            out = logits_of(make_session(drop_tokens(model, axis, keep)), x.astype(np.float32))
            logits.append(out[:1])
        assert not logits or not refused, (family, refused)
        followed.update([family] if logits else [])
        for other in logits[1:]:
            np.testing.assert_allclose(other, logits[0], atol=1e-4)
    assert {"spikformer_fmnist", "spikformer_cifar", "qkformer"} <= followed


def test_analyze_says_which_tokens_can_go() -> None:
    from svtprune.jobs.analyze import analyze_report

    spikformer = analyze_report(REFERENCE / "spikformer_fmnist.onnx")["tokens"]
    assert (spikformer["count"], spikformer["grid"]) == (49, [7, 7]) and "--drop-tokens" in spikformer["line"]
    sdt = analyze_report(REFERENCE / "sdt_fmnist.onnx")["tokens"]
    assert sdt["count"] is None and "none can be left out" in sdt["line"]
