"""Expert options from a TOML file: its values are the command's defaults, a flag on the line wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from svtprune.cli.app import run

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "reference" / "spikformer_fmnist.onnx")
DATA = str(ROOT / "models" / "data" / "fashion_mnist_val.npz")


def line(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = run(list(args))
    return code, capsys.readouterr().err


def test_the_file_sets_defaults_and_the_line_wins(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "svtprune.toml"
    config.write_text("[compress]\nmax_images = 5\nbeam_width = 8\n")
    out = str(tmp_path / "small.onnx")
    code, err = line(capsys, "compress", MODEL, "--data", DATA, "-o", out, "--config-file", str(config))
    assert code == 2 and "--max-images" in err and "got 5" in err  # the file's value reached the options
    code, err = line(
        capsys, "compress", MODEL, "--data", DATA, "-o", out, "--config-file", str(config), "--max-images", "7"
    )
    assert code == 2 and "got 7" in err and not (tmp_path / "small.onnx").exists()


def test_a_misspelt_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "svtprune.toml"
    config.write_text("beam_widht = 8\n")
    code, err = line(
        capsys, "quantize", MODEL, "--data", DATA, "-o", str(tmp_path / "q.onnx"), "--config-file", str(config)
    )
    assert code == 2 and "beam_widht" in err and "Traceback" not in err


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("beam_width = = 8\n")
    code, err = line(
        capsys, "compress", MODEL, "--data", DATA, "-o", str(tmp_path / "s.onnx"), "--config-file", str(config)
    )
    assert code == 2 and "cannot read" in err
