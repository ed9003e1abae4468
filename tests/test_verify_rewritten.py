"""verify on quantized and fine-tuned files (issue 19): structure and grids against the plain prune of the plan.

Oracles: the plain prune the library writes for the plan (what the file must have the structure of), the
Quantizer's own integers and scales (what each layer must dequantize to), and ONNX Runtime on the two
files (the logit difference verify reports).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from svtprune.data import Dataset, save_npz
from svtprune.graph.analysis import analyze
from svtprune.graph.plan import Plan, uniform_plan
from svtprune.graph.surgery import prune
from svtprune.importance import group_scores
from svtprune.jobs.verify import verify
from svtprune.jobs.verify_rewritten import grid_problems
from svtprune.quantization import Quantizer, QuantScheme, dequantize
from svtprune.runtime import make_session, predict
from tests.test_cli import svtprune

X = np.random.default_rng(5).standard_normal((6, 1, 28, 28)).astype(np.float32)


@pytest.fixture(scope="module")
def pruned(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The small Spikformer, a plan at ratio 0.5, its plain prune, and that prune quantized at 8 and 4 bits."""
    folder = tmp_path_factory.mktemp("rewritten")
    onnx.save(small_models["spikformer"], folder / "model.onnx")
    analysis = analyze(small_models["spikformer"])
    plan = uniform_plan(analysis, 0.5, group_scores(analysis))
    plain = prune(analysis, plan)
    quantizer = Quantizer(plain, QuantScheme(rounding="mse"))
    bits = {layer.name: (8, 4)[i % 2] for i, layer in enumerate(quantizer.layers)}
    onnx.save(quantizer.apply(bits), folder / "quantized.onnx")
    return {"folder": folder, "analysis": analysis, "plan": plan, "plain": plain, "quantizer": quantizer, "bits": bits}


def save_plan(folder: Path, name: str, plan: Plan, **changes: object) -> Path:
    path = folder / f"{name}.plan.json"
    path.write_text(Plan(plan.kept, {**plan.meta, **changes.get("meta", {})}, changes.get("bits", plan.bits)).to_json())
    return path


def test_a_quantized_prune_passes_on_structure_and_grids(pruned: dict) -> None:
    folder, bits = pruned["folder"], pruned["bits"]
    plan = save_plan(folder, "quantized", pruned["plan"], bits=bits)
    result = verify(folder / "model.onnx", folder / "quantized.onnx", plan, X)
    assert result["passed"] and result["checks"] == "structure + quantization grid", result
    assert result["oracle_on"] == "the plain prune of the plan" and result["failures"] == 0
    section = result["rewritten"]
    assert section["structure_differences"] == [] and not section["finetuned"]
    assert section["quantization"]["layers"] == len(bits) and section["quantization"]["problems"] == []
    weights = {t.name: numpy_helper.to_array(t) for t in pruned["plain"].graph.initializer}
    expected = max(
        float(np.abs(dequantize(pruned["quantizer"].quantized(name, b)) - weights[name]).max())
        for name, b in bits.items()
    )
    assert section["quantization"]["max_weight_difference"] == pytest.approx(expected, rel=1e-6)
    quantized = onnx.load(folder / "quantized.onnx")
    ort_shift = np.abs(run(quantized) - run(pruned["plain"])).max()
    assert section["max_logit_difference"] == pytest.approx(float(ort_shift), rel=1e-5, abs=1e-6)


def test_bits_that_disagree_with_the_file_fail(pruned: dict) -> None:
    folder, bits = pruned["folder"], dict(pruned["bits"])
    eight = next(name for name, b in bits.items() if b == 8)
    float_layer = next(name for name, b in bits.items() if b == 4)
    wrong = {**bits, eight: 4, float_layer: 32}
    result = verify(
        folder / "model.onnx", folder / "quantized.onnx", save_plan(folder, "wrong", pruned["plan"], bits=wrong), X
    )
    assert not result["passed"] and result["failures"] == 0  # the channels hold; the bits do not
    problems = result["rewritten"]["quantization"]["problems"]
    assert any(eight in p and "4 bits" in p and "stores 8 bits" in p for p in problems), problems
    assert any(float_layer in p and "float32" in p for p in problems), problems
    cli = svtprune(
        "verify", str(folder / "model.onnx"), str(folder / "quantized.onnx"), "--plan", str(folder / "wrong.plan.json")
    )
    assert cli.returncode == 1 and "FAIL (checked: structure + quantization grid" in " ".join(cli.stderr.split())


def test_a_plan_with_bits_on_a_float_file_fails(pruned: dict) -> None:
    folder = pruned["folder"]
    onnx.save(pruned["plain"], folder / "plain.onnx")
    plan = save_plan(folder, "bits_only", pruned["plan"], bits=pruned["bits"])
    result = verify(folder / "model.onnx", folder / "plain.onnx", plan, X)
    assert not result["passed"] and len(result["rewritten"]["quantization"]["problems"]) > 0


def finetuned_like(plain: onnx.ModelProto, seed: int) -> onnx.ModelProto:
    """Every float weight of ``plain`` moved a little, as fine-tuning moves them (the structure stays)."""
    rng = np.random.default_rng(seed)
    out = onnx.ModelProto()
    out.CopyFrom(plain)
    for tensor in out.graph.initializer:
        value = numpy_helper.to_array(tensor)
        if value.dtype == np.float32 and value.size > 1:
            moved = value * (1 + 0.05 * rng.standard_normal(value.shape)).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(moved.astype(np.float32), tensor.name))
    return out


def test_a_finetuned_prune_is_checked_by_structure_and_its_shift_reported(pruned: dict) -> None:
    folder = pruned["folder"]
    tuned = finetuned_like(pruned["plain"], 1)
    onnx.save(tuned, folder / "tuned.onnx")
    meta = {"finetuned": {"data": "train.npz", "epochs": 1}}
    result = verify(
        folder / "model.onnx", folder / "tuned.onnx", save_plan(folder, "tuned", pruned["plan"], meta=meta), X
    )
    assert result["passed"] and result["checks"] == "structure", result
    section = result["rewritten"]
    assert section["finetuned"] and "quantization" not in section and section["structure_differences"] == []
    logits_t, logits_p = run(tuned), run(pruned["plain"])
    assert section["max_logit_difference"] == pytest.approx(float(np.abs(logits_t - logits_p).max()), rel=1e-5)
    agreement = float((logits_t.argmax(axis=1) == logits_p.argmax(axis=1)).mean())
    assert section["prediction_agreement"] == pytest.approx(agreement)
    plain_plan = save_plan(folder, "not_tuned", pruned["plan"])  # without the record: the oracle, which fails
    untold = verify(folder / "model.onnx", folder / "tuned.onnx", plain_plan, X)
    assert not untold["passed"] and untold["checks"] == "oracle"


def test_a_finetuned_file_of_other_widths_fails(pruned: dict, small_models: dict) -> None:
    folder, analysis = pruned["folder"], pruned["analysis"]
    other = prune(analysis, uniform_plan(analysis, 0.25, group_scores(analysis)))
    onnx.save(finetuned_like(other, 2), folder / "other.onnx")
    meta = {"finetuned": {"data": "train.npz", "epochs": 1}}
    result = verify(
        folder / "model.onnx", folder / "other.onnx", save_plan(folder, "other", pruned["plan"], meta=meta), X
    )
    assert not result["passed"] and result["rewritten"]["structure_differences"]
    assert any("shape" in d for d in result["rewritten"]["structure_differences"])


def test_a_weight_off_its_grid_is_found(pruned: dict) -> None:
    """Half a step added to one weight: it no longer is the dequantization of its stored integers."""
    name, b = next(iter(pruned["bits"].items()))
    grid = pruned["quantizer"].quantized(name, b)
    on = dequantize(grid)
    half_step = 0.5 * grid.scale.reshape(-1, *[1] * (on.ndim - 1))
    assert grid_problems(name, grid, with_weight(pruned["plain"], name, on)) == []
    found = grid_problems(name, grid, with_weight(pruned["plain"], name, on + half_step))
    assert len(found) == 1 and "off its grid by up to 0.5 steps" in found[0], found


def with_weight(model: onnx.ModelProto, name: str, value: np.ndarray) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    tensor = next(t for t in out.graph.initializer if t.name == name)
    tensor.CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))
    return out


def run(model: onnx.ModelProto) -> np.ndarray:
    return predict(make_session(model), X)[model.graph.output[0].name]


def test_verify_on_compress_quantize_and_finetune_outputs(small_models: dict, tmp_path: Path) -> None:
    """The real commands: compress --quantize with fine-tuning (and its re-fit), and quantize."""
    model, data, train = tmp_path / "model.onnx", tmp_path / "unlabelled.npz", tmp_path / "train.npz"
    onnx.save(small_models["spikformer"], model)
    rng = np.random.default_rng(3)
    save_npz(data, Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    save_npz(train, Dataset(rng.standard_normal((32, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "small.onnx"
    options = ["--method", "uniform", "--max-accuracy-drop", "30", "--quantize", "greedy", "--bits", "8,4"]
    done = svtprune(
        "compress", str(model), "--data", str(data), "-o", str(out), *options, "--finetune-data", str(train)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plan = json.loads(out.with_suffix(".plan.json").read_text())
    assert plan["bits"] and plan["meta"]["finetuned"] and plan["refit"]
    result = svtprune("verify", str(model), str(out), "--plan", str(out.with_suffix(".plan.json")), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["checks"] == "structure + quantization grid" and verdict["rewritten"]["finetuned"]
    assert verdict["rewritten"]["quantization"]["layers"] == len([b for b in plan["bits"].values() if b < 32])
    text = " ".join(
        svtprune("verify", str(model), str(out), "--plan", str(out.with_suffix(".plan.json"))).stderr.split()
    )
    assert "PASS (checked: structure + quantization grid, against the plain prune of the plan)" in text
    assert "quantized and fine-tuned" in text and "reported, not checked" in text


def test_verify_on_a_quantize_output(small_models: dict, tmp_path: Path) -> None:
    """The quantize command's plan holds bits only: the file is checked against the original itself."""
    model, data, out = tmp_path / "model.onnx", tmp_path / "unlabelled.npz", tmp_path / "q.onnx"
    onnx.save(small_models["sdt"], model)
    save_npz(data, Dataset(np.random.default_rng(4).standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    done = svtprune("quantize", str(model), "--data", str(data), "-o", str(out), "--max-accuracy-drop", "30",
                    "--bits", "8,4", "--rounding", "mse")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = svtprune("verify", str(model), str(out), "--plan", str(out.with_suffix(".plan.json")), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["checks"] == "structure + quantization grid" and verdict["rewritten"]["quantization"]["layers"]


def test_the_oracle_comparison_gives_the_same_tally_whatever_images_fit_at_once(
    pruned: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tap budget that holds one image (a 224-px model) or eight: the same samples, the same verdicts."""
    from svtprune.graph.surgery import zero_out
    from svtprune.jobs import verify as verify_job

    oracle = zero_out(pruned["analysis"], pruned["plan"])
    x = np.concatenate([X, X[:3]])  # 9 images: a short last chunk either way
    wide = verify_job.compare_with_oracle(oracle, pruned["plain"], x)
    monkeypatch.setattr(verify_job, "TAP_BUDGET", 1)
    narrow = verify_job.compare_with_oracle(oracle, pruned["plain"], x)
    assert narrow == wide and wide["samples"] == 9 and wide["exact"] + wide["threshold_ties"] == 9
