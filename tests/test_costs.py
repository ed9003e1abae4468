"""A job's cost in images forwarded: counted where ONNX Runtime runs, checked against what was asked of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from svtprune.costs import FORWARDED, Started
from svtprune.data import Dataset, save_npz
from svtprune.graph.taps import tap
from svtprune.jobs.compress import compress
from svtprune.jobs.evaluate import evaluate_file
from svtprune.runtime import latency_ms, logits_of, make_session


def test_every_image_run_is_counted_once_and_timing_apart(small_models: dict) -> None:
    model = small_models["spikformer"]
    x = np.random.default_rng(0).standard_normal((37, 1, 28, 28)).astype(np.float32)
    started = Started()
    logits_of(make_session(model), x, batch=16)  # 16 + 16 + 5
    assert started.images_forwarded() == 37
    tap(model, [model.graph.node[3].output[0]], x[:9], batch=4)
    assert started.images_forwarded() == 46
    timing_before = FORWARDED.timing
    latency_ms(make_session(model), 2, repeats=3)  # a warm-up call and three timed calls of 2 images
    assert FORWARDED.timing - timing_before == 8 and started.images_forwarded() == 46


def test_eval_counts_the_model_and_the_reference(small_models: dict, tmp_path: Path) -> None:
    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((30, 1, 28, 28)).astype(np.float32)
    save_npz(tmp_path / "labelled.npz", Dataset(x, np.arange(30) % 10))
    save_npz(tmp_path / "unlabelled.npz", Dataset(x, None))
    assert evaluate_file(tmp_path / "m.onnx", tmp_path / "labelled.npz").images_forwarded == 30
    with_reference = evaluate_file(tmp_path / "m.onnx", tmp_path / "unlabelled.npz", reference=tmp_path / "m.onnx")
    assert with_reference.images_forwarded == 60


def test_a_compress_report_states_at_least_what_its_evaluations_forwarded(small_models: dict, tmp_path: Path) -> None:
    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((120, 1, 28, 28)).astype(np.float32)
    save_npz(tmp_path / "val.npz", Dataset(x, None))
    out = tmp_path / "small.onnx"
    report = compress(tmp_path / "m.onnx", tmp_path / "val.npz", out, max_accuracy_drop=30.0, method="uniform")
    phases = report["images_forwarded_by_phase"]
    assert sum(phases.values()) == report["images_forwarded"] > 0  # every forwarded image is in one phase
    assert phases["baseline"] == 120 and phases["held-out"] >= report["data"]["held_out_images"]
    # a record counts the images it was judged on; a full test after its screen reuses the screen's
    assert 0 < phases["search"] <= sum(e["images"] for e in report["evaluations"])
    assert report["images_forwarded_timing"] > 0
    assert f"{report['images_forwarded']:,} images forwarded" in out.with_suffix(".report.html").read_text()


def test_data_past_the_image_cap_costs_the_sample_not_the_file(small_models: dict, tmp_path: Path) -> None:
    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    x = np.random.default_rng(2).standard_normal((240, 1, 28, 28)).astype(np.float32)
    save_npz(tmp_path / "val.npz", Dataset(x, None))
    out = tmp_path / "small.onnx"
    report = compress(tmp_path / "m.onnx", tmp_path / "val.npz", out, 30.0, method="uniform", max_images=120)
    assert report["data"]["images"] == 240 and report["memory_saving"] > 0
    assert report["data"]["search_images"] + report["data"]["held_out_images"] == 120
    assert report["images_forwarded_by_phase"]["baseline"] == 120
    assert "seeded 120 of the data's 240" in out.with_suffix(".report.html").read_text()


def test_the_html_summary_counts_reused_records_apart() -> None:
    from svtprune.report import _evaluation_count

    evaluations = [{"label": "a"}, {"label": "b", "reused": True}, {"label": "c"}]
    assert _evaluation_count({"evaluations": evaluations}) == "2 evaluations (and 1 reused without new images)"
    assert _evaluation_count({"evaluations": evaluations[:1]}) == "1 evaluations"


def test_a_batch_past_the_memory_bound_is_timed_in_runs_that_fit(small_models: dict) -> None:
    """batch 7 on a session bounded at 3 images: runs of 3 (twice) and 1, never more than 3 images at once."""
    from svtprune.runtime import run_times_ms

    session = make_session(small_models["spikformer"])
    session.svtprune_batch = 3
    sizes: list[int] = []
    run = session.run
    session.run = lambda names, feeds: sizes.append(len(next(iter(feeds.values())))) or run(names, feeds)  # type: ignore[method-assign]
    times = run_times_ms(session, 7, repeats=2)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert max(sizes) == 3 and sorted(set(sizes)) == [1, 3]
