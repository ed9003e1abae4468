"""Piece-by-piece taps against the whole-graph tap, and chunked row choice against the whole-set choice."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from svtprune.graph.analysis import analyze, constants_of
from svtprune.graph.layer_rows import RowPicker, conv_geometry, patches, rows
from svtprune.graph.plan import Plan
from svtprune.graph.surgery import prune
from svtprune.graph.taps import tap
from svtprune.recover.reconstruct import reconstruct
from svtprune.recover.stepwise import StepwiseRunner
from tests.test_reconstruct import two_convs


def spiking_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    weights = constants_of(model)
    return [n for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and n.input[1] in weights]


@pytest.mark.parametrize("name", ["spikformer", "sdt"])
@pytest.mark.parametrize("chunk", [2, 256])
def test_piece_by_piece_values_equal_whole_graph_taps(small_models: dict, name: str, chunk: int) -> None:
    """Every layer's input and output, asked for in graph order, as the full tap computes them on each chunk.

    (Chunks are compared one by one: a time-first layout puts a chunk's rows apart in the whole batch.)"""
    model = small_models[name]
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    layers = spiking_layers(model)
    wanted = list(dict.fromkeys(t for n in layers for t in (n.input[0], n.output[0])))
    runner = StepwiseRunner(model, x, chunk)
    references = [tap(model, wanted, part) for part in runner.chunks]
    for tensor in wanted:
        for value, reference in zip(runner.value(tensor), references, strict=True):
            np.testing.assert_array_equal(value, reference[tensor])
    assert len(runner.chunks) == (3 if chunk == 2 else 1)
    assert len(layers) > 4


@pytest.mark.parametrize("kernel", [1, 3])
def test_one_chunk_picks_the_whole_set_rows(kernel: int) -> None:
    """The rows a single chunk keeps are the seed-0 subset of the whole design matrix, features and targets alike."""
    model = two_convs(kernel)
    node = model.graph.node[-1]
    geometry = conv_geometry(node, constants_of(model)[node.input[1]])
    value = np.random.default_rng(1).standard_normal((4, 8, 6, 6)).astype(np.float32)
    full, target_full = patches(value, *geometry), rows(value, "Conv")
    picker = RowPicker(4, [4], max_rows=50)
    chosen = np.sort(np.random.default_rng(0).choice(len(full), 50, replace=False))
    np.testing.assert_array_equal(picker.features(0, value, "Conv", geometry), full[chosen])
    np.testing.assert_array_equal(picker.rows(0, value, "Conv"), target_full[chosen])
    np.testing.assert_array_equal(RowPicker(4, [4], max_rows=None).features(0, value, "Conv", geometry), full)


def test_chunks_share_the_rows_by_their_images() -> None:
    picker = RowPicker(10, [4, 4, 2], max_rows=100)
    value = np.random.default_rng(2).standard_normal((4, 16, 3)).astype(np.float32)  # 64 rows a chunk of 4
    kept = [len(picker.rows(i, value[: picker.chunk_images[i]], "MatMul")) for i in range(3)]
    assert kept == [40, 40, 20]
    assert len(RowPicker(10, [4, 4, 2], max_rows=1000).rows(0, value, "MatMul")) == 64


def test_chunked_refit_reproduces_an_exact_pruned_model() -> None:
    """Dead removed channels: any correct choice of rows refits exactly, however the images are chunked."""
    from svtprune.recover.reconstruct import refitted_layers
    from tests.oracle import run

    model = two_convs(3)
    analysis = analyze(model)
    kept = [0, 2, 3, 6]
    w2 = next(t for t in analysis.model.graph.initializer if t.name == "w2")
    weights = onnx.numpy_helper.to_array(w2).copy()
    weights[:, [c for c in range(8) if c not in kept]] = 0.0
    w2.CopyFrom(onnx.numpy_helper.from_array(weights, "w2"))
    pruned = prune(analysis, Plan({analysis.groups[0].name: kept}))
    x = np.random.default_rng(3).standard_normal((10, 3, 6, 6)).astype(np.float32)
    consumer = analysis.model.graph.node[-1].name
    fitted = reconstruct(analysis.model, pruned, {consumer: None}, x, ridge=0.0, max_rows=120, chunk=3)
    assert refitted_layers(fitted) == [consumer]
    np.testing.assert_allclose(run(fitted, x)["y"], run(analysis.model, x)["y"], atol=1e-3)
