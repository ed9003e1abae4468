"""Small hand-written graphs: groups to refuse (with the reason), ops to follow, shared tensors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from svtprune.errors import UserError
from svtprune.graph.analysis import analyze
from svtprune.graph.plan import uniform_plan
from svtprune.importance import group_scores
from tests.model_builders import parse_with_weights
from tests.oracle import assert_matches_oracle


def conv_chain(middle: str, extra_inits: dict | None = None, domain: str = "") -> onnx.ModelProto:
    """x -> Conv(8) -> Relu -> MIDDLE -> Conv(6) -> y, MIDDLE written in ONNX text."""
    text = f"""
    <ir_version: 8, opset_import: ["" : 17{', "com.example" : 1' if domain else ""}]>
    g (float[N, 4, 8, 8] x) => (float[N, 6, 8, 8] y) {{
        a = Conv(x, w1, b1)
        r = Relu(a)
        {middle}
        y = Conv(m, w2)
    }}"""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((8, 4, 1, 1)),
        "b1": rng.standard_normal(8),
        "w2": rng.standard_normal((6, 8, 1, 1)),
    }
    inits.update(extra_inits or {})
    model = parse_with_weights(text, inits)
    return model


def first_group(model: onnx.ModelProto):  # noqa: ANN201
    return analyze(model).groups[0]


def test_elementwise_chain_is_prunable_and_matches_oracle() -> None:
    model = conv_chain("m = Mul(r, s)", {"s": np.linspace(0.5, 2, 8).reshape(1, 8, 1, 1)})
    analysis = analyze(model)
    group = analysis.groups[0]
    assert group.prunable and group.size == 8
    assert {m.initializer for m in group.members} == {"w1", "b1", "s", "w2"}  # the scale is sliced too
    assert not analysis.groups[1].prunable and "model output" in analysis.groups[1].refused[0]
    x = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
    assert_matches_oracle(analysis, uniform_plan(analysis, 0.5, group_scores(analysis)), x)


@pytest.mark.parametrize(
    "middle, reason",
    [
        ("m = ReduceMean <axes = [1], keepdims = 1> (r)", "reduces over the channel axis"),
        ("m = Softmax <axis = 1> (r)", "normalises over the channel axis"),
        ("m = com.example.Foo(r)", "not supported"),
        ("m = ReduceMax <axes = [1], keepdims = 1> (r)", "reduces over the channel axis"),
    ],
)
def test_channel_mixing_ops_refuse_the_group(middle: str, reason: str) -> None:
    text_model = conv_chain(middle, domain="com.example" if "example" in middle else "")
    group = first_group(text_model)
    assert not group.prunable
    assert any(reason in r for r in group.refused), group.refused


def test_depthwise_conv_follows_its_input_channels() -> None:
    model = conv_chain("m = Conv <group = 8> (r, wd)", {"wd": np.random.default_rng(2).standard_normal((8, 1, 3, 3))})
    for node in model.graph.node:
        if node.input[1:2] == ["wd"]:
            node.attribute.append(helper.make_attribute("pads", [1, 1, 1, 1]))
    analysis = analyze(model)
    group = analysis.groups[0]
    assert group.prunable and "wd" in {m.initializer for m in group.members}
    x = np.random.default_rng(1).standard_normal((3, 4, 8, 8)).astype(np.float32)
    assert_matches_oracle(analysis, uniform_plan(analysis, 0.25, group_scores(analysis)), x)


def test_no_prunable_group_is_a_user_error(tmp_path) -> None:  # noqa: ANN001
    from svtprune.jobs.prune import prune_uniform

    path = tmp_path / "m.onnx"
    onnx.save(conv_chain("m = Softmax <axis = 1> (r)"), path)
    with pytest.raises(UserError, match="no prunable channel group"):
        prune_uniform(path, 0.3)


def test_corrupt_file_is_a_user_error(tmp_path) -> None:  # noqa: ANN001
    from svtprune.jobs.prune import prune_uniform

    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x00not an onnx model at all")
    with pytest.raises(UserError, match="not"):
        prune_uniform(path, 0.3)


def test_shared_initializer_is_cut_per_use() -> None:
    """Exporters de-duplicate equal tensors: one bias feeding two groups is copied, not cut twice."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4, 8, 8] x) => (float[N, 6, 8, 8] y) {
        a = Conv(x, w1, b)
        r = Relu(a)
        c = Conv(r, w2, b)
        s = Relu(c)
        y = Conv(s, w3)
    }"""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((8, 4, 1, 1)),
        "w2": rng.standard_normal((8, 8, 1, 1)),
        "b": rng.standard_normal(8),
        "w3": rng.standard_normal((6, 8, 1, 1)),
    }
    model = parse_with_weights(text, inits)
    analysis = analyze(model)
    first, second = analysis.groups[0], analysis.groups[1]
    plan = uniform_plan(analysis, 0.0, group_scores(analysis))
    plan.kept[first.name] = [0, 2, 4, 6]  # halve the first group only
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    pruned = assert_matches_oracle(analysis, plan, x)
    biases = {t.name: tuple(t.dims) for t in pruned.graph.initializer if t.name.startswith("b")}
    assert sorted(biases.values()) == [(4,), (8,)], biases  # each use got the cut it needs
    assert second.size == 8


def test_sum_over_channels_is_followed() -> None:
    """ReduceSum over channels gives the same result without zeroed channels: prunable, exact."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 4, 8, 8] x) => (float[N, 6, 8, 8] y) {
        a = Conv(x, w1, b1)
        r = Relu(a)
        s = ReduceSum <keepdims = 1> (r, axes)
        m = Mul(r, s)
        y = Conv(m, w2)
    }"""
    rng = np.random.default_rng(0)
    inits = {
        "w1": rng.standard_normal((8, 4, 1, 1)),
        "b1": rng.standard_normal(8),
        "w2": rng.standard_normal((6, 8, 1, 1)),
    }
    model = parse_with_weights(text, inits)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    analysis = analyze(model)
    assert analysis.groups[0].prunable
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    assert_matches_oracle(analysis, uniform_plan(analysis, 0.5, group_scores(analysis)), x)


def test_written_models_leave_out_intermediate_shapes_and_run_the_same(small_models: dict, tmp_path) -> None:  # noqa: ANN001
    import os

    from svtprune.graph.io import save_model
    from svtprune.graph.normalize import infer_shapes
    from svtprune.runtime import logits_of, make_session

    model = infer_shapes(small_models["sdt"])
    assert len(model.graph.value_info)  # what normalize leaves on every model svtprune writes
    path = save_model(model, tmp_path / "m.onnx")
    written = onnx.load(path)
    assert len(written.graph.value_info) == 0 and len(model.graph.value_info)  # the caller's model untouched
    assert {t.name: t.SerializeToString() for t in written.graph.initializer} == {
        t.name: t.SerializeToString() for t in model.graph.initializer
    }  # fmt: skip
    x = np.random.default_rng(6).standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(logits_of(make_session(written), x), logits_of(make_session(model), x))
    assert os.path.getsize(path) < model.ByteSize()
