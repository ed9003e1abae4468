"""``--help`` as a person reads it: fitted to the terminal, options in panels (goals, data, output first)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from svtprune.cli.app import COMMANDS


def show_help(*command: str, columns: int = 80) -> str:
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("TERMINAL_WIDTH", None)
    result = subprocess.run(
        [sys.executable, "-m", "svtprune.cli", *command, "--help"], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def panels(text: str) -> dict[str, list[str]]:
    """Panel title -> the options named in it (a row that starts with a dash), in the order shown."""
    shown: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line.startswith("╭─ "):
            title = line.removeprefix("╭─ ").split(" ─")[0]
            shown[title] = []
        elif title is not None and line.startswith("│ -"):
            shown[title].append(line.removeprefix("│ ").split()[0])
    return shown


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_fits_80_columns_and_shows_no_bool_metavar(command: str) -> None:
    text = show_help(*([command] if command else []))
    wide = [line for line in text.splitlines() if len(line) > 80]
    assert not wide, wide
    assert "<bool>" not in text
    assert "…" not in text  # no option name (nor word) cut
    assert "{" not in text.splitlines()[1]  # the usage line: MODEL, not {model}


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "demo"])
def test_every_option_is_in_a_named_panel(command: str) -> None:
    shown = panels(show_help(command))
    assert "Options" not in shown, shown["Options"]  # an option without rich_help_panel lands there, first
    assert list(shown.values())[-1][-1] == "--help"


def test_compress_help_starts_with_goals_data_output_and_ends_with_expert() -> None:
    text = show_help("compress")
    assert " compress MODEL --data DATA -o OUT [OPTIONS]" in text.splitlines()[1]  # python -m: no "svtprune"
    shown = panels(text)
    titles = [title for title in shown if title != "Arguments"]
    assert titles[:3] == ["Goals", "Data", "Output"] and titles[-1] == "Expert", titles
    first = [option for title in titles[:3] for option in shown[title]]
    assert len(first) <= 12, first
    assert "--max-accuracy-drop" in shown["Goals"] and "--data" in shown["Data"] and "-o," in shown["Output"]
    for expert in (
        "--prune-share",
        "--finetune-search-drop",
        "--scale-codes",
        "--int8-biases",
        "--layout",
        "--workers",
    ):
        assert expert in shown["Expert"], expert
    assert "--reconstruct / --no-reconstruct" in text  # a switch shows both spellings, no value


def test_help_is_as_wide_as_the_terminal_up_to_100_columns() -> None:
    narrow = show_help("compress", columns=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60 and "…" not in narrow
    wide = show_help("compress", columns=200)
    assert max(len(line) for line in wide.splitlines()) == 100
