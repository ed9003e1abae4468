"""The integer layout of spike-fed 1x1 convolutions (issue 17 item 1).

Oracles: the weight-only quantized model it was made from, run by ONNX Runtime (every spike
tensor identical, logits within float rounding), and the layer inputs measured on images (a
layer is rewritten exactly when its input is a 1x1 Conv1d's and holds only 0 and 1).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from svtprune.graph.taps import with_outputs
from svtprune.quantization import Quantizer, QuantScheme
from svtprune.quantization.integer_layout import integer_layout
from svtprune.runtime import make_session, predict
from svtprune.spiking.neurons import find_neurons, with_taps


def quantized(model: onnx.ModelProto, bits: int, scale_codes: bool) -> onnx.ModelProto:
    quantizer = Quantizer(model, QuantScheme(rounding="nearest", scale_codes=scale_codes))
    return quantizer.apply({layer.name: bits for layer in quantizer.layers})


def spike_images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 1, 28, 28)).astype(np.float32)


def measured_spike_fed_pointwise(model: onnx.ModelProto, x: np.ndarray) -> set[str]:
    """Weights of the 1x1 Conv1d layers whose input held only 0 and 1 on ``x`` (measured, not inferred)."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    values = predict(make_session(with_outputs(model, [n.input[0] for n in convs])), x)
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    found = set()
    for conv in convs:
        stored = inits.get(producer[conv.input[1]].input[0]) if conv.input[1] in producer else None
        v = values[conv.input[0]]
        if stored is not None and len(stored) == 3 and stored[2] == 1 and np.all((v == 0) | (v == 1)):
            found.add(conv.input[1])
    return found


@pytest.mark.parametrize("scale_codes", [True, False])
def test_spikes_and_logits_equal_the_weight_only_model(small_models: dict, scale_codes: bool) -> None:
    model = quantized(small_models["spikformer"], 8, scale_codes)
    layout = integer_layout(model)
    x = spike_images()
    assert set(layout.rewritten) == measured_spike_fed_pointwise(model, x)
    assert len(layout.rewritten) == 2  # attention proj and MLP fc2 (qkv and fc1 read the residual stream)
    neurons = find_neurons(model)
    spikes = [name for n in neurons for name in n.spikes]
    assert spikes
    assert len(spikes) == sum(n.time_steps for n in find_neurons(layout.model))
    before = predict(make_session(with_taps(model, neurons, spikes=True)), x)
    after = predict(make_session(with_taps(layout.model, neurons, spikes=True)), x)
    for name in spikes:
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    logits = model.graph.output[0].name
    np.testing.assert_allclose(after[logits], before[logits], rtol=1e-5, atol=1e-5)


def test_rewritten_layers_run_the_integer_kernel_and_keep_the_bytes(small_models: dict) -> None:
    model = quantized(small_models["spikformer"], 8, scale_codes=True)
    layout = integer_layout(model)
    ops = {n.input[1]: n.op_type for n in layout.model.graph.node if len(n.input) > 1}
    for weight in layout.rewritten:
        assert ops[f"{weight}_integer_t"] == "MatMulIntegerToFloat"
        assert weight not in {name for n in layout.model.graph.node for name in n.input}  # no float weight read
    assert not [n for n in layout.model.graph.node if n.op_type == "Conv" and n.input[1] in layout.rewritten]
    dq = [n for n in layout.model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in layout.rewritten]
    assert not dq  # no dequantize of these weights left to run per call
    stored = sum(t.ByteSize() for t in model.graph.initializer)
    assert sum(t.ByteSize() for t in layout.model.graph.initializer) <= stored + 64 * len(layout.rewritten)


def test_layers_not_fed_by_spikes_or_not_8_bit_stay_as_written(small_models: dict) -> None:
    model = quantized(small_models["spikformer"], 8, scale_codes=True)
    layout = integer_layout(model)
    fed_by_real = {n.input[1] for n in model.graph.node if n.op_type == "Conv"} - set(layout.rewritten)
    kept = {n.input[1] for n in layout.model.graph.node if n.op_type == "Conv"}
    assert fed_by_real and fed_by_real <= kept
    assert all("1x1" in reason for reason in layout.refused.values())  # the 3x3 stem convs on spikes
    four = integer_layout(quantized(small_models["spikformer"], 4, scale_codes=True))
    assert not four.rewritten and any("INT4" in reason for reason in four.refused.values())
    unquantized = integer_layout(small_models["spikformer"])
    assert not unquantized.rewritten and all("DequantizeLinear" in r for r in unquantized.refused.values())


def test_the_layout_is_chosen_by_timing_and_never_changes_a_prediction(small_models: dict, monkeypatch) -> None:  # noqa: ANN001
    """Oracle: a stubbed clock decides which file is faster; the choice follows it, and the section says why."""
    from itertools import cycle

    from svtprune.quantization import layout_choice

    weight_only = quantized(small_models["spikformer"], 8, scale_codes=False)
    x = spike_images(8)
    candidates, _ = layout_choice.layouts_of(weight_only)
    assert list(candidates) == list(layout_choice.LAYOUTS)  # int8 per channel: every layout applies
    for fastest in candidates:
        clock = cycle([0.5 if name == fastest else 1.0 for name in candidates])  # sessions are timed in this order
        monkeypatch.setattr(layout_choice, "latency_ms", lambda *_a, **_k: next(clock))  # noqa: B023
        chosen, section = layout_choice.choose_layout(weight_only, x)
        ops = {n.op_type for n in chosen.graph.node}
        assert section["rewritten"] and section["predictions_unchanged_on"] == len(x)
        assert section["chosen"] == fastest
        assert ("MatMulIntegerToFloat" in ops) == fastest.startswith("integer")
        assert ("DequantizeLinear" in ops) == (not fastest.endswith("at load"))
        if fastest == "weight-only":
            assert chosen is weight_only


def test_quantize_fastest_layout_reports_its_measured_choice(small_models: dict, tmp_path) -> None:  # noqa: ANN001
    from svtprune.data import Dataset, save_npz
    from svtprune.jobs.quantize import quantize
    from svtprune.quantization import layout_choice
    from svtprune.runtime import logits_of

    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    save_npz(tmp_path / "val.npz", Dataset(spike_images(120), None))
    out = tmp_path / "q.onnx"
    report = quantize(
        tmp_path / "m.onnx", tmp_path / "val.npz", out, max_accuracy_drop=30.0, bits="8", layout="fastest"
    )
    section = report["quantization"]["layout"]
    assert section["chosen"] in layout_choice.LAYOUTS and set(section["batch1_ms"]) == set(layout_choice.LAYOUTS)
    written = onnx.load(out)
    assert ("MatMulIntegerToFloat" in {n.op_type for n in written.graph.node}) == section["chosen"].startswith("int")
    assert section["file_bytes"][section["chosen"]] == out.stat().st_size
    assert logits_of(make_session(written), spike_images(4)).shape[0] == 4
