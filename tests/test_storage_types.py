"""Storage types (issue 19): a model stored as float16 stays float16 through prune and compress; bytes never grow.

Half-weight exports store each weight as float16 and Cast it to float32; normalisation folds those
Casts, so without care every pruned weight came back as float32 (twice the bytes). A graph that
computes in float16 throughout is refused up front.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from svtprune.data import Dataset, load_npz, save_npz
from svtprune.graph.analysis import analyze
from svtprune.graph.io import param_bytes
from svtprune.graph.plan import uniform_plan
from svtprune.graph.storage import fold_storage
from svtprune.graph.surgery import keep_storage
from svtprune.importance import group_scores
from tests.model_builders import float16_graph, float16_weights
from tests.oracle import assert_matches_oracle, run
from tests.test_cli import assert_user_error, svtprune

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "models" / "reference" / "spikformer_fmnist.onnx"
DATA = REPO / "models" / "data" / "fashion_mnist_val.npz"


@pytest.fixture(scope="module")
def half_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("half") / "spikformer_half.onnx"
    onnx.save(float16_weights(onnx.load(REFERENCE)), path)
    return path


def float32_weights(model: onnx.ModelProto) -> list[str]:
    """Float32 initializers of more than one value (the reference keeps a few float32 scalars)."""
    return [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1]


def test_float16_storage_round_trip(half_reference: Path, tmp_path: Path) -> None:
    """prune --ratio 0.3 writes float16 weights, fewer bytes than the float16 original, and verify passes."""
    out = tmp_path / "pruned.onnx"
    result = svtprune("prune", str(half_reference), "--ratio", "0.3", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    pruned, original = onnx.load(out), onnx.load(half_reference)
    assert summary["original_param_bytes"] == param_bytes(original)
    assert summary["pruned_param_bytes"] == param_bytes(pruned) < param_bytes(original)
    assert not float32_weights(pruned), float32_weights(pruned)
    # what the plan predicts in the stored types (surgery adds only a few int64 shape constants)
    assert abs(summary["pruned_param_bytes"] - summary["expected_param_bytes"]) < 0.01 * summary["expected_param_bytes"]
    assert summary["memory_saving"] > 0.4  # as for the float32 reference at 0.3: half the weights go
    assert out.stat().st_size < half_reference.stat().st_size
    plan = out.with_suffix(".plan.json")
    args = ["--plan", str(plan), "--data", str(DATA), "--samples", "16", "--json"]
    verdict = svtprune("verify", str(half_reference), str(out), *args)
    assert verdict.returncode == 0 and json.loads(verdict.stdout)["passed"], verdict.stdout + verdict.stderr


def test_float16_prune_matches_the_oracle(half_reference: Path) -> None:
    """The pruned float16 model equals the original with the removed channels zeroed, spike for spike."""
    original = onnx.load(half_reference)
    analysis = analyze(original)
    x = load_npz(DATA).x[:8]
    name = original.graph.output[0].name
    np.testing.assert_array_equal(run(original, x)[name], run(analysis.model, x)[name])  # folding changed no value
    pruned = assert_matches_oracle(analysis, uniform_plan(analysis, 0.3, group_scores(analysis)), x)
    assert not float32_weights(pruned)
    assert param_bytes(pruned) < param_bytes(original)
    # quantization and fine-tuning see the weights unfolded to float32; storing them again is exact
    unfolded = fold_storage(pruned)
    assert float32_weights(unfolded) and not any(
        n.op_type == "Cast" and n.input[0].endswith("_float16") for n in unfolded.graph.node
    )
    np.testing.assert_array_equal(run(unfolded, x)[name], run(pruned, x)[name])
    assert param_bytes(keep_storage(unfolded, analysis)) == param_bytes(pruned)


def test_compress_with_refit_keeps_float16(small_models: dict, tmp_path: Path) -> None:
    """The least-squares re-fit computes in float32/64 and stores its weights back as float16."""
    model = tmp_path / "half.onnx"
    onnx.save(float16_weights(small_models["spikformer"]), model)
    data = tmp_path / "unlabelled.npz"
    save_npz(data, Dataset(np.random.default_rng(3).standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "small.onnx"
    args = ["--data", str(data), "-o", str(out), "--method", "uniform", "--max-accuracy-drop", "30", "--json"]
    result = svtprune("compress", str(model), *args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    compressed = onnx.load(out)
    refit = json.loads(out.with_suffix(".plan.json").read_text())["refit"]
    assert refit and all(
        f"{layer}_refit_w_float16" in {t.name for t in compressed.graph.initializer} for layer in refit
    )
    assert not float32_weights(compressed), float32_weights(compressed)
    assert report["compressed"]["param_bytes"] == param_bytes(compressed) < report["original"]["param_bytes"]
    assert report["memory_saving"] > 0


def test_a_graph_computing_in_float16_is_refused(small_models: dict, tmp_path: Path) -> None:
    """Its neurons and re-fits are not float16 code: refused with exit 2 before anything is written."""
    model = tmp_path / "whole_half.onnx"
    onnx.save(float16_graph(small_models["spikformer"]), model)
    out = tmp_path / "pruned.onnx"
    assert_user_error(svtprune("prune", str(model), "--ratio", "0.3", "-o", str(out)), "computes in float16")
    assert not out.exists()
