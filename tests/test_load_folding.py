"""Low-bit weights dequantized at load (Cast and Mul, which ONNX Runtime folds) instead of at every call.

Oracles: the weight-only file the rewrite starts from, run by ONNX Runtime node by node (logits
equal bit for bit: the same arithmetic) and run with ORT folding its DequantizeLinear itself
(``session.disable_quant_qdq``, a session option a file cannot carry: equal bit for bit, the same
kernels on the same constant weights); ORT's own optimised graph (no Cast of the stored integers
is left: it folded them at load); and ``thaw`` of the weight-only file (the same bits and grids).
With ORT's default options the weight-only file runs other kernels (a Conv cannot prepack a weight
computed per call), so there the logits agree only to float rounding, not bit for bit.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from svtprune.graph.io import param_bytes
from svtprune.quantization import Quantizer, QuantScheme, thaw
from svtprune.quantization.accounting import stored_bytes
from svtprune.quantization.load_folding import dequantize_at_load, dequantize_linear_again
from svtprune.runtime import logits_of, make_session

SCHEMES = {
    "int8, float16 scales": (QuantScheme(rounding="nearest"), {8}),
    "int4 and int2, float32 scales": (QuantScheme(rounding="nearest", half_side=False), {4, 2}),
    "asymmetric uint8 and uint4": (QuantScheme(rounding="nearest", symmetric=False), {8, 4}),
    "scale codes, int8 biases": (QuantScheme(rounding="nearest", scale_codes=True, int8_biases=True), {8, 2}),
}


def quantized(model: onnx.ModelProto, scheme: QuantScheme, widths: set[int]) -> onnx.ModelProto:
    quantizer = Quantizer(model, scheme)
    order = sorted(widths)
    return quantizer.apply({layer.name: order[i % len(order)] for i, layer in enumerate(quantizer.layers)})


def weight_only_folded_by_ort(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, 1, 28, 28)).astype(np.float32)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_logits_are_the_weight_only_files_bit_for_bit(small_models: dict, scheme: str) -> None:
    weight_only = quantized(small_models["spikformer"], *SCHEMES[scheme])
    folding = dequantize_at_load(weight_only)
    dequantize = [n for n in weight_only.graph.node if n.op_type == "DequantizeLinear"]
    assert len(folding.rewritten) == len(dequantize) and not folding.kept
    assert "DequantizeLinear" not in {n.op_type for n in folding.model.graph.node}
    x = images()
    as_written = [make_session(m, optimize=False) for m in (folding.model, weight_only)]
    assert np.array_equal(*(logits_of(session, x) for session in as_written))
    folded_at_load = logits_of(make_session(folding.model), x)
    assert np.array_equal(folded_at_load, logits_of(weight_only_folded_by_ort(weight_only), x))
    assert param_bytes(folding.model) == param_bytes(weight_only)  # the same integers, reshaped scales
    assert stored_bytes(folding.model) == stored_bytes(weight_only)


def test_onnx_runtime_folds_the_casts_when_it_loads_the_file(small_models: dict, tmp_path) -> None:  # noqa: ANN001
    weight_only = quantized(small_models["spikformer"], *SCHEMES["int4 and int2, float32 scales"])
    folded = dequantize_at_load(weight_only).model
    stored = {t.name for t in folded.graph.initializer if t.data_type != onnx.TensorProto.FLOAT}
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(folded.SerializeToString(), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(tmp_path / "optimized.onnx")
    casts_of_stored = [n for n in optimized.graph.node if n.op_type == "Cast" and n.input[0] in stored]
    assert stored and not casts_of_stored


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_the_grids_read_back_are_the_weight_only_files(small_models: dict, scheme: str) -> None:
    weight_only = quantized(small_models["spikformer"], *SCHEMES[scheme])
    folded = dequantize_at_load(weight_only).model
    expected, found = thaw(weight_only), thaw(folded)
    assert found.bits == expected.bits and found.scheme == expected.scheme
    assert sorted(found.grids) == sorted(expected.grids)
    for name, grid in expected.grids.items():
        other = found.grids[name]
        assert np.array_equal(other.values, grid.values) and np.array_equal(other.scale, grid.scale)
        assert other.axis == grid.axis or grid.scale.size == 1
        assert (other.zero_point is None) == (grid.zero_point is None)
    again = dequantize_linear_again(folded)
    assert [n.op_type for n in again.graph.node].count("DequantizeLinear") == len(found.grids) + sum(
        n.op_type == "DequantizeLinear" for n in weight_only.graph.node if n.output[0] not in found.grids
    )


def test_block_quantized_weights_stay_dequantized_per_call(small_models: dict) -> None:
    weight_only = quantized(small_models["spikformer"], QuantScheme(rounding="nearest", block_size=16), {4})
    folding = dequantize_at_load(weight_only)
    blocked = [n.output[0] for n in weight_only.graph.node if n.op_type == "DequantizeLinear"
               and any(a.name == "block_size" and a.i for a in n.attribute)]  # fmt: skip
    assert blocked and all("block" in folding.kept[name] for name in blocked)
    x = images()
    as_written = [make_session(m, optimize=False) for m in (folding.model, weight_only)]
    assert np.array_equal(*(logits_of(session, x) for session in as_written))
