"""Neuron recognition by pattern, on hand-written graphs in the forms users bring."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from svtprune.spiking.neurons import find_neurons, with_taps
from tests.oracle import run

T, N, C = 3, 2, 4


def _lif_steps(nodes: list, inits: list, prefix: str, currents: list[str], form: str, thr: float) -> list[str]:
    """Unrolled LIF (tau 2): charge v += (x - v) / 2, fire v >= thr, hard or soft reset."""
    inits += [
        numpy_helper.from_array(np.array(v, np.float32), f"{prefix}_{k}")
        for k, v in (("two", 2.0), ("thr", thr), ("one", 1.0), ("zero", 0.0))
    ]
    spikes, v = [], None
    for t, x in enumerate(currents):
        p = f"{prefix}{t}"
        if v is None:
            nodes.append(helper.make_node("Div", [x, f"{prefix}_two"], [f"{p}_h"]))
        else:
            nodes += [
                helper.make_node("Sub", [x, v], [f"{p}_d"]),
                helper.make_node("Div", [f"{p}_d", f"{prefix}_two"], [f"{p}_dd"]),
                helper.make_node("Add", [v, f"{p}_dd"], [f"{p}_h"]),
            ]
        if form == "cast":
            nodes += [
                helper.make_node("GreaterOrEqual", [f"{p}_h", f"{prefix}_thr"], [f"{p}_b"]),
                helper.make_node("Cast", [f"{p}_b"], [f"{p}_s"], to=TensorProto.FLOAT),
            ]
        else:  # Where form with the threshold subtracted first, as some exporters write it
            nodes += [
                helper.make_node("Sub", [f"{p}_h", f"{prefix}_thr"], [f"{p}_m"]),
                helper.make_node("Greater", [f"{p}_m", f"{prefix}_zero"], [f"{p}_b"]),
                helper.make_node("Where", [f"{p}_b", f"{prefix}_one", f"{prefix}_zero"], [f"{p}_s"]),
            ]
        if form == "cast":  # hard reset: v = h * (1 - s)
            nodes += [
                helper.make_node("Sub", [f"{prefix}_one", f"{p}_s"], [f"{p}_ns"]),
                helper.make_node("Mul", [f"{p}_h", f"{p}_ns"], [f"{p}_v"]),
            ]
        else:  # soft reset: v = h - s * thr
            nodes += [
                helper.make_node("Mul", [f"{p}_s", f"{prefix}_thr"], [f"{p}_st"]),
                helper.make_node("Sub", [f"{p}_h", f"{p}_st"], [f"{p}_v"]),
            ]
        spikes.append(f"{p}_s")
        v = f"{p}_v"
    return spikes


def two_layer_snn(form: str) -> onnx.ModelProto:
    """x_t -> LIF -> MatMul -> LIF, T steps fed as separate inputs."""
    nodes: list = []
    inits = [numpy_helper.from_array(np.random.default_rng(0).standard_normal((C, C)).astype(np.float32), "w")]
    first = _lif_steps(nodes, inits, "a", [f"x{t}" for t in range(T)], form, 1.0)
    for t, s in enumerate(first):
        nodes.append(helper.make_node("MatMul", [s, "w"], [f"y{t}"]))
    second = _lif_steps(nodes, inits, "b", [f"y{t}" for t in range(T)], form, 0.5)
    nodes.append(helper.make_node("Concat", second, ["out"], axis=0))
    graph = helper.make_graph(
        nodes,
        "snn",
        [helper.make_tensor_value_info(f"x{t}", TensorProto.FLOAT, [N, C]) for t in range(T)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def reference_membranes(xs: list[np.ndarray], thr: float, form: str) -> tuple[list, list]:
    h_all, s_all, v = [], [], np.zeros_like(xs[0])
    for x in xs:
        h = v + (x - v) / 2
        s = (h >= thr if form == "cast" else h - thr > 0).astype(np.float32)
        v = h * (1 - s) if form == "cast" else h - s * thr
        h_all.append(h)
        s_all.append(s)
    return h_all, s_all


@pytest.mark.parametrize("form", ["cast", "where"])
def test_finds_neurons_thresholds_and_time_steps(form: str) -> None:
    neurons = find_neurons(two_layer_snn(form))
    assert [n.time_steps for n in neurons] == [T, T]
    assert neurons[0].thresholds == [1.0] * T and neurons[1].thresholds == [0.5] * T
    assert neurons[1].feeds_from  # the MatMul that charges it


@pytest.mark.parametrize("form", ["cast", "where"])
def test_membrane_taps_equal_numpy_reference(form: str) -> None:
    model = two_layer_snn(form)
    neurons = find_neurons(model)
    xs = [np.random.default_rng(t).uniform(0, 3, (N, C)).astype(np.float32) for t in range(T)]
    session_out = run_multi(with_taps(model, neurons, spikes=True), xs)
    h_ref, s_ref = reference_membranes(xs, 1.0, form)
    assert 0 < sum(s.sum() for s in s_ref) < T * N * C  # some, not all, fire
    for t in range(T):
        np.testing.assert_allclose(session_out[neurons[0].membranes[t]], h_ref[t], rtol=1e-6)
        np.testing.assert_array_equal(session_out[neurons[0].spikes[t]], s_ref[t])


def run_multi(model: onnx.ModelProto, xs: list[np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {f"x{t}": x for t, x in enumerate(xs)}), strict=True))


def test_a_boolean_mask_is_not_a_neuron() -> None:
    """Where(x > 0, x, 0) is a ReLU written out, not a spike."""
    graph = helper.make_graph(
        [helper.make_node("Greater", ["x", "z"], ["m"]), helper.make_node("Where", ["m", "x", "z"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array(0.0, np.float32), "z")],
    )
    assert find_neurons(helper.make_model(graph)) == []


@pytest.mark.parametrize("arch,count", [("spikformer", 10), ("sdt", 12), ("qkformer", 25)])
def test_every_zoo_neuron_is_found(arch: str, count: int, small_models: dict) -> None:
    """Counts are the LIF modules of each small model; each runs T=2 steps."""
    neurons = find_neurons(small_models[arch])
    assert len(neurons) == count
    assert all(n.time_steps == 2 for n in neurons)


def test_taps_on_an_exported_model_are_membranes(small_models: dict, images: np.ndarray) -> None:
    model = small_models["spikformer"]
    neurons = find_neurons(model)
    out = run(with_taps(model, neurons, spikes=True), images)
    for neuron in neurons:
        for membrane, spike, threshold in zip(neuron.membranes, neuron.spikes, neuron.thresholds, strict=True):
            np.testing.assert_array_equal(out[spike], (out[membrane] >= threshold).astype(np.float32))
