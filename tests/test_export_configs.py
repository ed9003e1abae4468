"""Export's named sizes (parameter counts against the papers) and its calibration of random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from svtprune.errors import ConstraintError, UserError
from svtprune.jobs.export import calibrate_random, export_reference
from svtprune.jobs.export_config import resolve_fields
from svtprune.spiking.calibrate import RATE_RANGE, calibrate
from svtprune.spiking.configs import NAMED_CONFIGS
from svtprune.spiking.export import build_checked
from svtprune.spiking.zoo import ArchConfig, build_model
from tests.oracle import run

# parameters the papers report (millions); spikingjelly's spikformer_ti has no paper count: its own module's
PAPER_PARAMETERS = {
    "spikformer_cifar10": 9.32,  # Spikformer-4-384, CIFAR-10 (Zhou et al., ICLR 2023, Table 2)
    "spikformer_8_384": 16.81,  # Spikformer-8-384, ImageNet (Table 1)
    "spikformer_8_512": 29.68,  # Spikformer-8-512, ImageNet (Table 1)
    "sdt_8_384": 16.81,  # Spike-driven Transformer-8-384 (Yao et al., NeurIPS 2023)
    "qkformer_10_384": 16.47,  # QKFormer-10-384 (Zhou et al., NeurIPS 2024)
}
SMALL = dict(embed=32, depths=1, heads=4, steps=2, img_size=16)  # exports in seconds, not minutes


def named(name: str, **overrides: object) -> ArchConfig:
    return ArchConfig(**resolve_fields(name, None, overrides.pop("depths", None), **overrides))


def parameters(config: ArchConfig) -> int:
    return sum(p.numel() for p in build_model(config).parameters())


@pytest.mark.parametrize("name", sorted(PAPER_PARAMETERS))
def test_named_configs_have_the_papers_parameter_counts(name: str) -> None:
    assert parameters(named(name)) / 1e6 == pytest.approx(PAPER_PARAMETERS[name], rel=0.003)


def test_every_named_config_builds_and_runs_its_input_size() -> None:
    for name in ("spikformer_ti", "maxformer_cifar"):  # the 224 px ones only build: a forward is slow on CPU
        config = named(name)
        model = build_model(config).eval()
        if config.img_size <= 32:
            with torch.no_grad():
                assert model(torch.zeros(1, 3, 32, 32)).shape == (1, config.num_classes)
    assert set(NAMED_CONFIGS) >= set(PAPER_PARAMETERS) | {"spikformer_ti", "maxformer_cifar"}


def test_overrides_apply_on_top_of_a_named_config() -> None:
    base = named("spikformer_cifar10")
    config = named("spikformer_cifar10", num_classes=100, mlp_ratio=2.0, embed=192, heads=6)
    assert (config.num_classes, config.mlp_ratio, config.embed_dims, config.num_heads) == (100, 2.0, 192, 6)
    assert (config.depths, config.img_size, config.patch_size) == (base.depths, 32, 4)
    assert parameters(config) < parameters(base)
    assert named("spikformer_8_384", patch_size=16).patch_size == 16
    assert named("spikformer_8_384").img_size == 224


def test_staged_depths_are_built_as_recorded() -> None:
    """Issue 19: qkformer recorded --depths but always built one block per stage."""
    for arch in ("qkformer", "maxformer"):
        config = ArchConfig(**resolve_fields(None, arch, "1,2,3"))
        assert config.stage_depths == [1, 2, 3] and config.depths == 6
        net = build_model(config).net
        assert [len(net.stage1), len(net.stage2), len(net.stage3)] == [1, 2, 3]
        default = ArchConfig(**resolve_fields(None, arch, None))
        assert default.stage_depths == [1, 1, 1] and default.depths == 3  # what the old default built, now recorded
    assert ArchConfig.from_dict({"arch": "qkformer", "depths": 2}).stage_depths is None  # old checkpoints load
    assert [len(build_model(ArchConfig(arch="qkformer")).net.stage3)] == [1]


@pytest.mark.parametrize(
    ("config", "arch", "depths", "sizes", "option", "words"),
    [
        (None, "qkformer", "4", {}, "depths", "three stages"),
        (None, "spikformer", "1,2,7", {}, "depths", "one depth"),
        (None, "sdt", "x", {}, "depths", "whole numbers"),
        (None, "maxformer", None, {"heads": 4}, "heads", "fixed"),
        (None, "sdt", None, {"patch_size": 16}, "patch_size", "spikformer only"),
        (None, "spikformer", None, {"patch_size": 8}, "patch_size", "4 or 16"),
        ("spikformer_huge", None, None, {}, "config", "choose one of"),
        ("sdt_8_384", "qkformer", None, {}, "arch", "conflicts"),
        (None, "spikformer", None, {"mlp_ratio": float("nan")}, "mlp_ratio", "finite"),
    ],
)
def test_what_an_architecture_cannot_build_is_refused(
    config: str | None, arch: str | None, depths: str | None, sizes: dict, option: str, words: str
) -> None:
    with pytest.raises(UserError, match=words) as caught:
        resolve_fields(config, arch, depths, **sizes)
    assert caught.value.option == option


def test_calibration_is_deterministic_and_fires_in_range() -> None:
    states = []
    for _ in range(2):
        model = build_checked(ArchConfig(arch="sdt", T=2, embed_dims=32, depths=1), seed=3)
        report = calibrate(model, torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(3)))
        assert all(RATE_RANGE[0] <= r <= RATE_RANGE[1] for r in report["firing_rates"].values()), report
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_identical_images_make_a_dead_network_that_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "same.npz", x=np.ones((8, 1, 16, 16), np.float32))
    out = tmp_path / "m.onnx"
    with pytest.raises(ConstraintError, match="network is dead") as caught:
        export_reference(out, data=tmp_path / "same.npz", **SMALL)
    assert caught.value.report["dead"] and "firing_rates" in caught.value.report
    assert not out.exists()
    config = ArchConfig(**resolve_fields(None, None, 1, embed=32, steps=2, img_size=16))
    flagged = calibrate_random(build_checked(config), config, tmp_path / "same.npz", None, 0, allow_dead=True)
    assert flagged["dead"] and flagged["distinct_predictions"] == 1


def test_a_random_export_is_alive_in_onnx_runtime(tmp_path: Path) -> None:
    summary = export_reference(tmp_path / "m.onnx", seed=7, **SMALL)
    rates = summary["firing_rates"]
    assert len(rates) == 10 and all(RATE_RANGE[0] <= r <= RATE_RANGE[1] for r in rates.values()), rates
    assert not summary["calibration"]["dead"] and summary["parameters"] > 0
    import onnx

    x = np.random.default_rng(1).standard_normal((6, 1, 16, 16)).astype(np.float32)
    logits = run(onnx.load(tmp_path / "m.onnx"), x)["logits"]
    assert logits.shape == (6, 10)
    assert np.abs(logits - logits[0]).max(axis=1)[1:].min() > 1e-4  # every image's logits differ from the first's
    assert len(set(logits.argmax(1))) > 1


def test_calibration_images_must_fit_the_model(tmp_path: Path) -> None:
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 3, 16, 16), np.float32))
    config = ArchConfig(**resolve_fields(None, None, 1, embed=32, steps=2, img_size=16))
    with pytest.raises(UserError, match=r"images are \(3, 16, 16\), the model takes \(1, 16, 16\)") as caught:
        calibrate_random(build_checked(config), config, tmp_path / "rgb.npz", None, 0, allow_dead=False)
    assert caught.value.option == "data"
