"""The command line as a user meets it: exit codes, one-line errors, JSON on stdout."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from svtprune.data import Dataset, save_npz

COMMANDS = ["demo", "export", "eval", "analyze", "prune", "verify", "compress", "quantize", "finetune"]


def svtprune(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "svtprune.cli", *args], capture_output=True, text=True, timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3


@pytest.fixture(scope="module")
def files(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli")
    onnx.save(small_models["spikformer"], folder / "model.onnx")
    rng = np.random.default_rng(0)
    save_npz(
        folder / "val.npz", Dataset(rng.standard_normal((40, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 40))
    )
    save_npz(folder / "wrong.npz", Dataset(rng.standard_normal((4, 3, 32, 32)).astype(np.float32), None))
    (folder / "garbage.onnx").write_bytes(b"\x08\x01 this is not a model")
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = svtprune(command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout


def test_user_mistakes_are_one_line_and_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    assert_user_error(svtprune("eval", str(tmp_path / "missing.onnx"), "--data", str(files["val"])), "not found")
    assert_user_error(svtprune("eval", str(files["garbage"]), "--data", str(files["val"])), "not a readable ONNX")
    assert_user_error(svtprune("eval", str(files["model"]), "--data", str(files["wrong"])), "expects")
    assert_user_error(
        svtprune("prune", str(files["model"]), "--ratio", "1.5", "-o", str(tmp_path / "p.onnx")), "--ratio"
    )
    assert_user_error(svtprune("analyze", str(files["garbage"])), "not a readable ONNX")


def test_usage_mistakes_exit_2_without_a_traceback(files: dict[str, Path]) -> None:
    for args, words in ((["evaluate"], "No such command"), (["eval", str(files["model"]), "--bogus"], "--bogus")):
        result = svtprune(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert words in result.stderr


def test_existing_output_is_not_overwritten(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exists.onnx"
    out.write_bytes(b"keep me")
    assert_user_error(svtprune("prune", str(files["model"]), "-o", str(out)), "already exists")
    assert out.read_bytes() == b"keep me"


def test_eval_json_is_one_object(files: dict[str, Path]) -> None:
    result = svtprune("eval", str(files["model"]), "--data", str(files["val"]), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"accuracy", "param_bytes", "file_bytes", "latency_ms_b1", "latency_ms_b64"} <= set(report)
    assert report["samples"] == 40 and report["file_bytes"] == files["model"].stat().st_size
    assert report["latency_ms_b1_1thread"] > 0  # one thread at batch 1, and the peak of a fresh process running it
    assert 0 < report["peak_rss_mb_runtime_only"] <= report["peak_rss_mb"]


def test_analyze_prune_verify_round_trip(files: dict[str, Path], tmp_path: Path) -> None:
    groups = json.loads(svtprune("analyze", str(files["model"]), "--json").stdout)["groups"]
    assert sum(g["prunable"] for g in groups) == 6
    out = tmp_path / "pruned.onnx"
    pruned = svtprune("prune", str(files["model"]), "--ratio", "0.4", "-o", str(out), "--json")
    assert pruned.returncode == 0, pruned.stderr
    summary = json.loads(pruned.stdout)
    assert summary["pruned_param_bytes"] < summary["original_param_bytes"]
    plan = tmp_path / "pruned.plan.json"
    verdict = svtprune("verify", str(files["model"]), str(out), "--plan", str(plan), "--json")
    assert verdict.returncode == 0 and json.loads(verdict.stdout)["passed"]
    # a plan that does not describe this pruned file must fail the oracle
    tampered = json.loads(plan.read_text())
    group = max(tampered["groups"].values(), key=lambda g: len(g["kept"]))  # a group without heads
    removed = next(i for i in range(max(group["kept"]) + 2) if i not in group["kept"])
    group["kept"] = sorted([removed, *group["kept"][1:]])  # same width, other channels
    plan.write_text(json.dumps(tampered))
    mismatch = svtprune("verify", str(files["model"]), str(out), "--plan", str(plan), "--json")
    assert mismatch.returncode == 1 and "Traceback" not in mismatch.stderr


def test_prune_and_verify_say_accuracy_was_not_measured(files: dict[str, Path], tmp_path: Path) -> None:
    """PASS means the surgery is exact, not that the model still classifies well: both commands say so."""
    out = tmp_path / "pruned.onnx"
    pruned = svtprune("prune", str(files["model"]), "--ratio", "0.4", "-o", str(out))
    said = " ".join(pruned.stderr.split())
    assert pruned.returncode == 0 and "accuracy not measured" in said and "svtprune eval" in said, pruned.stderr
    verdict = svtprune("verify", str(files["model"]), str(out), "--plan", str(tmp_path / "pruned.plan.json"))
    said = " ".join(verdict.stderr.split())
    assert verdict.returncode == 0, verdict.stderr
    assert "PASS (checked: oracle): surgery exact; accuracy not measured; " in said
    assert "samples identical" in said and "to measure accuracy: svtprune eval" in said


@pytest.fixture(scope="module")
def unlabelled(files: dict[str, Path]) -> Path:
    path = files["val"].parent / "unlabelled.npz"
    save_npz(path, Dataset(np.random.default_rng(3).standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    return path


def compress_uniform(files: dict[str, Path], data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return svtprune("compress", str(files["model"]), "--data", str(data), "-o", str(out), "--method", "uniform", *extra)


def test_compress_writes_model_plan_and_reports(files: dict[str, Path], unlabelled: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.onnx"
    result = compress_uniform(files, unlabelled, out, "--max-accuracy-drop", "30", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for key in ("param_bytes", "file_bytes", "accuracy"):
        assert key in report["original"] and key in report["compressed"]
    assert report["memory_saving"] > 0 and report["accuracy_drop"] <= 30
    assert report["metric"].startswith("top1 agreement") and report["evaluations"]
    for suffix in (".plan.json", ".report.json", ".report.html"):
        assert out.with_suffix(suffix).is_file()
    assert json.loads(out.with_suffix(".report.json").read_text())["memory_saving"] == report["memory_saving"]
    assert out.stat().st_size == report["compressed"]["file_bytes"]


def test_unreachable_constraint_exits_1_and_writes_nothing(
    files: dict[str, Path], unlabelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "never.onnx"
    result = compress_uniform(
        files, unlabelled, out, "--max-accuracy-drop", "0", "--min-memory-saving", "0.95", "--json"
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
    report = json.loads(result.stdout)
    assert report["constraints_met"] is False and "memory saving" in report["reason"]
    # --quantize auto: pruning alone missed the goal, so bits were searched too (and the report says so)
    assert report["quantization_choice"].startswith("auto: pruning alone saved") and "quantization" in report


def test_a_result_is_never_worse_than_its_input(files: dict[str, Path], unlabelled: Path, tmp_path: Path) -> None:
    """With no room in the budget: something was still removed (a smaller file), or nothing is written."""
    out = tmp_path / "same.onnx"
    result = compress_uniform(files, unlabelled, out, "--max-accuracy-drop", "0", "--json")
    report = json.loads(result.stdout)
    if result.returncode == 0:
        assert report["memory_saving"] > 0
        assert report["compressed"]["file_bytes"] <= report["original"]["file_bytes"]
    else:
        assert result.returncode == 1 and not list(tmp_path.iterdir())
        assert report["memory_saving"] > 0 or "nothing could be removed" in report["reason"]


def test_a_search_out_of_time_keeps_what_it_had(files: dict[str, Path], unlabelled: Path, tmp_path: Path) -> None:
    """A limit that passes at the first candidate (its screen at most): nothing removed, so exit 1 and no files."""
    out = tmp_path / "late.onnx"
    result = compress_uniform(files, unlabelled, out, "--max-accuracy-drop", "30", "--time-limit", "0.001", "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    limit = report["constraints"]["time_limit"]
    assert limit["reached"] and limit["candidates_not_measured"] > 0 and len(report["evaluations"]) <= 1
    assert "nothing could be removed" in report["reason"] and not list(tmp_path.iterdir())
    # nothing removed: the held-out figure is the start's own, and no held-out image is forwarded again for it
    [check] = report["held_out_checks"]
    assert (check["label"], check["accuracy"]) == ("unpruned", report["original"]["accuracy"])
    assert not {"held-out", "held-out, no re-fit"} & set(report["images_forwarded_by_phase"])
    assert_user_error(compress_uniform(files, unlabelled, out, "--time-limit", "0"), "--time-limit")


def test_worse_than_input_names_each_way_a_result_can_be_worse() -> None:
    from svtprune.jobs.common import worse_than_input

    assert worse_than_input(0.3, (1000, 700), 1.2) == []
    assert worse_than_input(0.0, (1000, 990)) == ["nothing could be removed within the accuracy budget"]
    assert "larger than the input" in worse_than_input(0.01, (1000, 1200))[0]
    assert "slower than the input (0.71x)" in worse_than_input(0.2, (1000, 800), 0.71)[0]


def test_html_report_renders_in_a_browser(files: dict[str, Path], unlabelled: Path, tmp_path: Path) -> None:
    import shutil

    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    out = tmp_path / "small.onnx"
    assert compress_uniform(files, unlabelled, out, "--max-accuracy-drop", "30").returncode == 0
    page = out.with_suffix(".report.html")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'u'}",
    ]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert 'id="summary"' in dom and "Memory saved" in dom
    assert dom.count("data:image/png;base64,") >= 2
    assert 'id="energy"' in dom and "speed-up" in dom  # energy table and measured speed-up on every compress
    shot = tmp_path / "shot.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=900,1400", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.is_file() and shot.stat().st_size > 10_000  # a rendered page, not a blank one


USAGE_MISTAKES = {
    "no command": ([], "missing command"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "unknown option": (["analyze", "m.onnx", "--bogus"], "--bogus"),
    "missing -o": (["prune", "m.onnx"], "--out"),
    "--ratio abc": (["prune", "m.onnx", "-o", "p.onnx", "--ratio", "abc"], "--ratio"),
    "--max-accuracy-drop nan": (
        ["compress", "m.onnx", "--data", "d.npz", "-o", "s.onnx", "--max-accuracy-drop", "nan"],
        "--max-accuracy-drop",
    ),
    "eval --batch 0": (["eval", "m.onnx", "--data", "d.npz", "--batch", "0"], "--batch"),
    "verify --samples -3": (["verify", "m.onnx", "p.onnx", "--plan", "p.json", "--samples", "-3"], "--samples"),
    "export --embed 0": (["export", "-o", "m.onnx", "--embed", "0"], "--embed"),
    "export --T 0": (["export", "-o", "m.onnx", "--T", "0"], "--T"),
    "finetune --lr nan": (
        [
            "finetune",
            "s.onnx",
            "--teacher",
            "t.onnx",
            "--data",
            "d.npz",
            "--val",
            "v.npz",
            "-o",
            "o.onnx",
            "--lr",
            "nan",
        ],
        "--lr",
    ),
}


@pytest.mark.parametrize("case", USAGE_MISTAKES)
def test_usage_mistake_is_one_line_exit_2(case: str, tmp_path: Path) -> None:
    args, words = USAGE_MISTAKES[case]
    result = subprocess.run(
        [sys.executable, "-m", "svtprune.cli", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr and result.stderr.startswith("error: ")
    assert not list(tmp_path.iterdir()), "a usage mistake writes nothing"


def test_library_errors_name_the_flag(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "exists.onnx"
    out.write_bytes(b"keep me")
    result = svtprune("prune", str(files["model"]), "-o", str(out))
    assert result.returncode == 2 and result.stderr.startswith("error: --force ")
    assert len(result.stderr.strip().splitlines()) == 1 and out.read_bytes() == b"keep me"


def option_fields(kind: type) -> set[str]:
    """The scalar fields of a typed options class and of its groups (a group's own name is not a flag)."""
    from dataclasses import fields, is_dataclass

    names: set[str] = set()
    for f in fields(kind):
        group = f.default_factory() if callable(f.default_factory) else None
        names |= option_fields(type(group)) if is_dataclass(group) else {f.name}
    return names


def test_a_flag_is_named_as_its_field() -> None:
    """The CLI builds the typed options from parameters of the same names: no table renames them."""
    from svtprune.cli.app import flags_for
    from svtprune.jobs.options import CompressOptions, QuantizeOptions, QuantOptions

    python_only = {"calibration_images", "quantize_if_needed"}  # set by the library, never by a flag
    compress = option_fields(CompressOptions) | (option_fields(QuantOptions) - {"search", "symmetric", "block_size"})
    for command, names in (("compress", compress - {"quantize"}), ("quantize", option_fields(QuantizeOptions))):
        spelled = flags_for(command)
        assert names - python_only <= set(spelled), (command, names - python_only - set(spelled))
        assert all(spelled[n] == "--" + n.replace("_", "-") for n in names - python_only - {"format"}), command
    assert flags_for("compress")["quantize"] == "--quantize" and flags_for("compress")["model"] == "MODEL"


def test_help_does_not_cut_option_names() -> None:
    result = svtprune("compress", "--help")
    assert result.returncode == 0
    for flag in ("--max-accuracy-drop", "--min-memory-saving", "--finetune-search-drop", "--min-energy-saving"):
        assert flag in result.stdout
    assert "…" not in result.stdout


@pytest.mark.slow
def test_ctrl_c_exits_130_and_writes_nothing(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    model = root / "models" / "reference" / "spikformer_fmnist.onnx"
    data = root / "models" / "data" / "fashion_mnist_val.npz"
    out = tmp_path / "small.onnx"
    run = subprocess.Popen(
        [sys.executable, "-m", "svtprune.cli", "compress", str(model), "--data", str(data), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell may ignore SIGINT
    )
    try:
        first = run.stderr.readline()  # the first progress line: the search has started
        assert first.startswith("compressing"), first
        run.send_signal(signal.SIGINT)
        _, rest = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 130, rest
    assert rest.strip().splitlines()[-1] == "interrupted" and "Traceback" not in rest
    assert not out.exists() and not list(tmp_path.iterdir())
