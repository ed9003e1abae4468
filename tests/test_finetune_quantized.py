"""Quantization-aware fine-tuning: a quantized model trains on its stored grids and is stored on them again.

Oracles: the input file itself (thawing and re-storing untouched weights must give it back byte
for byte), ONNX Runtime on the written file with graph optimizations off (its arithmetic is the
graph's, no fused low-bit kernels) against the trained module, and numpy round-to-nearest on
the file's own scales.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from svtprune.data import Dataset, save_npz
from svtprune.quantization import Quantizer, QuantScheme, dequantize, on_grid, thaw
from svtprune.recover.export import torch_logits, write_back
from svtprune.recover.quantized import stored_again, trainable_student
from svtprune.recover.train import TrainConfig, train


def mixed_bits(quantizer: Quantizer) -> dict[str, int]:
    return {layer.name: (8, 4, 2)[i % 3] for i, layer in enumerate(quantizer.layers)}


def stored(model: onnx.ModelProto) -> dict[str, bytes]:
    return {t.name: t.SerializeToString() for t in model.graph.initializer}


def plain_ort_logits(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """ORT without graph optimizations: DequantizeLinear then float Conv/MatMul, as the graph says."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize(
    ("name", "symmetric", "codes", "int8_biases"),
    [
        ("spikformer", True, False, False),
        ("spikformer", False, False, False),
        ("spikformer", True, True, False),
        ("spikformer", False, True, True),
        ("spikformer", True, False, True),
        ("sdt", True, True, True),  # BatchNormalization stored as scale and shift
    ],
)
def test_untouched_weights_are_stored_back_byte_for_byte(
    small_models: dict, name: str, symmetric: bool, codes: bool, int8_biases: bool
) -> None:
    scheme = QuantScheme(symmetric=symmetric, rounding="mse", scale_codes=codes, int8_biases=int8_biases)
    quantizer = Quantizer(small_models[name], scheme)
    quantized = quantizer.apply(mixed_bits(quantizer))
    thawed = thaw(quantized)
    assert thawed.scheme.scale_codes == codes and thawed.scheme.int8_biases == int8_biases
    for weight, grid in thawed.grids.items():
        assert grid.bits == thawed.bits.get(weight, 8)  # int8 side vectors have grids, not layer widths
        np.testing.assert_array_equal(on_grid(dequantize(grid), grid).values, grid.values, err_msg=weight)
    # the grids, not a new mse fit, decide the integers: a re-fit would pick other scales for some layers
    assert stored(stored_again(thawed.model, thawed)) == stored(quantized)


@pytest.fixture(
    scope="module",
    params=[("spikformer", False), ("spikformer", True), ("sdt", True)],
    ids=["float16-sides", "int8-sides", "sdt-batchnorm"],
)
def trained(small_models: dict, request: pytest.FixtureRequest) -> dict:
    torch.set_num_threads(1)
    name, int8_biases = request.param
    teacher = small_models[name]
    quantizer = Quantizer(teacher, QuantScheme(rounding="mse", int8_biases=int8_biases))
    quantized = quantizer.apply(mixed_bits(quantizer))
    x = np.random.default_rng(4).standard_normal((80, 1, 28, 28)).astype(np.float32)
    target = plain_ort_logits(teacher, x) * 3.0  # sharper than the random model's own logits: something to learn
    float_model, module, thawed = trainable_student(quantized)
    start = torch_logits(module, x)
    config = TrainConfig(epochs=1, lr=1e-2, batch=16, seed=0)
    train(module, Dataset(x[:64], None), target[:64], Dataset(x[64:], None), config, target[64:], progress=False)
    written = stored_again(write_back(float_model, module), thawed)
    return {"quantized": quantized, "written": written, "module": module, "thawed": thawed, "x": x, "start": start}


def test_a_quantized_student_starts_from_what_the_file_computes(trained: dict) -> None:
    x = trained["x"]
    assert np.abs(trained["start"] - plain_ort_logits(trained["quantized"], x)).max() < 1e-4


def test_what_was_trained_is_what_the_written_file_runs(trained: dict) -> None:
    written, module, x = trained["written"], trained["module"], trained["x"]
    before, after = trained["quantized"], written
    grids = thaw(written).grids
    changed = 0
    for name, grid in trained["thawed"].grids.items():
        new = grids[name]
        np.testing.assert_array_equal(new.scale, grid.scale, err_msg=name)  # the same grid
        on_it = module.tensor(name).detach().numpy()
        np.testing.assert_array_equal(dequantize(new), on_it, err_msg=name)  # the module's weight, stored exactly
        changed += int(not np.array_equal(new.values, grid.values))
    assert changed, "no layer left its starting integers: the rounding passed no gradient"
    assert {t.name: list(t.dims) for t in before.graph.initializer} == {
        t.name: list(t.dims) for t in after.graph.initializer
    }  # fmt: skip
    diff = np.abs(plain_ort_logits(written, x) - torch_logits(module, x)).reshape(len(x), -1).max(axis=1)
    assert (diff < 1e-4).mean() >= 0.95, diff.max()  # a spike on its threshold may flip on a few images


def test_side_vectors_train_as_they_are_stored(trained: dict) -> None:
    module, thawed = trained["module"], trained["thawed"]
    sides = [name for name in module.stored if name not in thawed.bits]
    int8 = [name for name in sides if name in thawed.grids]  # biases of layers at <= 4 bits, with int8_biases
    assert sides and bool(int8) == thawed.scheme.int8_biases
    stored_values = {t.name: numpy_helper.to_array(t) for t in trained["written"].graph.initializer}
    for name in sides:
        value = module.tensor(name).detach().numpy()
        if name in int8:  # on the vector's own int8 grid (compared with the file above), never float16
            assert stored_values[f"{name}_int8"].dtype == np.int8 and f"{name}_float16" not in stored_values
        else:
            np.testing.assert_array_equal(value, value.astype(np.float16).astype(np.float32), err_msg=name)
            assert stored_values[f"{name}_float16"].dtype == np.float16


def test_compress_quantizes_then_fine_tunes_on_the_grids(small_models: dict, tmp_path: Path) -> None:
    import svtprune
    from svtprune.jobs.common import split
    from svtprune.jobs.options import SplitOptions
    from svtprune.search.budget import FINETUNE_SEARCH_FACTOR, SEARCH_SHARE_OF_BUDGET

    torch.set_num_threads(1)
    from tests.test_finetune import run_ort, with_sharp_head

    onnx.save(with_sharp_head(small_models["spikformer"]), tmp_path / "m.onnx")
    rng = np.random.default_rng(7)
    save_npz(tmp_path / "val.npz", Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    save_npz(tmp_path / "train.npz", Dataset(rng.standard_normal((64, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "small.onnx"
    report = svtprune.compress(
        tmp_path / "m.onnx", tmp_path / "val.npz", out, 10.0, method="uniform", calib=60, seed=2,
        quantize="greedy", bits="4", finetune_data=tmp_path / "train.npz", finetune_epochs=1,
        finetune_lr=3e-3,
    )  # fmt: skip
    written = onnx.load(out)
    section, quantization = report["finetune"], report["quantization"]
    assert section["quantization_aware"] and "quantization-aware" in quantization["budget_split"]
    chosen = {row["layer"]: row["bits"] for row in quantization["layers"] if row["bits"] < 32}
    assert chosen and thaw(written).bits == chosen  # fine-tuning kept the searched widths
    # the quantization search spent the fine-tuning budget, not the user's (it is recovered afterwards)
    budget = SEARCH_SHARE_OF_BUDGET * FINETUNE_SEARCH_FACTOR * 10.0
    best = [e for e in quantization["evaluations"] if e["bits"] == chosen]
    assert best and report["original"]["accuracy_search"] - best[0]["accuracy"] <= budget + 1e-9
    assert section["search_budget_points"] == pytest.approx(budget)
    # reported accuracy is ORT's on the written file, held-out split, against the original's decisions
    held = split(Dataset(np.load(tmp_path / "val.npz")["x"], None), SplitOptions(calib=60, seed=2))[1]
    target = run_ort(ort.InferenceSession(str(tmp_path / "m.onnx")), held.x).argmax(axis=1)
    agreement = 100.0 * float((run_ort(ort.InferenceSession(str(out)), held.x).argmax(axis=1) == target).mean())
    assert agreement == pytest.approx(report["compressed"]["accuracy"], abs=1e-3)
    assert section["accuracy_after"] == report["compressed"]["accuracy"]


@pytest.mark.slow
def test_quantize_command_fine_tunes_on_the_grids(small_models: dict, tmp_path: Path) -> None:
    from svtprune.jobs.common import split
    from svtprune.jobs.options import SplitOptions
    from svtprune.search.budget import FINETUNE_SEARCH_FACTOR, SEARCH_SHARE_OF_BUDGET
    from tests.test_finetune import run_ort, with_sharp_head

    onnx.save(with_sharp_head(small_models["spikformer"]), tmp_path / "m.onnx")
    rng = np.random.default_rng(8)
    save_npz(tmp_path / "val.npz", Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    save_npz(tmp_path / "train.npz", Dataset(rng.standard_normal((64, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "q.onnx"
    cmd = [sys.executable, "-m", "svtprune.cli", "quantize", str(tmp_path / "m.onnx"),
           "--data", str(tmp_path / "val.npz"), "-o", str(out), "--max-accuracy-drop", "10", "--calib", "60",
           "--bits", "4,2", "--rounding", "mse", "--finetune-data", str(tmp_path / "train.npz"),
           "--finetune-lr", "0.003", "--json"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    section = report["finetune"]
    assert section["quantization_aware"] and section["epochs"] == 1
    budget = SEARCH_SHARE_OF_BUDGET * FINETUNE_SEARCH_FACTOR * 10
    assert report["constraints"]["search_budget_points"] == pytest.approx(budget)
    assert section["accuracy_after"] == report["compressed"]["accuracy"] and report["accuracy_drop"] <= 10
    chosen = {row["layer"]: row["bits"] for row in report["quantization"]["layers"] if row["bits"] < 32}
    written = thaw(onnx.load(out))
    assert written.bits == chosen and written.scheme.int8_biases  # the commands' default: int8 biases at <= 4 bits
    assert "quantization-aware" in out.with_suffix(".report.html").read_text()
    held = split(Dataset(np.load(tmp_path / "val.npz")["x"], None), SplitOptions(calib=60, seed=0))[1]
    target = run_ort(ort.InferenceSession(str(tmp_path / "m.onnx")), held.x).argmax(axis=1)
    agreement = 100.0 * float((run_ort(ort.InferenceSession(str(out)), held.x).argmax(axis=1) == target).mean())
    assert agreement == pytest.approx(report["compressed"]["accuracy"], abs=1e-3)
