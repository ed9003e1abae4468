"""verify on every file svtprune writes (issue 19): a compress result with its least-squares re-fit.

The plan records the re-fitted layers; verify checks the file's structure exactly against the plain
prune of the plan (which the oracle checks) and reports how far the re-fit moved the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from svtprune.data import Dataset, save_npz
from svtprune.graph.plan import Plan
from tests.test_cli import svtprune


@pytest.fixture(scope="module")
def compressed(small_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``compress`` with its default re-fit on the small Spikformer: the original, the file and its plan."""
    folder = tmp_path_factory.mktemp("refit")
    model, data, out = folder / "model.onnx", folder / "unlabelled.npz", folder / "small.onnx"
    onnx.save(small_models["spikformer"], model)
    save_npz(data, Dataset(np.random.default_rng(3).standard_normal((120, 1, 28, 28)).astype(np.float32), None))
    args = ["--data", str(data), "-o", str(out), "--method", "uniform", "--max-accuracy-drop", "30", "--json"]
    result = svtprune("compress", str(model), *args)
    assert result.returncode == 0, result.stderr
    return {"model": model, "out": out, "plan": out.with_suffix(".plan.json")}


def verify(files: dict[str, Path], out: Path | None = None, plan: Path | None = None, *extra: str):  # noqa: ANN201
    return svtprune(
        "verify", str(files["model"]), str(out or files["out"]), "--plan", str(plan or files["plan"]), *extra
    )


def test_verify_on_a_compress_result_with_refit(compressed: dict[str, Path]) -> None:
    plan = json.loads(compressed["plan"].read_text())
    assert plan["format"] == "svtprune-plan/2" and plan["refit"]
    result = verify(compressed, None, None, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["passed"] and verdict["failures"] == 0 and verdict["neurons"] > 0
    refit = verdict["refit"]
    assert refit["layers"] == plan["refit"] and refit["structure_differences"] == []
    assert refit["max_logit_difference"] > 1e-3  # the re-fit changed the model: reported, not hidden
    text = verify(compressed)
    assert text.returncode == 0 and "re-fitted layers" in text.stderr and "plain prune" in text.stderr


def test_a_changed_weight_outside_the_refit_fails(compressed: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load(compressed["out"])
    refit = set(json.loads(compressed["plan"].read_text())["refit"])
    weight = next(
        name for node in model.graph.node if node.op_type in ("Conv", "MatMul") and node.name not in refit
        for name in node.input[1:2]
    )  # fmt: skip
    tensor = next(t for t in model.graph.initializer if t.name == weight)
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5, weight))
    onnx.save(model, tmp_path / "changed.onnx")
    result = verify(compressed, tmp_path / "changed.onnx", None, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert any("another value" in d for d in json.loads(result.stdout)["refit"]["structure_differences"])


def test_a_plan_for_other_channels_fails(compressed: dict[str, Path], tmp_path: Path) -> None:
    """Channels are checked wherever a weight outside the re-fit carries them; the other groups are listed."""
    verdict = json.loads(verify(compressed, None, None, "--json").stdout)["refit"]
    tampered = json.loads(compressed["plan"].read_text())
    width_only = set(verdict["groups_checked_by_width_only"])
    assert width_only and len(width_only) < len(tampered["groups"])
    name, group = min(
        ((n, g) for n, g in tampered["groups"].items() if n not in width_only and len(g["kept"]) < g["size"]),
        key=lambda item: item[1]["size"],
    )  # the stem: its source weight keeps its values, no re-fit touches it
    removed = next(i for i in range(group["size"]) if i not in group["kept"])
    group["kept"] = sorted([removed, *group["kept"][1:]])  # same width, other channels
    plan = tmp_path / "tampered.plan.json"
    plan.write_text(json.dumps(tampered))
    result = verify(compressed, None, plan, "--json")
    assert result.returncode == 1 and "Traceback" not in result.stderr, name
    assert any("another value" in d for d in json.loads(result.stdout)["refit"]["structure_differences"])


def test_plans_without_a_refit_record_load_as_before() -> None:
    old = {"format": "svtprune-plan/1", "meta": {"method": "uniform"}, "groups": {"a": {"kept": [0, 2]}}}
    assert Plan.from_json(json.dumps(old)).refit == []
    plain = Plan({"a": [0, 2]}, {"method": "uniform"})
    assert "refit" not in json.loads(plain.to_json())  # a plan without a re-fit is written as before
    refitted = Plan({"a": [0, 2]}, {}, {}, ["Conv_3", "Conv_1"])
    assert Plan.from_json(refitted.to_json()).refit == ["Conv_1", "Conv_3"]
