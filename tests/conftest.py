"""Session-wide fixtures: small random models exported once (export is the slow part)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from svtprune.spiking.zoo import ArchConfig
from tests.model_builders import TinyViT, export_for_tests, spiking_model, torchscript_model

SMALL = {
    "spikformer": ArchConfig(arch="spikformer", T=2, embed_dims=32, depths=1, num_heads=4),
    "sdt": ArchConfig(arch="sdt", T=2, embed_dims=32, depths=1, num_heads=4),
    "qkformer": ArchConfig(arch="qkformer", T=2, embed_dims=32, num_heads=4),
}


@pytest.fixture(scope="session")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """name -> ONNX model: the three zoo SViTs with firing neurons and a plain ViT."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("models")
    models = {name: spiking_model(cfg, seed=1, path=folder / f"{name}.onnx") for name, cfg in SMALL.items()}
    torch.manual_seed(0)
    vit = TinyViT().eval()
    models["vit"] = export_for_tests(vit, torch.randn(2, 1, 28, 28), folder / "vit.onnx")
    return models


@pytest.fixture(scope="session")
def images() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((5, 1, 28, 28)).astype(np.float32)


@pytest.fixture(scope="session")
def torchscript_models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same SViTs through the TorchScript exporter with a plain LIF (runtime shape chains)."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("torchscript")
    return {
        name: torchscript_model(SMALL[name], seed=1, path=folder / f"{name}.onnx") for name in ("spikformer", "sdt")
    }
