"""Output files as a set: checked before the work, written all or nothing, never over an input or another run."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from svtprune import outputs as outputs_module
from svtprune.data import Dataset, save_npz
from svtprune.errors import UserError
from svtprune.outputs import TEMP_PREFIX, OutputSet


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "svtprune.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


def one_line_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert words in " ".join(result.stderr.split()), result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


@pytest.fixture(scope="module")
def files(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("outputs")
    onnx.save(small_models["spikformer"], folder / "model.onnx")
    rng = np.random.default_rng(0)
    save_npz(folder / "val.npz", Dataset(rng.standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    return {p.stem: p for p in folder.iterdir()}


# --- the library: all or nothing ------------------------------------------------------------------------------


def test_a_set_is_written_whole_and_leaves_no_temporaries(tmp_path: Path) -> None:
    paths = [tmp_path / "a.onnx", tmp_path / "sub" / "a.plan.json"]
    with OutputSet.claim(paths) as outputs:
        assert leftovers(tmp_path)  # the lock, while the run holds the set
        outputs.write({paths[0]: b"model", paths[1]: "plan"})
    assert paths[0].read_bytes() == b"model" and paths[1].read_text() == "plan"
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []


def test_a_failure_while_staging_leaves_nothing_new_and_existing_files_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [tmp_path / "a.onnx", tmp_path / "a.plan.json"]
    paths[1].write_text("old plan")
    real_stage = outputs_module.stage

    def stage_until_disk_full(path: Path, content: bytes) -> str:
        if path == paths[1]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_stage(path, content)

    monkeypatch.setattr(outputs_module, "stage", stage_until_disk_full)
    with OutputSet.claim(paths, force=True) as outputs, pytest.raises(UserError, match="no space left"):
        outputs.write({paths[0]: b"model", paths[1]: "new plan"})
    assert not paths[0].exists() and paths[1].read_text() == "old plan"
    assert leftovers(tmp_path) == []


def test_a_failed_rename_puts_the_earlier_files_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = [tmp_path / "a.onnx", tmp_path / "a.plan.json"]
    paths[0].write_bytes(b"old model")
    real_replace, calls = os.replace, []

    def replace_failing_on_the_second_file(src: str | Path, dst: str | Path) -> None:
        calls.append(dst)
        if Path(dst) == paths[1]:
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(outputs_module.os, "replace", replace_failing_on_the_second_file)
    with OutputSet.claim(paths, force=True) as outputs, pytest.raises(UserError, match="nothing was written"):
        outputs.write({paths[0]: b"new model", paths[1]: "plan"})
    assert paths[0] in map(Path, calls)  # the first file had been swapped in before the failure
    assert paths[0].read_bytes() == b"old model" and not paths[1].exists()
    assert leftovers(tmp_path) == []


def test_a_second_claim_on_the_same_files_is_refused_until_the_first_is_released(tmp_path: Path) -> None:
    out = tmp_path / "a.onnx"
    first = OutputSet.claim([out])
    with pytest.raises(UserError, match=f"another svtprune run \\(pid {os.getpid()}\\)"):
        OutputSet.claim([out])
    first.release()
    with OutputSet.claim([out]) as again:
        again.write({out: b"x"})
    assert out.read_bytes() == b"x" and leftovers(tmp_path) == []


def test_a_file_written_meanwhile_by_someone_else_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "a.onnx"
    with OutputSet.claim([out]) as outputs:
        out.write_bytes(b"theirs")  # e.g. a run that ignored the lock, or the user
        with pytest.raises(UserError, match="changed while this run worked"):
            outputs.write({out: b"ours"})
    assert out.read_bytes() == b"theirs"


def test_paths_that_cannot_be_written_are_refused_before_any_work(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    cases = {
        "is a folder": [tmp_path],
        "is a file, not a folder": [plain / "out.onnx"],
        "is named for two": [tmp_path / "a.onnx", tmp_path / "a.onnx"],
        "its name is 260 bytes": [tmp_path / ("n" * 255 + ".onnx")],
        "already exists": [plain],
    }
    for words, paths in cases.items():
        with pytest.raises(UserError, match=words):
            OutputSet.claim(paths)
    with pytest.raises(UserError, match="is an input of this command"):
        OutputSet.claim([plain], inputs=[tmp_path / "." / "plain.txt"], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.txt"]


def test_a_long_valid_name_is_written(tmp_path: Path) -> None:
    out = tmp_path / ("n" * 245 + ".onnx")  # 250 bytes: the temporary must not add to it
    with OutputSet.claim([out]) as outputs:
        outputs.write({out: b"x"})
    assert out.read_bytes() == b"x"


# --- the commands ----------------------------------------------------------------------------------------------


def test_prune_refuses_a_plan_named_like_the_model_and_force_over_the_input(
    files: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "p.onnx"
    one_line_error(cli("prune", str(files["model"]), "-o", str(out), "--plan-out", str(out)), "named for two")
    before = files["model"].read_bytes()
    one_line_error(cli("prune", str(files["model"]), "-o", str(files["model"]), "--force"), "is an input")
    assert files["model"].read_bytes() == before
    assert list(tmp_path.iterdir()) == []


def test_compress_checks_every_output_before_the_search(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "small.onnx"
    out.with_suffix(".report.html").write_text("an earlier report")
    started = time.perf_counter()
    result = cli("compress", str(files["model"]), "--data", str(files["val"]), "-o", str(out), "--method", "uniform")
    one_line_error(result, "small.report.html already exists")
    assert time.perf_counter() - started < 60  # refused up front, not after a search
    assert out.with_suffix(".report.html").read_text() == "an earlier report" and not out.exists()
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    one_line_error(cli("prune", str(files["model"]), "-o", str(plain / "p.onnx")), "is a file, not a folder")
    one_line_error(cli("prune", str(files["model"]), "-o", str(tmp_path)), "is a folder")
    long_stem = "n" * 246  # the model's name fits (251 bytes), its .plan.json does not
    one_line_error(
        cli("compress", str(files["model"]), "--data", str(files["val"]), "-o", str(tmp_path / f"{long_stem}.onnx")),
        "the file system allows 255",
    )


def test_two_runs_to_one_output_the_second_stops_and_the_first_finishes(files: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "small.onnx"
    args = ["compress", str(files["model"]), "--data", str(files["val"]), "-o", str(out)]
    args += ["--method", "uniform", "--max-accuracy-drop", "30", "--json"]
    first = subprocess.Popen([sys.executable, "-m", "svtprune.cli", *args], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(tmp_path) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(tmp_path), "the first run never claimed its outputs"
        one_line_error(cli(*args), "another svtprune run")
        stdout, _ = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0
    assert json.loads(stdout)["memory_saving"] > 0 and out.is_file()
    assert leftovers(tmp_path) == []


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("this machine does not allow mounting a tmpfs")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_leaves_nothing_behind(files: dict[str, Path], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "64k") as disk:  # the pruned model needs more than this
        (disk / "keep.txt").write_text("a user's file")
        out = disk / "p.onnx"
        one_line_error(cli("prune", str(files["model"]), "-o", str(out)), "no space left on the device")
        assert sorted(p.name for p in disk.iterdir()) == ["keep.txt"]
        assert (disk / "keep.txt").read_text() == "a user's file"


def test_a_read_only_folder_is_refused_before_the_work(files: dict[str, Path], tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "ro", "1m") as folder:
        remounted = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
        if remounted.returncode != 0:
            pytest.skip("this machine does not allow a read-only remount")
        one_line_error(cli("prune", str(files["model"]), "-o", str(folder / "p.onnx")), "is not writable")
