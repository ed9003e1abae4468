"""Edge deployment: the .ort file runs as the .onnx does, lands with the other outputs or not at all,
and peak memory is that of a fresh process running the model, not of whoever started it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtprune.errors import UserError
from svtprune.runtime import logits_of, make_session, peak_rss_mb
from tests.test_cli import assert_user_error, svtprune


@pytest.fixture(scope="module")
def model_file(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deploy") / "model.onnx"
    onnx.save(small_models["spikformer"], path)
    return path


def optimized_operators(path: Path, folder: Path) -> set[str]:
    """The operators of ``path`` after ORT's optimisations as the converter's 'Fixed' style applies them."""
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(folder / "optimized.onnx")
    options.add_session_config_entry("session.qdqisint8allowed", "0")
    providers, skipped = ["CPUExecutionProvider"], ["NchwcTransformer"]  # as the converter runs it: no x86-only NCHWc
    ort.InferenceSession(str(path), options, providers=providers, disabled_optimizers=skipped)
    nodes = onnx.load(folder / "optimized.onnx").graph.node
    return {(f"{n.domain}." if n.domain not in ("", "ai.onnx") else "") + n.op_type for n in nodes}


def test_prune_format_ort_writes_an_ort_file_that_runs_like_the_onnx(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    run = svtprune("prune", str(model_file), "--ratio", "0.3", "-o", str(out), "--format", "ort", "--json")
    assert run.returncode == 0, run.stderr
    deployment = json.loads(run.stdout)["deployment"]
    ort_path, config = out.with_suffix(".ort"), out.with_suffix(".required_operators.config")
    assert deployment["ort_bytes"] == ort_path.stat().st_size and deployment["ort_file"] == str(ort_path)
    x = np.random.default_rng(3).standard_normal((16, 1, 28, 28)).astype(np.float32)
    expected = logits_of(make_session(out), x)
    assert expected.std(axis=0).max() > 1e-3  # the logits depend on the image: the comparison below means something
    got = logits_of(make_session(ort_path), x)  # ORT loads .ort files by their suffix
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    # the config lists exactly what ORT runs after the optimisations the converter applies before saving
    (tmp_path / "scratch").mkdir()
    assert set(deployment["operators"]) == optimized_operators(out, tmp_path / "scratch")
    text = config.read_text()
    assert "# - p.ort\n" in text and "svtprune-ort-" not in text  # names the file beside it, not a temporary


def test_an_existing_ort_file_stops_the_run_before_any_work(model_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    out.with_suffix(".ort").write_bytes(b"keep me")
    assert_user_error(svtprune("prune", str(model_file), "-o", str(out), "--format", "ort"), "p.ort already exists")
    assert not out.exists() and out.with_suffix(".ort").read_bytes() == b"keep me"
    assert_user_error(svtprune("prune", str(model_file), "-o", str(out), "--format", "tflite"), "--format")
    plain = svtprune("prune", str(model_file), "-o", str(out))  # plain ONNX does not claim the .ort file
    assert plain.returncode == 0, plain.stderr
    assert out.exists() and out.with_suffix(".ort").read_bytes() == b"keep me"


def test_a_failed_conversion_writes_nothing(model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import svtprune.deploy
    from svtprune.jobs.prune import claim_outputs, prune_uniform, write_outputs

    def fails(_model: bytes, _name: str) -> dict[str, bytes]:
        raise UserError("ONNX Runtime cannot convert the model to its ORT format: test")

    monkeypatch.setattr(svtprune.deploy, "ort_files", fails)
    with claim_outputs(tmp_path / "p.onnx", None, model_file, False, "ort") as outputs:
        result = prune_uniform(model_file, 0.3)
        with pytest.raises(UserError, match="ORT format"):
            write_outputs(result, outputs, "ort")
    assert list(tmp_path.iterdir()) == []


def big_table_model(rows: int) -> onnx.ModelProto:
    """``y = table[x]``: a float32 table of ``rows`` x 4 that ORT cannot fold away (the indices are the input)."""
    table = numpy_helper.from_array(np.ones((rows, 4), np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "x"], ["y"])],
        "lookup",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [table],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_peak_memory_counts_the_model_and_not_the_parent(model_file: Path) -> None:
    peak, runtime_only = peak_rss_mb(model_file)
    assert 0 < runtime_only <= peak
    with_table, baseline = peak_rss_mb(big_table_model(2**21))  # 32 MiB of weights
    assert with_table - baseline >= 32
    held = np.ones(2**28 // 8)  # this process now holds 256 MiB more: the child's peak must not include it
    again, _ = peak_rss_mb(model_file)
    assert held.sum() > 0 and abs(again - peak) < 16
