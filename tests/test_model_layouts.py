"""Graphs laid out other than ``[N, classes]`` at a free batch (issue 28, items 4 and 7).

A raw spikingjelly output ``[T, N, classes]`` must score as users score it (the mean over T), so
the oracle here is the same graph with that ReduceMean appended; a graph with a fixed batch must
give what the same graph at a free batch gives, on any number of images. The CLI runs in-process
(``svtprune.cli.app.run``) to keep the file fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from svtprune.cli.app import run
from svtprune.data import Dataset, save_npz
from svtprune.recover.stepwise import StepwiseRunner
from svtprune.runtime import latency_ms, logits_of, make_session, predict
from svtprune.runtime_layout import unpadded
from svtprune.spiking.neurons import find_neurons, with_taps
from tests.model_builders import parse_with_weights, tiny_spiking

IMAGES = 45  # odd: a batch-2 graph pads its last chunk


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("layouts")
    models = {
        "raw": tiny_spiking(),
        "mean": tiny_spiking(mean_over_time=True),
        "raw_b3": tiny_spiking(batch=3),
        "mean_b2": tiny_spiking(batch=2, mean_over_time=True),
        "mean_b1": tiny_spiking(batch=1, mean_over_time=True),
        "tied_b2": tiny_spiking(batch=2),  # [2, 2, 10]: T equals the fixed batch
    }
    for name, model in models.items():
        onnx.save(model, folder / f"{name}.onnx")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((301, 1, 4, 4)).astype(np.float32)
    save_npz(folder / "val.npz", Dataset(x[:IMAGES], rng.integers(0, 10, IMAGES)))
    save_npz(folder / "large.npz", Dataset(x, rng.integers(0, 10, len(x))))
    return {p.stem: p for p in folder.iterdir()}


def cli_json(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, dict | None, str]:
    """Exit code, the JSON object on stdout (None if there is none) and stderr of one in-process command."""
    code = run([str(a) for a in args] + ["--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_time_first_logits_score_as_their_mean_over_time(files: dict[str, Path], capsys) -> None:  # noqa: ANN001
    x = np.random.default_rng(0).standard_normal((IMAGES, 1, 4, 4)).astype(np.float32)
    raw, mean = (logits_of(make_session(files[name]), x, batch=8) for name in ("raw", "mean"))
    assert raw.shape == (IMAGES, 10)
    np.testing.assert_allclose(raw, mean, rtol=1e-6, atol=1e-6)
    found = {}
    for name in ("raw", "mean"):
        code, found[f"eval {name}"], _ = cli_json(capsys, "eval", files[name], "--data", files["val"])
        assert code == 0
        out = files[name].with_name(f"{name}_pruned.onnx")
        assert cli_json(capsys, "prune", files[name], "--ratio", "0.5", "-o", out, "--force")[0] == 0
        plan = out.with_suffix(".plan.json")
        code, found[f"verify {name}"], _ = cli_json(capsys, "verify", files[name], out, "--plan", plan)
        assert code == 0 and found[f"verify {name}"]["passed"]
    assert found["eval raw"]["accuracy"] == found["eval mean"]["accuracy"]
    keys = ("samples", "exact", "threshold_ties", "failures", "neurons", "firing")
    assert {k: found["verify raw"][k] for k in keys} == {k: found["verify mean"][k] for k in keys}
    assert found["verify raw"]["firing"] > 0  # the spikes the check compares do happen
    assert found["verify raw"]["max_logit_difference_exact_samples"] == pytest.approx(
        found["verify mean"]["max_logit_difference_exact_samples"], abs=1e-6
    )


def test_unscorable_logits_are_refused_in_one_line(files: dict[str, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    rank4 = parse_with_weights(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N, 1, 4, 4] x) => (float[N, 2, 2, 10] y) {
            h = Flatten <axis = 1> (x)
            p = MatMul(h, w)
            y = Reshape(p, s)
        }""",
        {"w": np.ones((16, 40))},
    )
    rank4.graph.initializer.append(onnx.numpy_helper.from_array(np.array([-1, 2, 2, 10], np.int64), "s"))
    onnx.save(rank4, tmp_path / "rank4.onnx")
    for model, words in ((tmp_path / "rank4.onnx", "has shape [N, 2, 2, 10]"), (files["tied_b2"], "cannot be told")):
        code, report, err = cli_json(capsys, "eval", model, "--data", files["val"])
        assert code == 2 and report is None
        assert words in err and len(err.strip().splitlines()) <= 3


def test_fixed_batch_graphs_run_any_number_of_images(files: dict[str, Path], capsys) -> None:  # noqa: ANN001
    x = np.random.default_rng(1).standard_normal((IMAGES, 1, 4, 4)).astype(np.float32)
    free = logits_of(make_session(files["mean"]), x)
    for name in ("mean_b2", "mean_b1", "raw_b3"):
        np.testing.assert_allclose(logits_of(make_session(files[name]), x), free, rtol=1e-6, atol=1e-6)
    code, free_eval, _ = cli_json(capsys, "eval", files["mean"], "--data", files["val"])
    assert code == 0 and free_eval["fixed_batch"] is None
    for name, batch in (("mean_b2", 2), ("mean_b1", 1)):
        code, report, _ = cli_json(capsys, "eval", files[name], "--data", files["val"], "--batch", "1")
        assert code == 0 and report["accuracy"] == free_eval["accuracy"] and report["samples"] == IMAGES
        assert report["fixed_batch"] == batch and report["latency_ms_b64"] > 0


def test_fixed_batch_latency_counts_the_runs_that_hold_the_images(files: dict[str, Path], monkeypatch) -> None:  # noqa: ANN001
    """Each run of a fixed-batch graph is timed as 1 ms: batch n takes ceil(n / batch) runs."""
    monkeypatch.setattr("svtprune.runtime.timed_runs_ms", lambda session, feeds, repeats, warm_up=True: [1.0] * repeats)
    for name, runs in (("mean_b1", {1: 1, 64: 64}), ("mean_b2", {1: 1, 64: 32}), ("raw_b3", {1: 1, 64: 22})):
        session = make_session(files[name])
        assert {b: latency_ms(session, b) for b in runs} == runs


def test_fixed_batch_taps_and_verify_drop_the_padding(files: dict[str, Path], capsys) -> None:  # noqa: ANN001
    x = np.random.default_rng(2).standard_normal((5, 1, 4, 4)).astype(np.float32)
    fixed, free = onnx.load(files["raw_b3"]), onnx.load(files["raw"])
    tapped = [with_taps(m, find_neurons(m), spikes=True) for m in (fixed, free)]
    values = [predict(make_session(m), x) for m in tapped]
    assert values[0].keys() == values[1].keys()
    for name in values[1]:
        np.testing.assert_allclose(values[0][name], values[1][name], rtol=1e-6, atol=1e-6, err_msg=name)
    pieces = [np.concatenate(StepwiseRunner(m, x, chunk=2).value("v1")) for m in (fixed, free)]
    np.testing.assert_allclose(pieces[0], pieces[1], rtol=1e-6, atol=1e-6)
    out = files["raw_b3"].with_name("raw_b3_pruned.onnx")
    assert cli_json(capsys, "prune", files["raw_b3"], "--ratio", "0.5", "-o", out, "--force")[0] == 0
    code, report, _ = cli_json(capsys, "verify", files["raw_b3"], out, "--plan", out.with_suffix(".plan.json"))
    assert code == 0 and report["passed"] and report["samples"] == 8  # random inputs, not the graph's batch


class Recorder:
    """A session that records how many images each run was fed."""

    def __init__(self, session) -> None:  # noqa: ANN001
        self.session, self.fed = session, []
        self.get_inputs, self.get_outputs = session.get_inputs, session.get_outputs

    def run(self, outputs: list[str], feeds: dict) -> list:
        self.fed.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)


def test_only_a_fixed_batch_is_padded(files: dict[str, Path]) -> None:
    x = np.zeros((5, 1, 4, 4), np.float32)
    for name, fed in (("raw", [4, 1]), ("raw_b3", [3, 3])):
        session = Recorder(make_session(files[name]))
        assert predict(session, x, batch=4)["y"].shape == (2, 5, 10)
        assert session.fed == fed


def test_unpadded_drops_rows_where_the_batch_is_found() -> None:
    value = np.arange(2 * 3 * 4).reshape(2 * 3, 4)  # T=2 steps of 3 images folded time-major, 1 real image
    np.testing.assert_array_equal(unpadded(value, 1, 3, 0), value[[0, 3]])
    np.testing.assert_array_equal(unpadded(value[:3], 1, 3, 0), value[:1])
    logits = np.zeros((2, 3, 10))
    assert unpadded(logits, 1, 3, 1).shape == (2, 1, 10)
    assert unpadded(np.zeros((5, 4)), 1, 3, 0).shape == (5, 4)  # no batch axis found: kept whole


def test_compress_and_quantize_run_on_a_fixed_batch_graph(files: dict[str, Path], tmp_path: Path, capsys) -> None:  # noqa: ANN001
    for command in ("compress", "quantize"):
        out = tmp_path / f"{command}.onnx"
        args = [command, files["mean_b2"], "--data", files["large"], "--max-accuracy-drop", "5", "-o", out]
        code, report, err = cli_json(capsys, *args)
        assert code in (0, 1), err
        assert report["original"]["accuracy"] > 0 and report["compressed"]["latency_ms_b64"] > 0
