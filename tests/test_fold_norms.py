"""BatchNormalization folded into the layer before it (graph/fold_norms.py), across the shape ops exporters put there.

Small graphs built by hand check the arithmetic (logits to 1e-5 of their scale, the BN gone) and every
refusal; the reference SDT and a small exported SDT (``Conv -> Reshape -> BatchNormalization`` at every
BN) check that a real spiking model computes the same logits and spikes, threshold ties apart.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from svtprune.graph.fold_norms import channel_axis_after, fold_norms
from svtprune.graph.io import param_bytes
from svtprune.jobs import fold_step
from svtprune.jobs.verify import compare_with_oracle
from svtprune.runtime import make_session
from tests.conftest import SMALL
from tests.model_builders import spiking_model

ROOT = Path(__file__).resolve().parents[1]
SDT = ROOT / "models" / "reference" / "sdt_fmnist.onnx"
RNG = np.random.default_rng(0)


def _bn_constants(prefix: str, channels: int) -> list[onnx.TensorProto]:
    values = {
        "scale": RNG.uniform(0.5, 2.0, channels),
        "bias": RNG.standard_normal(channels),
        "mean": RNG.standard_normal(channels),
        "var": RNG.uniform(0.2, 3.0, channels),
    }
    return [numpy_helper.from_array(v.astype(np.float32), f"{prefix}_{k}") for k, v in values.items()]


def conv_graph(
    between: list[onnx.NodeProto] | None = None,
    norm_channels: int = 6,
    extra: list[onnx.NodeProto] = (),
    conv_bias: bool = True,
    **norm_attrs: int,
) -> onnx.ModelProto:
    """x [2, 4, 5, 5] -> Conv (6 channels) -> ``between`` (reading ``y``, ending in ``z``) -> BN -> Flatten."""
    between = between if between is not None else [helper.make_node("Reshape", ["y", "target"], ["z"], name="fold")]
    conv_out = "y" if between else "z"  # no node between: the BN reads the Conv
    inits = [
        numpy_helper.from_array(RNG.standard_normal((6, 4, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.standard_normal(6).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([2, 6, 25], np.int64), "target"),
        numpy_helper.from_array(np.array([2, 3, 50], np.int64), "mixing"),
        numpy_helper.from_array(np.array([2], np.int64), "axis2"),
        *_bn_constants("bn", norm_channels),
    ]
    conv_inputs = ["x", "w", "b"] if conv_bias else ["x", "w"]
    nodes = [
        helper.make_node("Conv", conv_inputs, [conv_out], name="conv", pads=[1, 1, 1, 1]),
        *between,
        helper.make_node(
            "BatchNormalization", ["z", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n"], name="bn", **norm_attrs
        ),
        helper.make_node("Flatten", ["n"], ["logits"], name="flatten_out", axis=1),
        *extra,
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 5, 5])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, "k"])],  # nothing reads the ``extra`` nodes
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = make_session(model)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def assert_same_logits(original: onnx.ModelProto, folded: onnx.ModelProto) -> None:
    onnx.checker.check_model(folded)
    assert not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    x = RNG.standard_normal((2, 4, 5, 5)).astype(np.float32)
    a, b = run(original, x), run(folded, x)
    assert np.abs(a - b).max() <= 1e-5 * max(1.0, np.abs(a).max())


def test_conv_reshape_bn_folds() -> None:
    model = conv_graph()
    result = fold_norms(model)
    assert result.folded == ["bn"] and result.refused == {}
    assert_same_logits(model, result.model)
    assert any(n.op_type == "BatchNormalization" for n in model.graph.node)  # the input is not touched


@pytest.mark.parametrize(
    "between",
    [
        [],  # adjacent, as ORT folds it itself
        [helper.make_node("Transpose", ["y"], ["t"], perm=[0, 1, 3, 2]), helper.make_node("Identity", ["t"], ["z"])],
        [helper.make_node("Unsqueeze", ["y", "axis2"], ["u"]), helper.make_node("Squeeze", ["u", "axis2"], ["z"])],
    ],
    ids=["adjacent", "transpose-identity", "unsqueeze-squeeze"],
)
def test_other_shape_ops_that_keep_the_channels(between: list[onnx.NodeProto]) -> None:
    model = conv_graph(between, conv_bias=not between)
    result = fold_norms(model)
    assert result.folded == ["bn"], result.refused
    assert_same_logits(model, result.model)


def test_a_shape_reader_does_not_stop_the_fold() -> None:
    extra = [helper.make_node("Shape", ["y"], ["shape"], name="shape")]
    model = conv_graph(extra=extra)
    result = fold_norms(model)
    assert result.folded == ["bn"]
    assert_same_logits(model, result.model)


def test_refusals() -> None:
    mixing = [helper.make_node("Reshape", ["y", "mixing"], ["z"], name="fold")]
    assert "does not keep the channel axis whole" in fold_norms(conv_graph(mixing, norm_channels=3)).refused["bn"]
    flat = [helper.make_node("Flatten", ["y"], ["z"], name="flat", axis=1)]  # [2, 150]: no channel axis left
    assert "does not keep the channel axis whole" in fold_norms(conv_graph(flat, norm_channels=150)).refused["bn"]
    moved = [helper.make_node("Transpose", ["y"], ["z"], name="moved", perm=[0, 2, 1, 3])]
    assert "not the BN's axis 1" in fold_norms(conv_graph(moved, norm_channels=5)).refused["bn"]
    second = conv_graph(extra=[helper.make_node("Relu", ["y"], ["r"], name="relu")])
    assert "also read by Relu" in fold_norms(second).refused["bn"]
    training = conv_graph(training_mode=1)
    result = fold_norms(training)
    assert result.folded == [] and "training mode" in result.refused["bn"] and result.model is training


def test_matmul_flatten_bn_becomes_an_add() -> None:
    """LeViT's ``MatMul -> Flatten -> BatchNormalization``: the weight's columns scaled, the BN an Add."""
    inits = [numpy_helper.from_array(RNG.standard_normal((8, 5)).astype(np.float32), "w"), *_bn_constants("bn", 5)]
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
        helper.make_node("Flatten", ["y"], ["z"], name="flat", axis=2),
        helper.make_node("BatchNormalization", ["z", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["n"], name="bn"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 7, 8])],
        [helper.make_tensor_value_info("n", TensorProto.FLOAT, [21, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = fold_norms(model)
    assert result.folded == ["bn"]
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "Flatten", "Add"]
    x = RNG.standard_normal((3, 7, 8)).astype(np.float32)
    a, b = run(model, x), run(result.model, x)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()


def test_channel_axis_after_a_reshape() -> None:
    assert channel_axis_after(["4*batch", 8, 28, 28], ["4*batch", 8, 28, 28], 1) == 1
    assert channel_axis_after(["t*b", 8, 7, 7], [4, "b", 8, 49], 1) == 2
    assert channel_axis_after([2, 3, 64], [6, 64], 2) == 1
    assert channel_axis_after([2, 8, 4, 4], [2, 4, 2, 16], 1) is None  # the channels split in two
    assert channel_axis_after([2, 8, None, 4], [2, 8, None, 4], 1) is None  # what follows the channels unknown


def spiking_agreement(original: onnx.ModelProto, folded: onnx.ModelProto, x: np.ndarray) -> dict:
    """verify's comparison of the two models (ties allowed), and the largest logit difference of all samples."""
    result = compare_with_oracle(original, folded, x)
    result["max_logit_difference"] = float(np.abs(run(original, x) - run(folded, x)).max())
    return result


def test_reference_sdt_logits_unchanged() -> None:
    model = onnx.load(str(SDT))
    result = fold_norms(model)
    assert len(result.folded) == 17 and result.refused == {}
    assert not any(n.op_type == "BatchNormalization" for n in result.model.graph.node)
    x = np.load(ROOT / "models" / "data" / "fashion_mnist_val.npz")["x"][:64]
    agreement = spiking_agreement(model, result.model, x)
    assert agreement["passed"] and agreement["exact"] == 64 and agreement["max_logit_difference"] <= 1e-5


def test_small_exported_sdt(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = spiking_model(SMALL["sdt"], seed=1, path=tmp_path / "sdt.onnx")
    norms = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert norms and all(producers[n.input[0]] == "Reshape" for n in norms)  # the pattern ORT does not fold
    result = fold_norms(model)
    assert len(result.folded) == len(norms)
    x = np.random.default_rng(3).standard_normal((16, 1, 28, 28)).astype(np.float32)
    agreement = spiking_agreement(model, result.model, x)
    assert agreement["passed"] and agreement["firing"] > 0
    assert agreement["threshold_ties"] or agreement["max_logit_difference"] <= 1e-5


def test_kept_only_where_measured_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    model = conv_graph()
    monkeypatch.setattr(fold_step, "balanced_speedup", lambda sessions, batch, rounds: 0.97)
    kept, section = fold_step.fold_if_faster(model)
    assert kept is model and not section["applied"] and "not applied" in section["note"]
    monkeypatch.setattr(fold_step, "balanced_speedup", lambda sessions, batch, rounds: 1.1)
    folded, section = fold_step.fold_if_faster(model, held=lambda m: 80.0, held_accuracy=80.0)
    assert section["applied"] and not any(n.op_type == "BatchNormalization" for n in folded.graph.node)
    kept, section = fold_step.fold_if_faster(model, held=lambda m: 79.9, held_accuracy=80.0)
    assert kept is model and "held-out" in section["note"]
    assert fold_step.refold(model, {fold_step.META_KEY: section["note"]}) is not model
    assert fold_step.refold(model, {}) is model


def test_balanced_speedup_times_both_models() -> None:
    model = conv_graph()
    sessions = [make_session(model), make_session(fold_norms(model).model)]
    assert 0.2 < fold_step.balanced_speedup(sessions, 1, 3) < 5.0


def test_prune_writes_the_fold_and_verify_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from svtprune.cli.app import run as cli

    monkeypatch.setattr(fold_step, "balanced_speedup", lambda sessions, batch, rounds: 1.1)
    out = tmp_path / "p.onnx"
    assert cli(["prune", str(SDT), "--ratio", "0.3", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    plan = json.loads((tmp_path / "p.plan.json").read_text())
    assert summary["norm_folding"]["applied"] and plan["meta"][fold_step.META_KEY]
    written = onnx.load(str(out))
    assert not any(n.op_type == "BatchNormalization" for n in written.graph.node)
    assert summary["pruned_param_bytes"] == param_bytes(written)  # the BNs' constants are gone from the count too
    data = ROOT / "models" / "data" / "fashion_mnist_val.npz"
    plan_path = str(tmp_path / "p.plan.json")
    assert cli(["verify", str(SDT), str(out), "--plan", plan_path, "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["passed"]
