"""Fine-tuning from ONNX: the converted module against ONNX Runtime (the independent oracle),
surrogate gradients through every neuron, a short fine-tune, and the written-back file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from svtprune.data import Dataset, load_npz, save_npz
from svtprune.graph.analysis import analyze
from svtprune.graph.io import param_bytes
from svtprune.graph.plan import uniform_plan
from svtprune.graph.surgery import prune
from svtprune.importance import group_scores
from svtprune.recover.convert import convert
from svtprune.recover.export import torch_logits, write_back
from svtprune.recover.train import TrainConfig, distill_loss, train
from svtprune.spiking.neurons import find_neurons, with_taps

ARCHS = ["spikformer", "sdt", "qkformer"]


def pruned(model: onnx.ModelProto, ratio: float = 0.5) -> onnx.ModelProto:
    analysis = analyze(model)
    return prune(analysis, uniform_plan(analysis, ratio, group_scores(analysis, "l2")))


def ort_run(model: onnx.ModelProto, x: np.ndarray, spikes: list[str]) -> dict[str, np.ndarray]:
    """ORT with graph optimisations off, so its arithmetic is the graph's (no BN/Conv fusion)."""
    tapped = with_taps(model, find_neurons(model), spikes=True)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(tapped.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [session.get_outputs()[0].name, *spikes]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x}), strict=True))


def assert_same_as_ort(model: onnx.ModelProto, x: np.ndarray) -> None:
    spikes = [s for n in find_neurons(model) for s in n.spikes]
    assert spikes, "no neuron recognised: nothing to compare"
    reference = ort_run(model, x, spikes)
    logits_name = model.graph.output[0].name
    with torch.no_grad():
        ours = convert(model).run(torch.from_numpy(x), [logits_name, *spikes])
    expected = reference[logits_name]
    assert np.abs(expected).max() > 0.1, "degenerate model: logits all ~0"
    np.testing.assert_allclose(ours[logits_name].numpy(), expected, rtol=1e-5, atol=1e-5)
    fired = sum(float(reference[s].sum()) for s in spikes)
    assert 0 < fired < sum(reference[s].size for s in spikes), "neurons never/always fire: spikes prove nothing"
    # exact: H(a - b) equals a >= b in IEEE arithmetic, and the membranes are computed by the
    # same float ops in the same order (no fusion), so no spike may differ
    for name in spikes:
        np.testing.assert_array_equal(ours[name].numpy(), reference[name], err_msg=name)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_forward_equals_ort(small_models: dict, images: np.ndarray, arch: str, ratio: float) -> None:
    model = small_models[arch] if ratio == 0.0 else pruned(small_models[arch], ratio)
    assert_same_as_ort(model, images)


def test_forward_equals_ort_torchscript_export(torchscript_models: dict, images: np.ndarray) -> None:
    """Run-time Shape/Gather/Concat chains and Constant nodes (the other exporter)."""
    assert_same_as_ort(torchscript_models["spikformer"], images)


@pytest.mark.parametrize("arch", ARCHS)
def test_surrogate_gradient_reaches_every_neuron(small_models: dict, images: np.ndarray, arch: str) -> None:
    model = pruned(small_models[arch], 0.3)
    module = convert(model)
    module.probe = {}
    logits = module(torch.from_numpy(images))
    (logits * torch.randn_like(logits, generator=torch.Generator().manual_seed(0))).sum().backward()
    for neuron in find_neurons(model):
        grads = [module.probe[s].grad for s in neuron.spikes]
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads), f"{neuron.name}: no gradient"
    for name in module.trainable:
        grad = module.parameter_of(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), f"{name}: no gradient"


@pytest.fixture(scope="module")
def tuned(small_models: dict) -> dict:
    """A pruned Spikformer fine-tuned for two short epochs towards the unpruned one."""
    torch.set_num_threads(1)
    teacher = small_models["spikformer"]
    student = pruned(teacher, 0.5)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((96, 1, 28, 28)).astype(np.float32)
    session = ort.InferenceSession(teacher.SerializeToString(), providers=["CPUExecutionProvider"])
    teacher_logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    data, val = Dataset(x[:64], None), Dataset(x[64:], None)
    module = convert(student)
    with torch.no_grad():
        before = float(distill_loss(module(torch.from_numpy(data.x)), torch.from_numpy(teacher_logits[:64]), 2.0))
    config = TrainConfig(epochs=2, lr=3e-3, batch=16, seed=5, patience=5)
    result = train(module, data, teacher_logits[:64], val, config, teacher_logits[64:], progress=False)
    return {"student": student, "module": module, "before": before, "result": result, "x": x,
            "teacher_logits": teacher_logits, "config": config, "data": data, "val": val}  # fmt: skip


def test_short_finetune_lowers_distillation_loss(tuned: dict) -> None:
    module, teacher = tuned["module"], torch.from_numpy(tuned["teacher_logits"][:64])
    with torch.no_grad():
        after = float(distill_loss(module(torch.from_numpy(tuned["data"].x)), teacher, 2.0))
    assert after < 0.9 * tuned["before"], (tuned["before"], after)
    history = tuned["result"].history
    assert len(history) == 2 and history[-1]["distill"] < history[0]["distill"]


def test_finetune_is_deterministic(tuned: dict) -> None:
    again = convert(tuned["student"])
    teacher = tuned["teacher_logits"]
    train(again, tuned["data"], teacher[:64], tuned["val"], tuned["config"], teacher[64:], progress=False)
    for name in again.trainable:
        assert torch.equal(again.parameter_of(name), tuned["module"].parameter_of(name)), name


def test_exported_model_runs_in_ort_and_equals_module(tuned: dict) -> None:
    student, module = tuned["student"], tuned["module"]
    exported = write_back(student, module)
    onnx.checker.check_model(exported)
    assert [n.op_type for n in exported.graph.node] == [n.op_type for n in student.graph.node]
    old = {t.name: onnx.numpy_helper.to_array(t) for t in student.graph.initializer}
    new = {t.name: onnx.numpy_helper.to_array(t) for t in exported.graph.initializer}
    changed = [n for n in module.trainable if not np.array_equal(old[n], new[n])]
    assert changed, "fine-tuning changed no weight"
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = tuned["x"][:batch]
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, torch_logits(module, x), rtol=1e-4, atol=1e-4)
    assert_same_as_ort(exported, tuned["x"][:5])  # spikes exact after training too


def test_export_check_fails_a_wrong_write_back(tuned: dict) -> None:
    from svtprune.recover.export import assert_export_agrees, check_export

    student, module, x = tuned["student"], tuned["module"], tuned["x"][:20]
    exported = write_back(student, module)
    worst, agreeing = check_export(exported, module, x)
    assert agreeing == 1.0 and worst < 1e-4
    with pytest.raises(RuntimeError, match="differs from the trained module"):
        assert_export_agrees(student, module, x)  # the weights before training: every image moves


def svtprune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svtprune.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_finetune(tuned: dict, small_models: dict, tmp_path: Path) -> None:
    onnx.save(small_models["spikformer"], tmp_path / "teacher.onnx")
    onnx.save(tuned["student"], tmp_path / "student.onnx")
    rng = np.random.default_rng(1)
    save_npz(tmp_path / "train.npz", Dataset(tuned["x"][:32], rng.integers(0, 10, 32)))
    save_npz(tmp_path / "val.npz", Dataset(tuned["x"][64:], rng.integers(0, 10, 32)))
    args = ["finetune", str(tmp_path / "student.onnx"), "--teacher", str(tmp_path / "teacher.onnx"),
            "--data", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"),
            "-o", str(tmp_path / "tuned.onnx"), "--epochs", "1", "--threads", "1", "--json"]  # fmt: skip
    result = svtprune(*args)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == json.loads((tmp_path / "tuned.report.json").read_text())
    assert {"accuracy_before_finetune", "accuracy_after_finetune", "wall_seconds", "memory_saving"} <= set(report)
    assert report["compressed"]["param_bytes"] < report["original"]["param_bytes"]
    again = svtprune(*args)
    assert again.returncode == 2 and "already exists" in " ".join(again.stderr.split())
    assert "Traceback" not in again.stderr
    missing = svtprune(
        *[a if a != str(tmp_path / "train.npz") else str(tmp_path / "nope.npz") for a in args], "--force"
    )
    assert missing.returncode == 2 and "not found" in " ".join(missing.stderr.split())
    assert "Traceback" not in missing.stderr


def test_finetune_a_quantized_model_keeps_its_bit_widths(tuned: dict, small_models: dict, tmp_path: Path) -> None:
    from svtprune.jobs.finetune import finetune_file
    from svtprune.quantization import Quantizer, thaw

    quantizer = Quantizer(tuned["student"])
    bits = {layer.name: (8, 4)[i % 2] for i, layer in enumerate(quantizer.layers)}
    onnx.save(quantizer.apply(bits), tmp_path / "q.onnx")
    onnx.save(small_models["spikformer"], tmp_path / "teacher.onnx")
    save_npz(tmp_path / "train.npz", Dataset(tuned["x"][:32], None))
    save_npz(tmp_path / "val.npz", Dataset(tuned["x"][64:], None))
    config = TrainConfig(epochs=1, lr=3e-3, batch=16, seed=0)
    report = finetune_file(tmp_path / "q.onnx", tmp_path / "teacher.onnx", tmp_path / "train.npz",
                           tmp_path / "val.npz", tmp_path / "out.onnx", config, progress=False)  # fmt: skip
    written = onnx.load(tmp_path / "out.onnx")
    assert thaw(written).bits == bits and report["requantized"]["bits"] == bits
    assert report["compressed"]["param_bytes"] == param_bytes(written) == report["pruned"]["param_bytes"]
    before = {t.name: t.raw_data for t in onnx.load(tmp_path / "q.onnx").graph.initializer}
    assert any(before.get(t.name) != t.raw_data for t in written.graph.initializer if t.name.endswith("_quantized"))


def run_ort(session: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def with_sharp_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """The random model with its classifier bias zeroed and weight scaled by 10.

    A random SViT's head bias dominates its logits (nearly the same for every input), which leaves
    nothing to distil; this makes the teacher's logits depend on the input.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inits = {t.name for t in out.graph.initializer}
    head = [n for n in out.graph.node if n.op_type == "MatMul" and n.input[1] in inits][-1]
    bias = next(n for n in out.graph.node if n.op_type == "Add" and head.output[0] in n.input)
    for tensor in out.graph.initializer:
        value = onnx.numpy_helper.to_array(tensor)
        if tensor.name == head.input[1]:
            tensor.CopyFrom(onnx.numpy_helper.from_array(value * 10, tensor.name))
        elif tensor.name in bias.input:
            tensor.CopyFrom(onnx.numpy_helper.from_array(np.zeros_like(value), tensor.name))
    return out


@pytest.fixture(scope="module")
def compressed_pair(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """compress with the same search budget, without fine-tuning and with --finetune-data."""
    from svtprune.jobs.compress import compress

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("compress_ft")
    onnx.save(with_sharp_head(small_models["spikformer"]), folder / "model.onnx")
    rng = np.random.default_rng(11)
    save_npz(folder / "val.npz", Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    save_npz(folder / "train.npz", Dataset(rng.standard_normal((128, 1, 28, 28)).astype(np.float32), None))
    common = {"method": "uniform", "calib": 60, "seed": 2}
    plain = compress(folder / "model.onnx", folder / "val.npz", folder / "plain.onnx", 30.0, **common)
    # default budget with fine-tuning: the search may lose FINETUNE_SEARCH_FACTOR (3) x 10 points, plain 30
    tuned = compress(
        folder / "model.onnx", folder / "val.npz", folder / "tuned.onnx", 10.0, **common,
        finetune_data=folder / "train.npz", finetune_epochs=2, finetune_lr=3e-3,
    )  # fmt: skip
    return {"folder": folder, "plain": plain, "tuned": tuned}


def test_compress_finetune_recovers_and_reports_before_and_after(compressed_pair: dict) -> None:
    from svtprune.jobs.common import split
    from svtprune.jobs.options import SplitOptions

    folder, plain, tuned = compressed_pair["folder"], compressed_pair["plain"], compressed_pair["tuned"]
    assert "finetune" not in plain and plain["memory_saving"] > 0
    section = tuned["finetune"]
    assert section["best_epoch"] > 0, section["history"]  # the teacher's signal was learnable here
    # the same search budget gives the same plan; fine-tuning changes weights, never the graph
    assert tuned["groups"] == plain["groups"] and tuned["memory_saving"] == plain["memory_saving"]
    before, after = onnx.load(folder / "plain.onnx"), onnx.load(folder / "tuned.onnx")
    assert [n.op_type for n in after.graph.node] == [n.op_type for n in before.graph.node]
    old = {t.name: onnx.numpy_helper.to_array(t) for t in before.graph.initializer}
    new = {t.name: onnx.numpy_helper.to_array(t) for t in after.graph.initializer}
    assert {k: v.shape for k, v in old.items()} == {k: v.shape for k, v in new.items()}
    assert any(not np.array_equal(old[k], new[k]) for k in old), "fine-tuning changed no weight"
    assert section["accuracy_before"] == plain["compressed"]["accuracy"]  # the un-tuned model, same split
    assert section["accuracy_after"] == tuned["compressed"]["accuracy"]
    assert json.loads((folder / "tuned.report.json").read_text())["finetune"] == section
    # independent oracle: ORT on the written files, against the original's decisions on the held-out split
    sessions = {
        name: ort.InferenceSession(str(folder / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for name in ("model", "plain", "tuned")
    }
    held = split(load_npz(folder / "val.npz"), SplitOptions(calib=60, seed=2))[1]
    logits = {name: run_ort(session, held.x) for name, session in sessions.items()}
    target = logits["model"].argmax(axis=1)
    for name, report in (("plain", plain), ("tuned", tuned)):
        agreement = 100.0 * float((logits[name].argmax(axis=1) == target).mean())
        assert agreement == pytest.approx(report["compressed"]["accuracy"], abs=1e-3), name
    # distillation lowered the training loss (measured with ORT on the training file, not by the trainer)
    train_x = load_npz(folder / "train.npz").x
    train_logits = {name: torch.from_numpy(run_ort(session, train_x)) for name, session in sessions.items()}
    loss = {name: float(distill_loss(train_logits[name], train_logits["model"], 2.0)) for name in ("plain", "tuned")}
    assert loss["tuned"] < loss["plain"], loss


def test_compress_finetune_widens_the_search_budget(compressed_pair: dict) -> None:
    from svtprune.search.budget import FINETUNE_SEARCH_FACTOR, SEARCH_SHARE_OF_BUDGET

    plain, tuned = compressed_pair["plain"], compressed_pair["tuned"]
    budget = SEARCH_SHARE_OF_BUDGET * 10.0 * FINETUNE_SEARCH_FACTOR
    assert tuned["constraints"]["search_budget_points"] == pytest.approx(budget)
    assert tuned["finetune"]["search_budget_points"] == pytest.approx(budget)
    # without fine-tuning the held-out check measures the searched model itself: the whole budget, less a
    # margin from the measured noise; with it, a fixed reserve (the split's noise does not predict the tuned model)
    assert plain["constraints"]["search_budget_points"] == pytest.approx(30.0)
    assert plain["constraints"]["sequential_test"]["held_out_images_in_margin"] == plain["data"]["held_out_images"]
    assert tuned["constraints"]["sequential_test"]["held_out_images_in_margin"] == 0
    assert tuned["constraints"]["max_accuracy_drop"] == 10.0 and tuned["accuracy_drop"] <= 10.0


def test_compress_finetune_bad_input(compressed_pair: dict, tmp_path: Path) -> None:
    from svtprune.errors import UserError
    from svtprune.jobs.compress import compress

    folder = compressed_pair["folder"]
    save_npz(tmp_path / "wrong.npz", Dataset(np.zeros((4, 3, 32, 32), np.float32), None))
    save_npz(tmp_path / "labels.npz", Dataset(np.zeros((4, 1, 28, 28), np.float32), np.array([0, 1, 2, 10])))
    train = folder / "train.npz"
    cases = [
        ({"finetune_data": tmp_path / "wrong.npz"}, "3x32x32"),
        ({"finetune_data": tmp_path / "labels.npz"}, "outside the model's 10 classes"),
        ({"finetune_data": train, "finetune_epochs": 0}, "finetune_epochs must be >= 1"),
        ({"finetune_data": train, "finetune_lr": 0.0}, "finetune_lr"),
        ({"finetune_search_drop": 3.0}, "needs finetune_data"),
    ]
    for extra, words in cases:
        with pytest.raises(UserError, match=words.replace(".", r"\.")):
            compress(folder / "model.onnx", folder / "val.npz", tmp_path / "x.onnx", **extra)
    # through the command line: exit 2, one line, no traceback, nothing written
    out = tmp_path / "x.onnx"
    result = svtprune("compress", str(folder / "model.onnx"), "--data", str(folder / "val.npz"), "-o", str(out),
                      "--finetune-data", str(tmp_path / "missing.npz"))  # fmt: skip
    assert result.returncode == 2 and "not found" in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 3
    assert not list(tmp_path.glob("x.*")), "nothing may be written on bad input"
