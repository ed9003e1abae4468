"""GPTQ error-feedback rounding (``QuantScheme.rounding="gptq"``).

Oracles: a plain O(n²) numpy version of the GPTQ column loop written here (the explicit
inverse-Hessian update of the OBS derivation, no Cholesky factor), the output error measured
directly on correlated inputs, and ONNX Runtime's own DequantizeLinear output and layer outputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from svtprune.data import Dataset, save_npz
from svtprune.errors import UserError
from svtprune.graph.io import param_bytes
from svtprune.quantization import Layer, Quantizer, QuantScheme, dequantize, quantize_weight
from svtprune.runtime import logits_of, make_session


def correlated_inputs(rows: int, features: int, seed: int) -> np.ndarray:
    """Inputs whose features are strongly correlated (a random mix of a few latent factors plus noise)."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((rows, max(features // 4, 2)))
    mix = rng.standard_normal((latent.shape[1], features))
    return (latent @ mix + 0.1 * rng.standard_normal((rows, features))).astype(np.float32)


def output_error(x: np.ndarray, w: np.ndarray, restored: np.ndarray) -> float:
    return float(np.linalg.norm(x.astype(np.float64) @ (w - restored).T.astype(np.float64)))


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gptq_lowers_the_output_error_of_mse_rounding(bits: int, symmetric: bool) -> None:
    x = correlated_inputs(2000, 48, seed=bits)
    w = np.random.default_rng(10 + bits).standard_normal((24, 48)).astype(np.float32)
    layer = Layer("w", w.shape, 0, 1)  # Gemm-style (out, in)
    hessian = x.astype(np.float64).T @ x.astype(np.float64)
    mse = quantize_weight(w, layer, bits, QuantScheme(symmetric=symmetric, rounding="mse"))
    gptq = quantize_weight(w, layer, bits, QuantScheme(symmetric=symmetric, rounding="gptq"), hessian)
    before, after = output_error(x, w, dequantize(mse)), output_error(x, w, dequantize(gptq))
    assert after < 0.8 * before, (before, after)
    # same grid: only the integers move
    np.testing.assert_array_equal(gptq.scale, mse.scale)
    if not symmetric:
        np.testing.assert_array_equal(gptq.zero_point, mse.zero_point)
    assert (gptq.values != mse.values).any()


def reference_gptq(w: np.ndarray, scale: np.ndarray, zero: np.ndarray, low: int, high: int, h: np.ndarray):
    """GPTQ's loop from the OBS update: round column j, push its error onto later columns, drop j from H⁻¹."""
    h = h.astype(np.float64) + 0.01 * np.mean(np.diag(h)) * np.eye(len(h))
    inverse = np.linalg.inv(h)
    w = w.astype(np.float64).copy()
    q = np.zeros_like(w)
    for j in range(w.shape[1]):
        q[:, j] = np.clip(np.round(w[:, j] / scale[:, j]) + zero[:, j], low, high)
        error = (w[:, j] - (q[:, j] - zero[:, j]) * scale[:, j]) / inverse[j, j]
        for k in range(j + 1, w.shape[1]):
            w[:, k] -= error * inverse[j, k]
        inverse = inverse - np.outer(inverse[:, j], inverse[j, :]) / inverse[j, j]  # column j is now fixed
    return q


@pytest.mark.parametrize(("symmetric", "block_size"), [(True, 0), (False, 0), (True, 2)])
@pytest.mark.parametrize("bits", [4, 2])
def test_gptq_integers_equal_a_plain_numpy_reference(symmetric: bool, block_size: int, bits: int) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 5, 3)).astype(np.float32)  # Conv1d (out, in, kernel): features (in, kernel)
    layer = Layer("w", w.shape, 0, 1)
    x = correlated_inputs(500, 15, seed=4)
    hessian = x.astype(np.float64).T @ x.astype(np.float64)
    scheme = QuantScheme(symmetric=symmetric, block_size=block_size, rounding="gptq")
    got = quantize_weight(w, layer, bits, scheme, hessian)
    grid = quantize_weight(w, layer, bits, QuantScheme(symmetric=symmetric, block_size=block_size, rounding="mse"))
    scale = grid.scale
    zero = grid.zero_point if grid.zero_point is not None else np.zeros_like(scale)
    if block_size:  # (out, blocks, kernel) -> one value per weight entry
        scale = np.repeat(scale, block_size, axis=1)[:, : w.shape[1]]
        zero = np.repeat(zero, block_size, axis=1)[:, : w.shape[1]]
    else:
        scale, zero = np.broadcast_to(scale[:, None, None], w.shape), np.broadcast_to(zero[:, None, None], w.shape)
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    expected = reference_gptq(w.reshape(6, -1), scale.reshape(6, -1), zero.reshape(6, -1), low, high, hessian)
    np.testing.assert_array_equal(got.values.reshape(6, -1), expected)
    assert (got.values != grid.values).any()


def test_gptq_without_calibration_images_is_a_user_error(small_models: dict) -> None:
    with pytest.raises(UserError, match="calibration"):
        Quantizer(small_models["spikformer"], QuantScheme(rounding="gptq"))
    with pytest.raises(UserError, match="gptq"):
        QuantScheme(rounding="obq")


@pytest.fixture(scope="module")
def gptq_quantizer(small_models: dict) -> Quantizer:
    calib = np.random.default_rng(11).standard_normal((40, 1, 28, 28)).astype(np.float32)
    return Quantizer(small_models["spikformer"], QuantScheme(rounding="gptq"), calib=calib)


def test_gptq_model_runs_in_ort_and_stores_what_it_dequantizes(gptq_quantizer: Quantizer) -> None:
    quantizer = gptq_quantizer
    names = [layer.name for layer in quantizer.layers]
    assert all(quantizer.hessians()[n] is not None for n in names)  # stride-1 convs and 2-D MatMuls
    bits = {name: (8, 4, 2)[i % 3] for i, name in enumerate(names)}
    quantized = quantizer.apply(bits)
    onnx.checker.check_model(quantized, full_check=True)
    probe = onnx.ModelProto()
    probe.CopyFrom(quantized)
    for name in names:
        probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = make_session(probe)
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    seen = dict(zip(names, session.run(names, {session.get_inputs()[0].name: x[:1]}), strict=True))
    stored = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    mse = Quantizer(quantizer.model, QuantScheme(rounding="mse"))
    moved = 0
    for name in names:
        q = stored[f"{name}_quantized"].astype(np.int8)
        low, high = (-(2 ** (bits[name] - 1)), 2 ** (bits[name] - 1) - 1)
        assert q.min() >= low and q.max() <= high
        scale = stored[f"{name}_scale_float16"].astype(np.float32)
        layer = quantizer.by_name[name]
        shape = [1] * q.ndim
        shape[layer.out_axis] = -1
        np.testing.assert_allclose(seen[name], scale.reshape(shape) * q, rtol=1e-6, atol=0, err_msg=name)
        np.testing.assert_array_equal(dequantize(quantizer.quantized(name, bits[name])), seen[name])
        moved += int((q != mse.quantized(name, bits[name]).values).any())
    assert moved > len(names) // 2  # error feedback changed the integers, not just the bookkeeping
    logits = logits_of(make_session(quantized), x)
    assert logits.shape[0] == 8 and np.isfinite(logits).all()


def test_hessian_gives_the_real_output_error_of_each_layer(gptq_quantizer: Quantizer) -> None:
    """trace(ΔW H ΔWᵀ) equals ||ΔY||² measured in ONNX Runtime: H's features are in the weight's order."""
    from svtprune.graph.taps import tap as _tap

    model = gptq_quantizer.model  # biases stay float32 here: their float16 rounding would add its own error
    quantizer = Quantizer(model, QuantScheme(rounding="gptq", half_side=False), calib=gptq_quantizer.calib)
    users = {n.input[1]: n for n in model.graph.node if len(n.input) > 1 and n.input[1] in quantizer.by_name}
    reference = _tap(model, [n.output[0] for n in users.values()], quantizer.calib)
    better = 0
    for layer in quantizer.layers:
        node = users[layer.name]
        errors = {}
        for rounding, source in (("gptq", quantizer), ("mse", Quantizer(model, QuantScheme(half_side=False)))):
            changed = source.apply({layer.name: 2})
            # the weight as an output too: ORT 1.32's extended optimizations fuse DequantizeLinear into a
            # 2-bit MatMul and compute something else (checked: off by ~8 on the head's logits)
            y = _tap(changed, [node.output[0], layer.name], quantizer.calib)[node.output[0]]
            errors[rounding] = float(((y.astype(np.float64) - reference[node.output[0]]) ** 2).sum())
            w = quantizer._weights[layer.name]
            delta = np.moveaxis(dequantize(source.quantized(layer.name, 2)) - w, layer.out_axis, 0)
            delta = delta.reshape(w.shape[layer.out_axis], -1).astype(np.float64)
            predicted = float(np.trace(delta @ quantizer.hessians()[layer.name] @ delta.T))
            assert predicted == pytest.approx(errors[rounding], rel=2e-3, abs=1e-6), (layer.name, rounding)
        better += int(errors["gptq"] < errors["mse"])
    assert better >= len(quantizer.layers) - 1


def test_quantize_command_takes_gptq_and_refuses_an_unknown_rounding(small_models: dict, tmp_path: Path) -> None:
    import svtprune

    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    rng = np.random.default_rng(4)
    save_npz(tmp_path / "val.npz", Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    out = tmp_path / "q.onnx"
    report = svtprune.quantize(tmp_path / "m.onnx", tmp_path / "val.npz", out, 5.0, rounding="gptq")
    q = report["quantization"]
    assert q["scheme"]["rounding"] == "gptq" and q["gptq_without_hessian"] == []
    assert report["compressed"]["param_bytes"] == param_bytes(onnx.load(out)) < param_bytes(small_models["spikformer"])
    model, data = str(tmp_path / "m.onnx"), str(tmp_path / "val.npz")
    cmd = [sys.executable, "-m", "svtprune.cli", "quantize", model, "--data", data]
    bad = subprocess.run([*cmd, "-o", str(tmp_path / "b.onnx"), "--rounding", "obq"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "gptq" in bad.stderr
    with pytest.raises(UserError, match="rounding"):  # before the pruning search, not after it
        svtprune.compress(
            tmp_path / "m.onnx", tmp_path / "val.npz", tmp_path / "c.onnx", quantize="greedy", rounding="obq"
        )


def test_a_convs_gram_built_a_few_samples_at_a_time_equals_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded memory changes nothing: the summed pieces equal XᵀX of the whole im2col matrix (numpy)."""
    from svtprune.quantization import gptq

    rng = np.random.default_rng(5)
    value = (rng.random((6, 3, 5, 5)) < 0.3).astype(np.float32)  # spikes, 6 samples
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    padded = np.pad(value, [(0, 0), (0, 0), (1, 1), (1, 1)])
    rows = np.array([padded[n, :, i : i + 3, j : j + 3].ravel() for n in range(6) for i in range(5) for j in range(5)])
    monkeypatch.setattr(gptq, "GRAM_BYTES", 8 * 3 * 25 * 9 * 2)  # two samples per piece
    np.testing.assert_allclose(gptq.input_gram(node, weight, value), rows.T.astype(np.float64) @ rows, rtol=1e-12)
