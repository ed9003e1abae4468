"""The shipped reference models: ONNX Runtime reproduces the accuracy their JSON states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from svtprune.data import load_npz
from svtprune.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
REFERENCES = sorted((ROOT / "models" / "reference").glob("*.json"))


def test_a_spikformer_reference_is_shipped() -> None:
    names = [p.stem for p in REFERENCES if (p.with_suffix(".onnx")).is_file()]
    assert any("spikformer" in n for n in names), names


@pytest.mark.slow
@pytest.mark.parametrize("info_path", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_reference_accuracy_reproduces(info_path: Path) -> None:
    info = json.loads(info_path.read_text())
    data = load_npz(ROOT / info["validation_split"])
    assert len(data) >= 2000 and data.y is not None
    result = evaluate(info_path.with_suffix(".onnx"), data, latency=False)
    assert result.accuracy == pytest.approx(info["accuracy"], abs=0.01)
    assert abs(info["accuracy"] - info["accuracy_pytorch"]) <= 0.05  # export keeps spikes exact
