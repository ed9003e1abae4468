"""Units a person means: one accuracy point is 1, 1pt or 1%; a share is 0.3 or 30%."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer

from svtprune.cli.options import accuracy_points, fraction


@pytest.mark.parametrize("text", ["1", "1.0", "1pt", "1 pt", "1%", "1 points", "1point"])
def test_one_point_spelled_every_way(text: str) -> None:
    assert accuracy_points(text) == 1.0


@pytest.mark.parametrize("text,value", [("0.3", 0.3), ("30%", 0.3), ("92.5%", 0.925)])
def test_shares_as_fractions_or_percent(text: str, value: float) -> None:
    assert fraction(text) == pytest.approx(value)


@pytest.mark.parametrize("parse,text", [(accuracy_points, "one"), (fraction, "most")])
def test_words_are_refused_with_the_spellings_that_work(parse, text: str) -> None:  # noqa: ANN001
    with pytest.raises(typer.BadParameter, match="not a"):
        parse(text)


def test_a_fraction_of_a_point_is_warned_about_on_stderr(tmp_path) -> None:
    """NNCF users write 0.01 for 1%: the search would run for 0.01 points without a word."""
    result = subprocess.run(
        [sys.executable, "-m", "svtprune.cli", "compress", "missing.onnx", "--data", "missing.npz",
         "--max-accuracy-drop", "0.01", "-o", str(tmp_path / "out.onnx")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert "did you mean 1 points?" in result.stderr
    assert result.stdout == ""
