"""A plain ``pip install svtprune`` runs the ONNX-side commands without torch; the rest name the extra.

Building a venv per run is slow, so the CLI runs in a subprocess where torch and spikingjelly
cannot be imported (``sys.modules[name] = None`` makes ``import name`` raise ImportError), which
is what a user without the ``torch`` extra meets.
"""

from __future__ import annotations

import configparser
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from svtprune.data import Dataset, load_npz, save_npz
from svtprune.errors import UserError
from svtprune.extras import TORCH_EXTRA, require_torch
from svtprune.jobs.options import FinetuneOptions

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "reference" / "spikformer_fmnist.onnx"
DATA = REPO / "models" / "data" / "fashion_mnist_val.npz"
BLOCKED = ("torch", "spikingjelly", "torchvision", "torchaudio")
WITHOUT_TORCH = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None  # import name raises ImportError, as when it is not installed\n"
    "from svtprune.cli import main\n"
    "main(sys.argv[1:])\n"
)
TORCH_ONLY = {  # the modules that import torch when imported; everything else must import without it
    "svtprune.recover.convert",
    "svtprune.recover.export",
    "svtprune.recover.quantized",
    "svtprune.recover.torch_ops",
    "svtprune.recover.train",
    "svtprune.spiking.calibrate",
    "svtprune.spiking.export",
    "svtprune.spiking.zoo",
}
WALK = (
    "import importlib, pkgutil, sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None\n"
    "import svtprune\n"
    "for module in pkgutil.walk_packages(svtprune.__path__, 'svtprune.'):\n"
    "    if not module.name.endswith('__main__'):\n"
    "        try:\n"
    "            importlib.import_module(module.name)\n"
    "        except ImportError:\n"
    "            print(module.name)\n"
)
COMMANDS = ["analyze", "prune", "verify", "energy", "quantize", "finetune", "export", "eval", "compress", "demo"]


def without_torch(*args: str | Path) -> subprocess.CompletedProcess:
    """``svtprune ARGS`` in a Python that cannot import torch or spikingjelly."""
    command = [sys.executable, "-c", WITHOUT_TORCH, *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO)


def assert_names_the_extra(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert TORCH_EXTRA in result.stderr and "torch is not installed" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.fixture(scope="module")
def val64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 64 images of the shipped validation data."""
    data = load_npz(DATA)
    path = tmp_path_factory.mktemp("light") / "val64.npz"
    save_npz(path, Dataset(np.ascontiguousarray(data.x[:64]), data.y[:64]))
    return path


def test_install_requires_has_no_torch() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requires = config["options"]["install_requires"].lower()
    for name in ("torch", "spikingjelly", "torchvision", "torchaudio"):
        assert name not in requires
    extras = config["options.extras_require"]
    torch_extra = extras["torch"].split()
    assert "torch==2.13.0" in torch_extra and "spikingjelly==2.0.0" in torch_extra  # a bare torch pulls CUDA
    assert "svtprune[torch]" in extras["test"].split()  # the test suite builds models with torch
    assert TORCH_EXTRA == "pip install 'svtprune[torch]'"


def test_only_the_torch_modules_import_torch() -> None:
    result = subprocess.run([sys.executable, "-c", WALK], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == TORCH_ONLY


def test_onnx_commands_run_without_torch(val64: Path, tmp_path: Path) -> None:
    pruned = tmp_path / "pruned.onnx"
    runs = {
        "analyze": without_torch("analyze", MODEL),
        "prune": without_torch("prune", MODEL, "--ratio", "0.3", "-o", pruned),
        "eval": without_torch("eval", MODEL, "--data", val64),
    }
    runs["verify"] = without_torch("verify", MODEL, pruned, "--plan", pruned.with_suffix(".plan.json"), "--data", val64)
    for command, result in runs.items():
        assert result.returncode == 0, f"{command}: {result.stderr}"
        assert "Traceback" not in result.stderr, command
    assert "PASS" in runs["verify"].stdout + runs["verify"].stderr


def test_torch_commands_name_the_extra(val64: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.onnx"
    assert_names_the_extra(without_torch("export", "-o", out))
    assert_names_the_extra(
        without_torch("finetune", MODEL, "--teacher", MODEL, "--data", val64, "--val", val64, "-o", out)
    )
    for command in ("compress", "quantize"):  # refused before the search, not after it
        result = without_torch(command, MODEL, "--data", val64, "--finetune-data", val64, "-o", out)
        assert_names_the_extra(result)
        assert result.stderr.startswith("error: --finetune-data needs the torch extra")
    assert not out.exists()


def test_help_and_version_work_without_torch() -> None:
    for args in [["--help"], *([command, "--help"] for command in COMMANDS)]:
        result = without_torch(*args)
        assert result.returncode == 0 and "Usage" in result.stdout, f"{args}: {result.stderr}"
    result = without_torch("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"svtprune {metadata.version('svtprune')}\n"
    assert "--version" in without_torch("--help").stdout


def test_require_torch_names_the_field(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    require_torch("finetune")  # installed here: nothing to say
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match="torch is not installed") as caught:
        FinetuneOptions(finetune_data=tmp_path / "train.npz")
    assert caught.value.option == "finetune_data"
    assert caught.value.phrased({"finetune_data": "--finetune-data"}).startswith("--finetune-data needs the torch")
    FinetuneOptions()  # no fine-tuning asked: no torch needed
