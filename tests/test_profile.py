"""Where the batch-1 time goes: ORT's profiler per layer, in eval --profile and in every report."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest

from svtprune.data import Dataset, save_npz
from svtprune.evaluate import EvalResult
from svtprune.hardware.profile import ADDED_BY_ORT, TOP_LEVEL, layer_profile, profile_summary
from svtprune.runtime import make_session, run_times_ms
from tests.model_builders import tiny_spiking

CORPUS = Path(__file__).parent / "data" / "corpus"


def check_rows(rows: list[dict]) -> None:
    """Shares sum to one, every layer is named, no time is negative, slowest first."""
    assert rows
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert all(r["layer"] and r["op"] and r["ms"] >= 0 and 0 <= r["share"] <= 1 for r in rows)
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert len({r["layer"] for r in rows}) == len(rows)


def test_spiking_model_profile_sums_to_its_time_and_names_its_modules(
    small_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # ORT's trace and optimised graph must not land in the working folder
    model = small_models["spikformer"]
    rows = layer_profile(model, runs=5)
    check_rows(rows)
    assert list(tmp_path.iterdir()) == []
    layers = {r["layer"] for r in rows}
    assert any("lif" in layer or "neuron" in layer for layer in layers), layers  # the exporter's module names
    assert not any(layer.startswith("net.") for layer in layers)  # the wrapper every node shares is dropped
    wall = statistics.median(run_times_ms(make_session(model), 1, 10))
    kernels = sum(r["ms"] for r in rows)
    assert 0.02 * wall < kernels < 3 * wall, (kernels, wall)


def test_summary_keeps_the_top_layers_and_one_other_row(small_models: dict) -> None:
    summary = profile_summary(small_models["spikformer"], small_models["sdt"], top=3, runs=2)
    assert set(summary) == {"original", "result"}
    for rows in summary.values():
        assert len(rows) == 4 and rows[-1]["layer"] == "other"
        assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["sdt__dynamo20_b1", "deit_distilled__dynamo20_b2", "vit_tiny__classic17_b1"])
def test_fixed_batch_graphs_are_profiled_at_their_batch(name: str) -> None:
    rows = layer_profile(CORPUS / f"{name}.onnx", runs=2)
    check_rows(rows)
    layers = {r["layer"] for r in rows}
    if "classic" in name:  # scopes from the node names: /patch_embed/proj/Conv -> patch_embed.proj
        assert "patch_embed.proj" in layers and ADDED_BY_ORT not in layers
    else:  # dynamo without metadata: segments from one weighted node to the next
        assert sum(layer.startswith("from ") for layer in layers) >= len(layers) - 2, layers


def test_nameless_nodes_are_named_for_the_profiler() -> None:
    model = tiny_spiking(mean_over_time=True)
    assert not any(n.name for n in model.graph.node)
    rows = layer_profile(model, runs=2)
    check_rows(rows)
    assert {r["layer"] for r in rows} <= {"from MatMul__1", "from MatMul__13", "(before the first weighted node)"}
    assert not any(n.name for n in model.graph.node)  # the caller's model is left as it was


def test_classic_scopes_lose_the_root_they_share_and_the_top_level_is_named_so() -> None:
    model = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4] x) => (float[N, 4] y) {
        a = Relu(x)
        b = Neg(a)
        y = Abs(b)
    }""")
    for node, name in zip(model.graph.node, ["/body/act/Relu", "/body/neg/Neg", "/Abs"], strict=True):
        node.name = name
    layers = {r["layer"] for r in layer_profile(model, runs=2)}
    assert layers <= {"act", "neg", TOP_LEVEL} and "act" in layers


def test_eval_profile_prints_the_table_and_adds_it_to_json(small_models: dict, tmp_path: Path) -> None:
    onnx.save(small_models["sdt"], tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    save_npz(
        tmp_path / "v.npz", Dataset(rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8))
    )
    command = [
        sys.executable,
        "-m",
        "svtprune.cli",
        "eval",
        str(tmp_path / "m.onnx"),
        "--data",
        str(tmp_path / "v.npz"),
    ]
    run = subprocess.run([*command, "--profile", "--json"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    check_rows(json.loads(run.stdout)["profile"])
    printed = subprocess.run([*command, "--profile"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert printed.returncode == 0 and "where the batch-1 time goes" in printed.stdout, printed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "v.npz"]
    plain = EvalResult(90.0, "top1", 8, 10, 10, 1.0, 2.0, 0.1)  # without --profile, the JSON is as before
    assert "profile" not in plain.to_dict() and "profile" in replace(plain, profile=[]).to_dict()
