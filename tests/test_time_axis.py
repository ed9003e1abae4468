"""The time axis: found by pattern, cut to T' < T exactly, and the stem run once, against independent oracles.

The oracle of a cut to T' steps is the original model itself, with its time mean reading only the
first T' steps (a Slice inserted before the ReduceMean over axis 0 nearest the output; for a raw
``[T, B, classes]`` output, its first T' rows): the T'-step model must give those logits to 1e-5
and every neuron's spikes of steps < T' exactly. Random graphs are re-randomised so that their
neurons fire (a fresh spikingjelly model never does, and an equality test on it proves nothing).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from svtprune.cli.app import run as cli
from svtprune.graph.taps import with_outputs
from svtprune.runtime import make_session
from svtprune.spiking.compute_once import compute_once
from svtprune.spiking.neurons import find_neurons
from svtprune.spiking.time_axis import TimeAxis, find_time_axis
from svtprune.spiking.timesteps import shorten
from svtprune.spiking.zoo import ArchConfig
from tests.model_builders import parse_with_weights, torchscript_model

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {name: ROOT / "models" / "reference" / f"{name}.onnx" for name in ("spikformer_fmnist", "sdt_fmnist")}


@pytest.fixture(scope="module")
def references() -> dict[str, onnx.ModelProto]:
    return {name: onnx.load(str(path)) for name, path in REFERENCE.items()}


@pytest.fixture(scope="module")
def val_images() -> np.ndarray:
    return np.load(ROOT / "models" / "data" / "fashion_mnist_val.npz")["x"][:16]


@pytest.fixture(scope="module")
def torchscript_t4(tmp_path_factory: pytest.TempPathFactory) -> dict[str, onnx.ModelProto]:
    """Zoo models at T=4 through the TorchScript exporter (shapes computed at run time, Gather steps)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("time_axis")
    return {
        arch: torchscript_model(ArchConfig(arch=arch, T=4, embed_dims=32, depths=1, num_heads=4), 2, folder / arch)
        for arch in ("spikformer", "sdt")
    }


def run(model: onnx.ModelProto, x: np.ndarray, names: list[str] = ()) -> dict[str, np.ndarray]:
    session = make_session(with_outputs(model, names, elem_type=None), optimize=False)
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(outputs, {session.get_inputs()[0].name: x}), strict=True))


def images_for(model: onnx.ModelProto, count: int = 4) -> np.ndarray:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [count, *(d.dim_value for d in dims[1:])]
    return np.random.default_rng(3).standard_normal(shape).astype(np.float32)


def time_mean_oracle(model: onnx.ModelProto, steps: int) -> onnx.ModelProto:
    """The original with its last ReduceMean over axis 0 reading only the first ``steps`` rows."""
    oracle = onnx.ModelProto()
    oracle.CopyFrom(model)
    consts = {t.name: numpy_helper.to_array(t) for t in oracle.graph.initializer}
    means = []
    for node in oracle.graph.node:
        if node.op_type == "ReduceMean":
            axes = consts.get(node.input[1]) if len(node.input) > 1 else None
            for a in node.attribute:
                if a.name == "axes":
                    axes = np.array(a.ints)
            if axes is not None and list(np.ravel(axes)) == [0]:
                means.append(node)
    mean = means[-1]
    oracle.graph.initializer.extend(
        [numpy_helper.from_array(np.array([0]), "oracle_0"), numpy_helper.from_array(np.array([steps]), "oracle_t")]
    )
    cut = helper.make_node("Slice", [mean.input[0], "oracle_0", "oracle_t", "oracle_0"], ["oracle_first_steps"])
    oracle.graph.node.insert(list(oracle.graph.node).index(mean), cut)
    mean.input[0] = "oracle_first_steps"
    return oracle


def expected_logits(model: onnx.ModelProto, x: np.ndarray, steps: int) -> np.ndarray:
    name = model.graph.output[0].name
    if model.graph.output[0].type.tensor_type.shape.dim[0].dim_value > 1:  # a raw [T, B, classes] output
        return run(model, x)[name][:steps]
    return run(time_mean_oracle(model, steps), x)[name]


def assert_cut_exact(
    model: onnx.ModelProto, steps: int, x: np.ndarray, cut: onnx.ModelProto | None = None, logits: bool = True
) -> None:
    """Logits of the first ``steps`` steps (oracle) to 1e-5, and every neuron's spikes of those steps identical."""
    axis = find_time_axis(model)
    assert isinstance(axis, TimeAxis), axis
    cut = shorten(model, axis, steps) if cut is None else cut
    before, after = find_neurons(model), find_neurons(cut)
    assert len(after) == len(before) and all(n.time_steps == steps for n in after)
    original = run(model, x, [s for n in before for s in n.spikes])
    short = run(cut, x, [s for n in after for s in n.spikes])
    rates = [original[s].mean() for n in before for s in n.spikes]
    assert 0.01 < np.mean(rates) < 0.99, "the neurons must fire for the comparison to mean anything"
    for old, new in zip(before, after, strict=True):
        for t in range(steps):
            assert np.array_equal(original[old.spikes[t]], short[new.spikes[t]]), f"{old.name} step {t}"
    if logits:
        name = model.graph.output[0].name
        np.testing.assert_allclose(short[name], expected_logits(model, x, steps), rtol=0, atol=1e-5)


def test_finds_the_time_axis_of_the_reference_models(references: dict[str, onnx.ModelProto]) -> None:
    spikformer, sdt = find_time_axis(references["spikformer_fmnist"]), find_time_axis(references["sdt_fmnist"])
    for axis, neurons in ((spikformer, 15), (sdt, 19)):
        assert isinstance(axis, TimeAxis)
        summary = axis.summary()
        assert (summary["T"], summary["neurons"], summary["neuron_steps"]) == (4, neurons, 4 * neurons)
        assert len(summary["repeat"]) == 1 and summary["folds"] > 0 and summary["stacks"] == neurons
    assert spikformer.mean_before_head == [False] and sdt.mean_before_head == [True]  # the head, then the mean


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_cut_reference_models_matches_the_first_steps(
    references: dict[str, onnx.ModelProto], val_images: np.ndarray, name: str, steps: int
) -> None:
    assert_cut_exact(references[name], steps, val_images)


def test_cut_keeps_a_raw_per_step_output(references: dict[str, onnx.ModelProto], val_images: np.ndarray) -> None:
    """Spikformer without its final mean returns [T, B, classes]: the cut returns the first T' rows."""
    raw = onnx.ModelProto()
    raw.CopyFrom(references["spikformer_fmnist"])
    last = raw.graph.node[-1]
    assert last.op_type == "ReduceMean"
    raw.graph.node.remove(last)
    del raw.graph.output[:]
    raw.graph.output.append(helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, [4, "batch", 10]))
    axis = find_time_axis(raw)
    assert isinstance(axis, TimeAxis) and axis.summary()["outputs_with_time"] == [last.input[0]]
    cut = shorten(raw, axis, 2)
    assert cut.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert_cut_exact(raw, 2, val_images, cut)


@pytest.mark.parametrize("arch", ["spikformer", "sdt"])
def test_cut_torchscript_exports(torchscript_t4: dict[str, onnx.ModelProto], arch: str) -> None:
    """The other exporter: reshape targets computed from Shape at run time, steps read by Gather."""
    model = torchscript_t4[arch]
    for steps in (1, 3):
        assert_cut_exact(model, steps, images_for(model))


@pytest.mark.parametrize("arch", ["spikformer", "sdt", "qkformer"])
def test_cut_small_dynamo_exports(small_models: dict[str, onnx.ModelProto], arch: str) -> None:
    """The session's small zoo models (T=2, calibrated to fire), cut to one step."""
    assert_cut_exact(small_models[arch], 1, images_for(small_models[arch]))


def handmade(steps: int = 4) -> onnx.ModelProto:
    """Another exporter's forms: a Concat of copies, a Split into the steps, Where spikes, ReduceSum / T."""
    copies = ", ".join(["x"] * steps)
    parts = ", ".join(f"p{t}" for t in range(steps))
    body = [f"q = Concat <axis = 0> ({copies})", "c = Conv <pads = [1, 1, 1, 1]> (q, w, b)"]
    body += ["r = Reshape(c, target)", f"{parts} = Split <axis = 0> (r, sizes)", "v_prev = Sub(zero, zero)"]
    for t in range(steps):
        body += [
            f"i{t} = Squeeze(p{t}, axis0)",
            f"v{t} = Add(v_prev{'' if t == 0 else t - 1}, i{t})",
            f"f{t} = GreaterOrEqual(v{t}, thr)",
            f"s{t} = Where(f{t}, one, zero)",
            f"k{t} = Sub(v{t}, s{t})",
            f"v_prev{t} = Mul(k{t}, decay)",
            f"u{t} = Unsqueeze(s{t}, axis0)",
        ]
    stacked = ", ".join(f"u{t}" for t in range(steps))
    body += [f"st = Concat <axis = 0> ({stacked})", "total = ReduceSum <keepdims = 0> (st, axis0)"]
    body += ["avg = Div(total, count)", "flat = Flatten <axis = 1> (avg)", "y = MatMul(flat, head)"]
    text = f"""<ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 1, 4, 4] x) => (float[N, 3] y) {{
        {chr(10).join(body)}
    }}"""
    rng = np.random.default_rng(1)
    weights = {
        "w": rng.standard_normal((2, 1, 3, 3)),
        "b": rng.standard_normal(2),
        "thr": np.array(1.0),
        "one": np.array(1.0),
        "zero": np.array(0.0),
        "decay": np.array(0.5),
        "count": np.array(float(steps)),
        "head": rng.standard_normal((32, 3)),
    }
    model = parse_with_weights(text, weights)
    ints = {"target": [steps, -1, 2, 4, 4], "sizes": [1] * steps, "axis0": [0]}
    model.graph.initializer.extend(numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items())
    return model


def test_cut_handmade_forms() -> None:
    model = handmade()
    axis = find_time_axis(model)
    assert isinstance(axis, TimeAxis), axis
    assert axis.sites.splits and axis.sites.sums and axis.steps == 4
    x = images_for(model, 6)
    stack = run(model, x, ["st"])["st"]
    head = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "head"))
    for steps in (1, 2, 3):
        cut = shorten(model, axis, steps)
        expected = stack[:steps].mean(0).reshape(len(x), -1) @ head  # the per-step head outputs, averaged
        np.testing.assert_allclose(run(cut, x)["y"], expected, rtol=0, atol=1e-5)
        assert_cut_exact(model, steps, x, cut, logits=False)  # no ReduceMean: the logits are checked above


def test_says_why_a_graph_has_no_time_axis(small_models: dict[str, onnx.ModelProto]) -> None:
    assert "no spiking neurons" in find_time_axis(small_models["vit"])
    model = handmade()
    model.graph.node.insert(2, helper.make_node("Softmax", ["c"], ["c_soft"], axis=0))  # mixes the copies
    next(n for n in model.graph.node if n.op_type == "Reshape").input[0] = "c_soft"
    reason = find_time_axis(model)
    assert isinstance(reason, str) and "Softmax" in reason and "time axis" in reason


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_stem_once_is_exact(references: dict[str, onnx.ModelProto], val_images: np.ndarray, name: str) -> None:
    """Before the first neuron the T copies are equal: computed once, the spikes and logits are the same bits.

    At T' < T the stem runs once and the model T' steps, from one reading of the time axis: the same
    bits as the cut alone (whose own oracle is above)."""
    model = references[name]
    axis = find_time_axis(model)
    for steps in (4, 2, 1):
        source = model if steps == 4 else shorten(model, axis, steps)
        once, note = compute_once(model, axis, steps)
        assert "run once" in note
        first_conv = next(n for n in once.graph.node if n.op_type == "Conv")
        assert run(once, val_images, [first_conv.output[0]])[first_conv.output[0]].shape[0] == len(val_images)
        neurons = find_neurons(source)
        assert [n.spikes for n in find_neurons(once)] == [n.spikes for n in neurons]
        names = [s for n in neurons for s in n.spikes] + [model.graph.output[0].name]
        a, b = run(source, val_images, names), run(once, val_images, names)
        assert all(np.array_equal(a[k], b[k]) for k in names)


def test_stem_once_with_shapes_computed_at_run_time(torchscript_t4: dict[str, onnx.ModelProto]) -> None:
    model = torchscript_t4["sdt"]
    once, _ = compute_once(model, find_time_axis(model))
    onnx.checker.check_model(once)
    x = images_for(model)
    names = [s for n in find_neurons(model) for s in n.spikes] + [model.graph.output[0].name]
    a, b = run(model, x, names), run(once, x, names)
    assert all(np.array_equal(a[k], b[k]) for k in names)


def test_prune_timesteps_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fast.onnx"
    assert cli(["prune", str(REFERENCE["sdt_fmnist"]), "--timesteps", "2", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["timesteps"], summary["timesteps_original"]) == (2, 4) and summary["ratio"] == 0
    plan = json.loads((tmp_path / "fast.plan.json").read_text())
    assert plan["meta"]["timesteps"] == 2 and plan["groups"] == {}
    assert all(n.time_steps == 2 for n in find_neurons(onnx.load(str(out))))
    for bad in ("4", "0"):
        assert cli(["prune", str(REFERENCE["sdt_fmnist"]), "--timesteps", bad, "-o", str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "--timesteps must be in [1, 3]" in err
    assert not (tmp_path / "x.onnx").exists()


def test_prune_timesteps_refuses_a_graph_without_time(
    small_models: dict[str, onnx.ModelProto], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    vit = tmp_path / "vit.onnx"
    onnx.save(small_models["vit"], str(vit))
    assert cli(["prune", str(vit), "--timesteps", "1", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no time axis" in err and "no spiking neurons" in err and "Traceback" not in err


def test_analyze_reports_the_time_axis(capsys: pytest.CaptureFixture) -> None:
    assert cli(["analyze", str(REFERENCE["spikformer_fmnist"]), "--json"]) == 0
    section = json.loads(capsys.readouterr().out)["time_axis"]
    assert section["T"] == 4 and section["neuron_steps"] == 60 and section["mean"]
    assert cli(["analyze", str(REFERENCE["spikformer_fmnist"])]) == 0
    assert "time axis: T=4" in capsys.readouterr().out
