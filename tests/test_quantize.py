"""Weight-only quantization and the AQ4SViT search.

Oracles: a numpy quantizer written here from the textbook formulas (round-to-nearest, full
range), ONNX Runtime's own DequantizeLinear output, the bytes the file actually stores, and
stub executors whose accuracy and drift are known functions of the setting.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from svtprune.data import Dataset, save_npz
from svtprune.evaluate import top1
from svtprune.graph.io import param_bytes
from svtprune.quantization import FP32, Quantizer, QuantScheme, dequantize, quantizable_layers
from svtprune.runtime import logits_of, make_session, predict
from svtprune.search.budget import Budget as QuantBudget
from svtprune.search.drift import DriftProbe
from svtprune.search.quant_executor import QuantExecutor
from svtprune.search.quant_policies import beam, exhaustive, greedy
from svtprune.search.records import Measurement


def reference_quantize(w: np.ndarray, out_axis: int, bits: int, symmetric: bool, half: bool = False) -> np.ndarray:
    """Textbook per-output-channel round-to-nearest over the full range, dequantized (scales float16 if half)."""
    scale_type = np.float16 if half else np.float32
    moved = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1).astype(np.float32)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (np.abs(moved).max(axis=1) / qmax).astype(scale_type).astype(np.float32)[:, None]
        q = np.clip(np.round(moved / scale), -(2 ** (bits - 1)), qmax)
        result = q * scale
    else:
        low, high = np.minimum(moved.min(axis=1), 0), np.maximum(moved.max(axis=1), 0)
        scale = ((high - low) / (2**bits - 1)).astype(scale_type).astype(np.float32)[:, None]
        zero = np.clip(np.round(-low[:, None] / scale), 0, 2**bits - 1)
        q = np.clip(np.round(moved / scale) + zero, 0, 2**bits - 1)
        result = (q - zero) * scale
    return np.moveaxis(result.reshape(np.moveaxis(w, out_axis, 0).shape), 0, out_axis).astype(np.float32)


def ort_weights(model: onnx.ModelProto, names: list[str]) -> dict[str, np.ndarray]:
    """The weights as ONNX Runtime computes them from the stored integers (DequantizeLinear outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = make_session(probe)
    feed = np.zeros([1 if not isinstance(d, int) else d for d in session.get_inputs()[0].shape], np.float32)
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: feed}), strict=True))


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
def test_dequantized_weights_equal_the_numpy_reference(small_models: dict, bits: int, symmetric: bool) -> None:
    model = small_models["spikformer"]
    quantizer = Quantizer(model, QuantScheme(symmetric=symmetric, rounding="nearest", half_side=False))
    names = [layer.name for layer in quantizer.layers]
    quantized = quantizer.apply({name: bits for name in names})
    seen = ort_weights(quantized, names)
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for layer in quantizer.layers:
        expected = reference_quantize(originals[layer.name], layer.out_axis, bits, symmetric)
        np.testing.assert_allclose(seen[layer.name], expected, rtol=1e-6, atol=1e-7, err_msg=layer.name)


def test_side_vectors_and_scales_are_stored_as_float16(small_models: dict) -> None:
    model = small_models["spikformer"]
    names = [layer.name for layer in quantizable_layers(model)]
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    side = [n for n, v in originals.items() if v.dtype == np.float32 and n not in names and v.size >= 16]
    assert side  # normalisation vectors and biases
    half = Quantizer(model, QuantScheme(rounding="nearest")).apply(dict.fromkeys(names, 4))
    seen = ort_weights(half, names + side)
    for name in side:
        np.testing.assert_array_equal(seen[name], originals[name].astype(np.float16).astype(np.float32))
    for layer in quantizable_layers(model):
        expected = reference_quantize(originals[layer.name], layer.out_axis, 4, True, half=True)
        np.testing.assert_allclose(seen[layer.name], expected, rtol=1e-6, atol=1e-7, err_msg=layer.name)
    full = Quantizer(model, QuantScheme(rounding="nearest", half_side=False)).apply(dict.fromkeys(names, 4))
    assert param_bytes(full) - param_bytes(half) == 2 * sum(originals[n].size for n in side) + 2 * sum(
        layer.shape[layer.out_axis] for layer in quantizable_layers(model)
    )


def test_int8_biases_equal_the_numpy_reference_and_take_one_byte(small_models: dict) -> None:
    from svtprune.quantization import (
        SIDE_INT8_WIDTH,
        batchnorm_as_scale_and_shift,
        layer_biases,
        side_vector_names,
        thaw,
    )

    model = small_models["sdt"]  # conv biases, and BatchNormalizations after a Reshape
    names = [layer.name for layer in quantizable_layers(model)]
    assert not set(layer_biases(model, set(names))) & {
        name for n in model.graph.node if n.op_type == "BatchNormalization" for name in n.input
    }  # a BatchNormalization still holding its variance is never int8
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    batchnorm_as_scale_and_shift(rewritten)  # what Quantizer.apply stores: scale and shift
    values = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    side = set(side_vector_names(rewritten))  # vectors of >= 16 values; smaller ones stay float32
    owners = {n: weight for n, weight in layer_biases(rewritten, set(names)).items() if n in side}
    norms = {name for n in rewritten.graph.node if n.op_type == "BatchNormalization" for name in n.input[1:3]}
    assert set(owners) - norms and set(owners) & norms  # conv biases and BatchNormalization scale/shift
    low, high = names[: len(names) // 2], names[len(names) // 2 :]
    bits = {**dict.fromkeys(low, SIDE_INT8_WIDTH), **dict.fromkeys(high, 8)}
    scheme = QuantScheme(rounding="nearest", scale_codes=True)
    int8 = Quantizer(model, replace(scheme, int8_biases=True)).apply(bits)
    seen = ort_weights(int8, list(owners))
    as_int8 = [n for n in owners if owners[n] in low]
    assert as_int8 and len(as_int8) < len(owners)
    for name in owners:
        if name in as_int8:  # textbook: symmetric, one full-range scale per vector
            scale = np.float32(np.abs(values[name]).max() / 127)
            expected = np.clip(np.round(values[name] / scale), -128, 127) * scale
            np.testing.assert_allclose(seen[name], expected, rtol=1e-6, atol=1e-9, err_msg=name)
        else:  # an 8-bit layer's vectors stay float16
            np.testing.assert_array_equal(seen[name], values[name].astype(np.float16).astype(np.float32))
    half = Quantizer(model, scheme).apply(bits)
    assert param_bytes(half) - param_bytes(int8) == sum(values[n].size for n in as_int8) - 4 * len(as_int8)
    thawed = thaw(int8)
    assert thawed.scheme.int8_biases and thawed.bits == bits and set(as_int8) == set(thawed.grids) - set(names)
    assert not thaw(half).scheme.int8_biases


def test_batchnorm_vectors_are_stored_as_scale_and_shift(small_models: dict) -> None:
    from svtprune.quantization import batchnorm_as_scale_and_shift

    model = small_models["sdt"]
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    norms = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert norms
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    fills = batchnorm_as_scale_and_shift(rewritten)
    old = list(rewritten.graph.node)
    del rewritten.graph.node[:]
    rewritten.graph.node.extend(fills + old)
    assert len(fills) == 2 * len(norms)
    channels = sum(originals[n.input[1]].size for n in norms)
    shapes = {f.input[0] for f in fills}  # one int64 channel count per distinct width
    assert param_bytes(model) - param_bytes(rewritten) == 8 * channels - 8 * len(shapes)
    # oracle: each node's output against the textbook formula with the *original* vectors, on the
    # rewritten model's own input to it (upstream spikes may flip on float32 rounding; this cannot)
    probe = onnx.ModelProto()
    probe.CopyFrom(rewritten)
    tapped = [name for n in norms for name in (n.input[0], n.output[0])]
    for name in tapped:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = make_session(probe)
    x = np.random.default_rng(3).standard_normal((8, 1, 28, 28)).astype(np.float32)
    values = dict(zip(tapped, session.run(tapped, {session.get_inputs()[0].name: x}), strict=True))
    for node in norms:
        gamma, beta, mean, var = (originals[name] for name in node.input[1:5])
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        shape = (1, -1) + (1,) * (values[node.input[0]].ndim - 2)
        expected = (values[node.input[0]] - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
        expected = expected * gamma.reshape(shape) + beta.reshape(shape)
        np.testing.assert_allclose(values[node.output[0]], expected, rtol=1e-5, atol=1e-5, err_msg=node.name)
    # a rewritten node (zeros and ones generated) is left alone by a second pass
    assert batchnorm_as_scale_and_shift(rewritten) == []


@pytest.mark.parametrize("symmetric", [True, False])
def test_thaw_gives_back_float_weights_and_bit_widths(small_models: dict, symmetric: bool) -> None:
    from svtprune.quantization import thaw

    model = small_models["spikformer"]
    quantizer = Quantizer(model, QuantScheme(symmetric=symmetric, rounding="nearest"))
    names = [layer.name for layer in quantizer.layers]
    bits = {name: (8, 4, 2)[i % 3] for i, name in enumerate(names)}
    quantized = quantizer.apply(bits)
    thawed = thaw(quantized)
    assert thawed.bits == bits and thawed.scheme.symmetric == symmetric and thawed.scheme.half_side
    assert not [n for n in thawed.model.graph.node if n.op_type in ("DequantizeLinear", "Cast")][:1] or all(
        n.input[0] not in {t.name for t in thawed.model.graph.initializer}
        for n in thawed.model.graph.node if n.op_type in ("DequantizeLinear", "Cast")
    )  # fmt: skip
    floats = {t.name: numpy_helper.to_array(t) for t in thawed.model.graph.initializer}
    seen = ort_weights(quantized, names)
    for name in names:
        assert floats[name].dtype == np.float32
        np.testing.assert_array_equal(floats[name], seen[name])  # what ORT computed from the stored integers
    x = np.random.default_rng(2).standard_normal((4, 1, 28, 28)).astype(np.float32)
    # same weights; ORT may fuse DequantizeLinear into its kernels, so a spike can flip: compare decisions
    assert (logits_of(make_session(thawed.model), x).argmax(1) == logits_of(make_session(quantized), x).argmax(1)).all()
    assert thaw(model) is None


def test_block_scales_cover_blocks_of_inputs() -> None:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((6, 10, 3)).astype(np.float32)  # Conv1d weight, 10 inputs: blocks 4, 4, 2
    from svtprune.quantization import Layer, quantize_weight

    layer = Layer("w", weight.shape, 0, 1)
    q = quantize_weight(weight, layer, 4, QuantScheme(block_size=4, rounding="nearest", half_side=False))
    assert q.scale.shape == (6, 3, 3)
    restored = dequantize(q)
    for block, columns in enumerate((slice(0, 4), slice(4, 8), slice(8, 10))):
        part = weight[:, columns, :]
        scale = np.abs(part).max(axis=1) / 7
        np.testing.assert_allclose(
            restored[:, columns, :], np.clip(np.round(part / scale[:, None]), -8, 7) * scale[:, None]
        )
        np.testing.assert_allclose(q.scale[:, block, :], scale, rtol=1e-6)


@pytest.mark.parametrize("bits", [4, 2])
def test_mse_clipping_never_loses_to_full_range(small_models: dict, bits: int) -> None:
    model = small_models["spikformer"]
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nearest = Quantizer(model, QuantScheme(rounding="nearest"))
    mse = Quantizer(model, QuantScheme(rounding="mse"))
    improved = 0
    for layer in nearest.layers:
        w = np.moveaxis(originals[layer.name], layer.out_axis, 0).reshape(layer.shape[layer.out_axis], -1)
        errors = []
        for quantizer in (nearest, mse):
            restored = dequantize(quantizer.quantized(layer.name, bits))
            errors.append(((np.moveaxis(restored, layer.out_axis, 0).reshape(w.shape) - w) ** 2).sum(axis=1))
        assert np.all(errors[1] <= errors[0] * (1 + 1e-6))
        improved += int(np.any(errors[1] < errors[0] * 0.99))
        levels = np.unique(dequantize(mse.quantized(layer.name, bits)).round(7)).size
        assert levels <= 2**bits * layer.shape[layer.out_axis]
    assert improved > 0


@pytest.mark.parametrize("bits", [4, 2])
def test_coded_scales_equal_the_numpy_reference_and_take_one_byte(small_models: dict, bits: int) -> None:
    model = small_models["spikformer"]
    coded = Quantizer(model, QuantScheme(rounding="nearest", scale_codes=True))
    names = [layer.name for layer in coded.layers]
    quantized = coded.apply(dict.fromkeys(names, bits))
    seen = ort_weights(quantized, names)
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    qmax = 2 ** (bits - 1) - 1
    for layer in coded.layers:  # textbook: float16 full-range scale, then uint8 codes of a power-of-two step
        moved = np.moveaxis(originals[layer.name], layer.out_axis, 0).reshape(layer.shape[layer.out_axis], -1)
        scale = (np.abs(moved).max(axis=1) / qmax).astype(np.float16).astype(np.float32)
        step = 2.0 ** np.ceil(np.log2(scale.max() / 255))
        scale = (np.clip(np.round(scale / step), 1, 255) * step).astype(np.float32)[:, None]
        expected = np.clip(np.round(moved / scale), -qmax - 1, qmax) * scale
        expected = np.moveaxis(expected.reshape(np.moveaxis(originals[layer.name], layer.out_axis, 0).shape), 0,
                               layer.out_axis)  # fmt: skip
        np.testing.assert_allclose(seen[layer.name], expected, rtol=1e-6, atol=1e-8, err_msg=layer.name)
    half = Quantizer(model, QuantScheme(rounding="nearest")).apply(dict.fromkeys(names, bits))
    channels = sum(layer.shape[layer.out_axis] for layer in coded.layers)
    assert param_bytes(half) - param_bytes(quantized) == 2 * channels - (channels + 4 * len(names))


def test_file_bytes_follow_the_bit_width(small_models: dict, tmp_path: Path) -> None:
    model = small_models["sdt"]
    quantizer = Quantizer(model, QuantScheme(half_side=False))
    sizes = {}
    for bits in (8, 4, 2):
        quantized = quantizer.apply({layer.name: bits for layer in quantizer.layers})
        stored = {t.name: t for t in quantized.graph.initializer}
        for layer in quantizer.layers:  # packed, as on disk
            assert len(stored[f"{layer.name}_quantized"].raw_data) == (layer.size * bits + 7) // 8, layer.name
        scales = sum(stored[f"{layer.name}_scale"].dims[0] for layer in quantizer.layers)
        expected = param_bytes(model) - sum(4 * layer.size - (layer.size * bits + 7) // 8 for layer in quantizer.layers)
        assert param_bytes(quantized) == expected + 4 * scales
        onnx.save(quantized, tmp_path / f"q{bits}.onnx")
        sizes[bits] = os.path.getsize(tmp_path / f"q{bits}.onnx")
    # the files differ by the packed weights alone (the fp32 original also carries exporter metadata)
    for bits in (4, 2):
        packed = sum((layer.size * 8 + 7) // 8 - (layer.size * bits + 7) // 8 for layer in quantizer.layers)
        assert abs((sizes[8] - sizes[bits]) - packed) < 50 * len(quantizer.layers)


@pytest.mark.parametrize("name", ["spikformer", "sdt", "qkformer", "vit"])
def test_ort_runs_mixed_precision_models_at_batch_1_and_256(small_models: dict, name: str) -> None:
    model = small_models[name]
    quantizer = Quantizer(model)
    widths = (8, 4, 2, FP32)
    setting = {layer.name: widths[i % 4] for i, layer in enumerate(quantizer.layers)}
    quantized = quantizer.apply(setting)
    onnx.checker.check_model(quantized, full_check=True)
    session = make_session(quantized)
    x = np.random.default_rng(1).standard_normal((256, 1, 28, 28)).astype(np.float32)
    big = logits_of(session, x, batch=256)
    one = np.concatenate([logits_of(session, x[i : i + 1], batch=1) for i in range(4)])
    assert big.shape[0] == 256 and np.isfinite(big).all()
    np.testing.assert_allclose(one, big[:4], rtol=1e-4, atol=1e-4)


def test_drift_is_zero_for_the_same_model_and_grows_with_fewer_bits(small_models: dict) -> None:
    model = small_models["spikformer"]
    x = np.random.default_rng(2).standard_normal((16, 1, 28, 28)).astype(np.float32)
    probe = DriftProbe(model, x)
    quantizer = Quantizer(model)
    assert probe.drift(model) == 0.0
    everything = [layer.name for layer in quantizer.layers]
    drifts = [probe.drift(quantizer.apply(dict.fromkeys(everything, b))) for b in (8, 4, 2)]
    assert 0 < drifts[0] < drifts[1] < drifts[2]
    # the readout counts: quantizing only the classifier moves no spiking membrane but does move the proxy
    head = quantizer.layers[-1].name
    assert probe.drift(quantizer.apply({head: 2})) > 0


def test_drift_in_batches_equals_the_formula_on_all_images_at_once(small_models: dict) -> None:
    """The probe runs a few images at a time; numpy on every membrane of all images in one run is the oracle."""
    from svtprune.runtime import make_session, predict
    from svtprune.search.drift import DRIFT_BATCH
    from svtprune.spiking.neurons import with_taps

    model = small_models["spikformer"]
    images = 2 * DRIFT_BATCH + 1  # a short last batch
    x = np.random.default_rng(3).standard_normal((images, 1, 28, 28)).astype(np.float32)
    probe = DriftProbe(model, x)
    candidate = Quantizer(model).apply({layer.name: 4 for layer in Quantizer(model).layers})

    def membranes(m) -> dict[str, np.ndarray]:  # noqa: ANN001
        return predict(make_session(with_taps(m, probe.neurons)), x, batch=len(x), outputs=probe.names)

    before, after = membranes(model), membranes(candidate)
    expected = np.mean([
        np.sqrt(
            sum(np.sum((after[m].astype(np.float64) - before[m]) ** 2) for m in group)
            / sum(np.sum(before[m].astype(np.float64) ** 2) for m in group)
        )
        for group in probe.groups
    ])  # fmt: skip
    assert probe.drift(candidate) == pytest.approx(expected, rel=1e-6)


class StubQuantExecutor(QuantExecutor):
    """Each (layer, bits) costs known accuracy points; the proxy is exactly that cost."""

    def __init__(self, quantizer: Quantizer, costs: dict[str, float]) -> None:
        super().__init__(quantizer, None, None, None)  # type: ignore[arg-type]
        self.costs = costs

    def loss(self, setting: dict[str, int]) -> float:
        return sum(self.costs[n] * {8: 0.1, 4: 1.0, 2: 4.0, FP32: 0.0}[b] for n, b in setting.items())

    def drift(self, setting: dict[str, int]) -> float:
        self.drifts[tuple(sorted(setting.items()))] = None
        return self.loss(setting)

    def measure(self, setting: dict[str, int], label: str, drift: float | None = None) -> Measurement:
        loss, size = self.loss(setting), self.bytes_of(setting)
        record = Measurement(label, 90.0 - loss, size, 0.0, bits=dict(setting), drift=drift)
        self.records.append(record)
        return record


@pytest.fixture(scope="module")
def quantizer(small_models: dict) -> Quantizer:
    return Quantizer(small_models["spikformer"])


def costs_for(quantizer: Quantizer) -> dict[str, float]:
    return {layer.name: (2.0 if i % 3 == 0 else 0.02) for i, layer in enumerate(quantizer.layers)}


@pytest.mark.parametrize("search", [greedy, beam])
def test_searches_honour_the_budget_and_the_gate_skips_candidates(quantizer: Quantizer, search) -> None:  # noqa: ANN001
    costs = costs_for(quantizer)
    executor = StubQuantExecutor(quantizer, costs)
    result = search(executor, QuantBudget(90.0, 3.0), (8, 4, 2), lambda _m: None)
    assert 90.0 - result.best.accuracy <= 3.0
    assert executor.loss(result.bits) <= 3.0
    assert executor.gated > 0  # candidates kept from a full evaluation
    measured = {tuple(sorted(r.bits.items())) for r in executor.records}
    assert len(measured) == len(executor.records)
    # robust layers end at 2 bits, sensitive ones never reach 2 bits (4.0 x 2.0 = 8 points)
    robust = [n for n, c in costs.items() if c < 1]
    assert all(result.bits.get(n) == quantizer.lowest_bits(quantizer.by_name[n]) for n in robust)
    assert all(result.bits.get(n, FP32) != 2 for n, c in costs.items() if c > 1)


@pytest.mark.parametrize("search", [greedy, beam, exhaustive])
@pytest.mark.parametrize("codes", [False, True])
def test_matmul_weights_stay_at_4_bits_unless_scales_are_codes(small_models: dict, search, codes: bool) -> None:  # noqa: ANN001
    quantizer = Quantizer(small_models["spikformer"], QuantScheme(scale_codes=codes))
    executor = StubQuantExecutor(quantizer, dict.fromkeys(quantizer.by_name, 0.01))  # every step is free
    result = search(executor, QuantBudget(90.0, 50.0), (8, 4, 2), lambda _m: None)
    matmuls = [layer.name for layer in quantizer.layers if layer.op_type == "MatMul"]
    # ORT 1.32 fuses a MatMul with initializer scales into MatMulNBits, wrong at 2 bits; coded scales are not fused
    assert matmuls and all(result.bits[name] == (2 if codes else 4) for name in matmuls)
    assert all(result.bits[layer.name] == 2 for layer in quantizer.layers if layer.op_type == "Conv")


def test_gated_greedy_matches_the_ungated_baseline_with_fewer_evaluations(quantizer: Quantizer) -> None:
    costs = costs_for(quantizer)
    gated, ungated = StubQuantExecutor(quantizer, costs), StubQuantExecutor(quantizer, costs)
    budget = QuantBudget(90.0, 3.0)
    fast = greedy(gated, budget, (8, 4, 2), lambda _m: None)
    slow = exhaustive(ungated, budget, (8, 4, 2), lambda _m: None)
    assert fast.best.param_bytes <= slow.best.param_bytes * 1.02
    assert len(gated.records) * 3 < len(ungated.records)


def test_greedy_takes_free_steps_in_growing_batches(quantizer: Quantizer) -> None:
    executor = StubQuantExecutor(quantizer, dict.fromkeys(quantizer.by_name, 0.001))  # every step within budget
    result = greedy(executor, QuantBudget(90.0, 50.0), (8, 4, 2), lambda _m: None)
    steps = sum(len([w for w in (8, 4, 2) if w >= quantizer.lowest_bits(layer)]) for layer in quantizer.layers)
    assert all(result.bits[layer.name] == quantizer.lowest_bits(layer) for layer in quantizer.layers)
    # one step per measurement would be ``steps`` measurements; doubling batches need about log2 of it
    assert len(executor.records) <= math.ceil(math.log2(steps + 1)) + 1 < steps


def test_greedy_refuses_a_costly_step_without_refusing_its_batch(quantizer: Quantizer) -> None:
    costs = dict.fromkeys(quantizer.by_name, 0.001)
    sensitive = quantizer.layers[1].name
    costs[sensitive] = 3.0  # 8 bits costs 0.3 points, 4 bits 3 points: only 8 bits fits a 1-point budget
    executor = StubQuantExecutor(quantizer, costs)
    result = greedy(executor, QuantBudget(90.0, 1.0), (8, 4, 2), lambda _m: None)
    assert result.bits[sensitive] == 8
    others = [layer for layer in quantizer.layers if layer.name != sensitive]
    assert all(result.bits[layer.name] == quantizer.lowest_bits(layer) for layer in others)
    assert executor.loss(result.bits) <= 1.0


def test_real_greedy_on_a_small_model_keeps_agreement(small_models: dict) -> None:
    model = small_models["spikformer"]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    logits = logits_of(make_session(model), x)
    target = logits.argmax(axis=1)
    executor = QuantExecutor(Quantizer(model), Dataset(x, None), target, DriftProbe(model, x[:16]))
    result = greedy(executor, QuantBudget(100.0, 5.0), (8, 4, 2), lambda _m: None)
    chosen = executor.quantizer.apply(result.bits)
    assert top1(predict(make_session(chosen), x)[model.graph.output[0].name], target) >= 95.0
    assert param_bytes(chosen) < param_bytes(model)  # random weights flip spikes easily: only some layers go
    assert len(executor.records) < 3 * len(quantizable_layers(model))
    # the acceptance margin is the paired standard error of the change, per image, from the start
    hits = predict(make_session(chosen), x)[model.graph.output[0].name].argmax(axis=1) == target
    change = hits.astype(float) - 1.0  # the starting model agrees with itself everywhere
    assert result.best.stderr == pytest.approx(100 * change.std() / np.sqrt(len(x)))
    assert 100.0 - result.best.accuracy + result.best.stderr <= 5.0


def test_the_budget_charges_each_candidate_its_measurement_noise() -> None:
    budget = QuantBudget(90.0, 1.0)
    assert budget.accepts(Measurement("a", 89.5, 0, 0.0, bits={}, stderr=0.4))
    assert not budget.accepts(Measurement("b", 89.5, 0, 0.0, bits={}, stderr=0.6))


@pytest.mark.slow
def test_quantize_command_writes_a_smaller_model_and_reports(small_models: dict, tmp_path: Path) -> None:
    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    rng = np.random.default_rng(4)
    save_npz(tmp_path / "val.npz", Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "q.onnx"
    cmd = [
        sys.executable,
        "-m",
        "svtprune.cli",
        "quantize",
        str(tmp_path / "m.onnx"),
        "--data",
        str(tmp_path / "val.npz"),
    ]
    args = ["-o", str(out), "--max-accuracy-drop", "5", "--format", "ort", "--json"]
    run = subprocess.run([*cmd, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["deployment"]["ort_bytes"] == out.with_suffix(".ort").stat().st_size
    assert json.loads(out.with_suffix(".report.json").read_text())["deployment"] == report["deployment"]
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)  # the .ort file runs the quantized model as the .onnx
    np.testing.assert_allclose(logits_of(make_session(out.with_suffix(".ort")), x), logits_of(make_session(out), x),
                               rtol=0, atol=1e-5)  # fmt: skip
    for side in ("original", "compressed"):
        assert report[side]["latency_ms_b1_1thread"] > 0
        assert 0 < report[side]["peak_rss_mb_runtime_only"] <= report[side]["peak_rss_mb"]
    for key in ("memory_saving", "accuracy_drop", "wall_seconds", "evaluations"):
        assert key in report
    assert set(report["profile"]) == {"original", "result"}  # each layer's share of the batch-1 time
    assert all(sum(r["share"] for r in rows) == pytest.approx(1, abs=1e-3) for rows in report["profile"].values())
    assert report["compressed"]["param_bytes"] == param_bytes(onnx.load(out))
    assert report["memory_saving"] > 0.1 and report["accuracy_drop"] <= 5
    stored = report["quantization"]["stored_bytes"]  # every parameter byte has one role; weights as the table says
    assert sum(stored.values()) == report["compressed"]["param_bytes"]
    assert stored["weights"] == sum(row["weight_bytes"] for row in report["quantization"]["layers"])
    assert stored["scales"] > 0 and stored["biases and normalisation"] > 0
    assert "id='stored'" in out.with_suffix(".report.html").read_text()
    assert "title='peak_rss_mb'>Peak memory running batch 1</th>" in out.with_suffix(".report.html").read_text()
    assert out.with_suffix(".report.html").read_text().count("<img") >= 2
    browser = shutil.which("chromium")
    if browser is not None:  # .ci/run installs Debian's chromium: the page must render with its bits table
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'u'}"]
        page = out.with_suffix(".report.html").as_uri()
        dom = subprocess.run([browser, *flags, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
        assert 'id="bits"' in dom  # chromium serialises attributes with double quotes
        assert dom.count("data:image/png;base64,") >= 2
    assert json.loads(out.with_suffix(".plan.json").read_text())["bits"]
    bad = subprocess.run([*cmd, "-o", str(tmp_path / "b.onnx"), "--bits", "8,3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--bits" in bad.stderr


def test_compress_then_quantize_under_one_budget(small_models: dict, tmp_path: Path) -> None:
    import svtprune
    from svtprune.quantization.layout_choice import LAYOUTS
    from svtprune.quantization.load_folding import dequantize_linear_again

    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    rng = np.random.default_rng(5)
    save_npz(tmp_path / "val.npz", Dataset(rng.standard_normal((200, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "small.onnx"
    report = svtprune.compress(
        tmp_path / "m.onnx", tmp_path / "val.npz", out, 25.0, method="uniform", quantize="greedy", bits="4"
    )
    written = onnx.load(out)
    assert report["compressed"]["param_bytes"] == param_bytes(written)
    for side in ("original", "compressed"):
        assert report[side]["latency_ms_b1_1thread"] > 0 and report[side]["peak_rss_mb"] > 0
    assert "deployment" not in report and not out.with_suffix(".ort").exists()  # only when asked for
    assert report["profile"]["result"] and report["profile"]["original"][0]["share"] > 0  # the layers' time
    assert sum(report["quantization"]["stored_bytes"].values()) == param_bytes(written)
    assert report["accuracy_drop"] <= 25.0  # random weights and inputs: agreement is fragile
    q = report["quantization"]
    assert "budget_split" in q and q["full_evaluations"] == len(q["evaluations"])
    quantized = [row for row in q["layers"] if row["bits"] < FP32]
    chosen = {row["layer"]: row["bits"] for row in quantized}
    assert q["layout"]["chosen"] in LAYOUTS  # compress writes the fastest layout measured here
    pareto = report["pareto"]
    assert {p["stage"] for p in pareto["candidates"]} == {"pruning", "quantization"}
    assert pareto["front"] and all(p in pareto["candidates"] for p in pareto["front"])
    assert "Trade-offs explored" in out.with_suffix(".report.html").read_text()
    stored = dequantize_linear_again(written)  # dequantized at load (Cast and Mul), or per call
    weights = [n.output[0] for n in stored.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in chosen]
    scales = [n for n in stored.graph.node if n.op_type == "DequantizeLinear" and n.output[0].endswith("_scale")]
    assert sorted(weights) == sorted(chosen) and len(scales) == len(chosen)  # the commands store scale codes
    # every quantized candidate was scored against the original's baseline, within the whole budget
    measured = [e for e in q["evaluations"] if e["bits"] == chosen]
    assert len(measured) == 1 and report["original"]["accuracy_search"] - measured[0]["accuracy"] <= 20.0 + 1e-9


def test_held_out_miss_steps_back_to_a_setting_the_search_accepted(quantizer: Quantizer) -> None:
    from svtprune.search.held_out import bits_held_out as held_out_bits
    from svtprune.search.records import SearchResult

    executor = StubQuantExecutor(quantizer, costs_for(quantizer))
    first, second = (layer.name for layer in quantizer.layers[:2])
    one = executor.measure({first: 8}, "one layer")
    two = executor.measure({first: 8, second: 8}, "two layers")
    executor.measure({first: 2, second: 2}, "over budget")  # never a step back: the budget refused it
    result = SearchResult(two, bits={first: 8, second: 8})
    verdicts = iter([False, True])
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    final, _accuracy, checks = held_out_bits(
        executor, QuantBudget(90.0, 1.0), result, Dataset(x, None), np.zeros(4, dtype=np.int64),
        lambda _a: next(verdicts), lambda _m: None,
    )  # fmt: skip
    assert [c["label"] for c in checks] == ["two layers", "one layer"]
    assert result.bits == {first: 8} and result.best is one
    assert param_bytes(final) == one.param_bytes


def test_the_gate_judges_the_drift_a_step_adds_not_the_total(quantizer: Quantizer) -> None:
    from svtprune.search.quant_policies import Gate as _Gate

    executor = StubQuantExecutor(quantizer, costs_for(quantizer))
    gate = _Gate(executor, True)
    assert gate.passes(5.0, 0.0)  # nothing failed yet
    gate.failed(0.3133, 0.27)  # a step adding 0.0433 broke the budget
    assert gate.passes(0.3135, 0.3131)  # past that total, but a tiny step: measured (the old rule gated it)
    assert not gate.passes(0.40, 0.35)  # a step at least as large: skipped, and counted
    assert executor.gated == 1
    assert _Gate(executor, False).passes(9.0, 0.0)


def test_a_search_that_chose_no_bits_is_not_measured_on_held_out_again(quantizer: Quantizer) -> None:
    """Nothing quantized: the starting model's known held-out accuracy is the answer; no image is forwarded."""
    from svtprune.costs import Started
    from svtprune.search.budget import Budget
    from svtprune.search.held_out import bits_held_out
    from svtprune.search.records import SearchResult

    executor = QuantExecutor(quantizer, None, None, None)  # type: ignore[arg-type]
    before = Started()
    held = Dataset(np.zeros((4, 1, 28, 28), dtype=np.float32), None)
    model, accuracy, checks = bits_held_out(
        executor, Budget(90.0, 1.0), SearchResult(None), held, np.zeros(4, dtype=np.int64), lambda a: True,
        lambda _m: None, start_accuracy=87.5,
    )  # fmt: skip
    assert accuracy == 87.5 and checks == [{"label": "fp32", "param_bytes": checks[0]["param_bytes"], "accuracy": 87.5}]
    assert before.images_forwarded() == 0 and model.graph.node
