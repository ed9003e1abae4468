"""Least-squares recovery against numpy's lstsq, with torch's unfold as the independent im2col."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from svtprune.graph.analysis import analyze
from svtprune.graph.plan import Plan
from svtprune.graph.surgery import prune
from svtprune.recover.reconstruct import least_squares, reconstruct
from tests.model_builders import parse_with_weights
from tests.oracle import run


def test_least_squares_equals_numpy_lstsq() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((500, 6)), rng.standard_normal((500, 3))
    w, b = least_squares(x, y, ridge=0.0, bias=True)
    reference = np.linalg.lstsq(np.hstack([x, np.ones((500, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(w, reference[:-1].T, atol=1e-9)
    np.testing.assert_allclose(b, reference[-1], atol=1e-9)


def test_a_design_matrix_in_parts_gives_the_whole_ones_fit() -> None:
    """Oracle: numpy's lstsq on the whole matrix; the parts (uneven, as chunks of images are) never concatenated."""
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((700, 9)), rng.standard_normal((700, 4))
    parts = [x[:256], x[256:512], x[512:]]
    w, b = least_squares(parts, y, ridge=0.0, bias=True)
    reference = np.linalg.lstsq(np.hstack([x, np.ones((700, 1))]), y, rcond=None)[0]
    np.testing.assert_allclose(w, reference[:-1].T, atol=1e-9)
    np.testing.assert_allclose(b, reference[-1], atol=1e-9)
    with pytest.raises(ValueError, match="rows"):
        least_squares(parts[:2], y, ridge=0.0, bias=True)


def test_float32_products_match_float64_on_spike_inputs() -> None:
    """Spike features (0/1): float32 sums of up to 2^24 rows are exact, so the fit is the float64 one."""
    rng = np.random.default_rng(1)
    x = (rng.random((20000, 40)) < 0.2).astype(np.float32)
    y = x @ rng.standard_normal((40, 5)) + 0.1 * rng.standard_normal((20000, 5))
    w64, b64 = least_squares(x, y, ridge=1e-3, bias=True)
    w32, b32 = least_squares(x, y, ridge=1e-3, bias=True, dtype=np.float32)
    np.testing.assert_allclose(w32, w64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b32, b64, rtol=1e-4, atol=1e-5)


def two_convs(kernel: int) -> onnx.ModelProto:
    pad = kernel // 2
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 6, 6] x) => (float[N, 5, 6, 6] y) {{
        a = Conv(x, w1, b1)
        r = Relu(a)
        y = Conv <pads = [{pad}, {pad}, {pad}, {pad}]> (r, w2, b2)
    }}"""
    rng = np.random.default_rng(1)
    inits = {
        "w1": rng.standard_normal((8, 3, 1, 1)),
        "b1": rng.standard_normal(8),
        "w2": rng.standard_normal((5, 8, kernel, kernel)),
        "b2": rng.standard_normal(5),
    }
    model = parse_with_weights(text, inits)
    return model


@pytest.mark.parametrize("kernel", [1, 3])
def test_refit_matches_lstsq_on_the_pruned_inputs(kernel: int) -> None:
    model = two_convs(kernel)
    analysis = analyze(model)
    kept = [0, 2, 3, 6]
    pruned = prune(analysis, Plan({analysis.groups[0].name: kept}))
    x = np.random.default_rng(2).standard_normal((16, 3, 6, 6)).astype(np.float32)
    consumer = analysis.model.graph.node[-1].name
    fitted = reconstruct(analysis.model, pruned, {consumer: None}, x, ridge=0.0)
    # the reference: pruned-model inputs and original outputs computed with torch, solved with numpy
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    hidden = torch.relu(
        torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w["w1"]), torch.from_numpy(w["b1"]))
    )
    target = torch.nn.functional.conv2d(
        hidden, torch.from_numpy(w["w2"]), torch.from_numpy(w["b2"]), padding=kernel // 2
    )
    patches = torch.nn.functional.unfold(hidden[:, kept], kernel, padding=kernel // 2)  # [N, C*k*k, L]
    design = patches.permute(0, 2, 1).reshape(-1, len(kept) * kernel * kernel).double().numpy()
    rows = target.permute(0, 2, 3, 1).reshape(-1, 5).double().numpy()
    solution = np.linalg.lstsq(np.hstack([design, np.ones((len(design), 1))]), rows, rcond=None)[0]
    refitted = {t.name: numpy_helper.to_array(t) for t in fitted.graph.initializer}
    new_w = next(v for k, v in refitted.items() if k.endswith("refit_w"))
    new_b = next(v for k, v in refitted.items() if k.endswith("refit_b"))
    np.testing.assert_allclose(new_w.reshape(5, -1), solution[:-1].T, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(new_b, solution[-1], rtol=1e-3, atol=1e-3)
    # and the re-fitted model is closer to the original than plain surgery
    original = run(analysis.model, x)["y"]
    assert np.abs(run(fitted, x)["y"] - original).mean() < np.abs(run(pruned, x)["y"] - original).mean()


def test_subsampled_fit_recovers_exact_weights_when_pruned_inputs_were_dead() -> None:
    """Removed channels that fed the consumer with zero weights: the pruned model can be exact, so a fit
    on any subset of rows must reproduce the original outputs on every row (it would not if features
    and targets were drawn from different rows). Outputs, not weights: a ReLU channel may be dead."""
    model = two_convs(3)
    analysis = analyze(model)
    kept = [0, 2, 3, 6]
    dead = [c for c in range(8) if c not in kept]
    w2 = next(t for t in analysis.model.graph.initializer if t.name == "w2")
    weights = numpy_helper.to_array(w2).copy()
    weights[:, dead] = 0.0
    w2.CopyFrom(numpy_helper.from_array(weights, "w2"))
    pruned = prune(analysis, Plan({analysis.groups[0].name: kept}))
    x = np.random.default_rng(3).standard_normal((16, 3, 6, 6)).astype(np.float32)
    consumer = analysis.model.graph.node[-1].name
    fitted = reconstruct(analysis.model, pruned, {consumer: None}, x, ridge=0.0, max_rows=100)  # of 576 rows
    original = run(analysis.model, x)["y"]
    np.testing.assert_allclose(run(fitted, x)["y"], original, atol=1e-3)
    assert np.abs(original).mean() > 0.1


def test_cached_fit_is_reused_only_under_its_key() -> None:
    model = two_convs(1)
    analysis = analyze(model)
    pruned = prune(analysis, Plan({analysis.groups[0].name: [0, 2, 3, 6]}))
    consumer = analysis.model.graph.node[-1].name
    rng = np.random.default_rng(4)
    x1, x2 = (rng.standard_normal((8, 3, 6, 6)).astype(np.float32) for _ in range(2))

    def weight(m: onnx.ModelProto) -> np.ndarray:
        return next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("refit_w"))

    cache: dict = {}
    first = weight(reconstruct(analysis.model, pruned, {consumer: None}, x1, cache=cache, keys={consumer: "a"}))
    fresh_on_x2 = weight(reconstruct(analysis.model, pruned, {consumer: None}, x2))
    assert not np.allclose(first, fresh_on_x2)
    # same key: the fit made on x1 comes back, whatever the images; another key: fitted anew on x2
    same_key = weight(reconstruct(analysis.model, pruned, {consumer: None}, x2, cache=cache, keys={consumer: "a"}))
    other_key = weight(reconstruct(analysis.model, pruned, {consumer: None}, x2, cache=cache, keys={consumer: "b"}))
    np.testing.assert_array_equal(same_key, first)
    np.testing.assert_array_equal(other_key, fresh_on_x2)


def test_targets_kept_on_disk_give_the_same_fit_without_tapping_the_original_again() -> None:
    """A memory cap of 0 sends the original's outputs to disk: the second re-fit reads them back (no pass of the
    original), and both fits equal the fit with no cache at all, byte for byte."""
    from svtprune.costs import Started
    from svtprune.recover.targets import TargetStore

    model = two_convs(3)
    analysis = analyze(model)
    consumer = analysis.model.graph.node[-1].name
    x = np.random.default_rng(5).standard_normal((8, 3, 6, 6)).astype(np.float32)

    def weight(m: onnx.ModelProto) -> np.ndarray:
        return next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name.endswith("refit_w"))

    plans = [Plan({analysis.groups[0].name: kept}) for kept in ([0, 2, 3, 6], [1, 2, 5])]
    store = TargetStore(memory_bytes=0)
    for plan in plans:
        pruned = prune(analysis, plan)
        before = Started()
        stored = weight(reconstruct(analysis.model, pruned, {consumer: None}, x, targets=store))
        passes = before.images_forwarded() // len(x)  # the pruned model's pass, plus the original's when tapped
        np.testing.assert_array_equal(stored, weight(reconstruct(analysis.model, pruned, {consumer: None}, x)))
        assert passes == (2 if plan is plans[0] else 1)
    assert store._files and not store._memory  # on disk, as the caps asked


def test_target_store_fills_memory_then_disk_then_keeps_nothing() -> None:
    from svtprune.recover.targets import TargetStore

    a, b, c = (np.full((4, 4), value, dtype=np.float32) for value in (1.0, 2.0, 3.0))  # 64 bytes each
    store = TargetStore(memory_bytes=64, disk_bytes=64)
    for name, value in (("a", a), ("b", b), ("c", c)):
        store.put(name, value)
    assert "a" in store._memory and "b" in store._files and "c" not in store
    np.testing.assert_array_equal(store.get("b"), b)
    assert store.get("c") is None
    folder = store._folder.name
    store.clear()
    assert store.get("a") is None and store.get("b") is None and not os.path.exists(folder)
