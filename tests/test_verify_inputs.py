"""verify's inputs and what they prove (issue 28, item 9): ``--samples`` without data, dead networks.

A network where no neuron fires passes the oracle trivially (both models give the same constant
logits); the verdict stands, but the report says how often neurons fired and warns at zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from svtprune.cli.app import run
from tests.model_builders import tiny_spiking


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path, Path]]:
    """name -> (model, its prune at ratio 0.5, the plan): a live network and a dead one."""
    folder = tmp_path_factory.mktemp("verify_inputs")
    found = {}
    for name, bias in (("live", 0.0), ("dead", -100.0)):
        model, out = folder / f"{name}.onnx", folder / f"{name}_pruned.onnx"
        onnx.save(tiny_spiking(bias=bias), model)
        assert run(["prune", str(model), "--ratio", "0.5", "-o", str(out)]) == 0
        found[name] = (model, out, out.with_suffix(".plan.json"))
    return found


def verify(capsys: pytest.CaptureFixture, files: tuple[Path, Path, Path], *extra: str) -> tuple[int, str, str]:
    capsys.readouterr()
    model, out, plan = files
    code = run(["verify", str(model), str(out), "--plan", str(plan), *extra])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


@pytest.mark.parametrize(("extra", "samples"), [((), 8), (("--samples", "3"), 3), (("--samples", "13"), 13)])
def test_samples_without_data_sets_the_random_images(pruned: dict, capsys, extra: tuple, samples: int) -> None:  # noqa: ANN001
    code, out, _ = verify(capsys, pruned["live"], "--json", *extra)
    report = json.loads(out)
    assert code == 0 and report["samples"] == report["exact"] == samples


def test_a_dead_network_passes_with_a_warning(pruned: dict, capsys) -> None:  # noqa: ANN001
    code, out, _ = verify(capsys, pruned["dead"], "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["firing"] == 0.0
    code, _, err = verify(capsys, pruned["dead"])
    assert code == 0 and "no neuron fires" in err and "vacuous" in err
    code, out, err = verify(capsys, pruned["live"])
    assert code == 0 and "no neuron fires" not in err and "neurons fired on" in err
