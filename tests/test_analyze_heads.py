"""`svtprune analyze` reports each attention block's configured head count (issue 19).

Oracle: the ``num_heads`` of each attention module of the torch model the file was exported
from (QKFormer's small config has 1, 2 and 2 heads in its three stages).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from svtprune.graph.analysis import analyze
from svtprune.jobs.analyze import analyze_report
from svtprune.spiking.zoo import ArchConfig, build_model
from tests.conftest import SMALL
from tests.model_builders import TinyViT, spiking_model


def configured_heads(config: ArchConfig) -> dict[str, int]:
    """Attention module name (with a trailing dot) -> its heads, read off the built torch model."""
    return {
        f"{name}.": module.num_heads
        for name, module in build_model(config).named_modules()
        if name.endswith("attn") and isinstance(getattr(module, "num_heads", None), int)
    }


def reported_heads(report: dict) -> dict[str, int]:
    return {row["group"]: row["heads"] for row in report["groups"] if row["heads"]}


def assert_heads_per_block(reported: dict[str, int], expected: dict[str, int]) -> None:
    assert expected
    for prefix, heads in expected.items():
        inside = {name: n for name, n in reported.items() if name.startswith(prefix)}
        assert list(inside.values()) == [heads], (prefix, inside)
    outside = [name for name in reported if not any(name.startswith(p) for p in expected)]
    assert not outside, outside  # no group outside an attention block claims heads


@pytest.mark.parametrize("arch", sorted(SMALL))
def test_analyze_reports_the_configured_heads(arch: str, small_models: dict, tmp_path: Path) -> None:
    path = tmp_path / f"{arch}.onnx"
    onnx.save(small_models[arch], path)
    assert_heads_per_block(reported_heads(analyze_report(path)), configured_heads(SMALL[arch]))


@pytest.mark.parametrize("arch", ["spikformer", "sdt"])
def test_heads_through_the_torchscript_exporter(arch: str, torchscript_models: dict) -> None:
    analysis = analyze(torchscript_models[arch])
    assert [g.heads for g in analysis.groups if g.heads] == list(configured_heads(SMALL[arch]).values())


def test_stacked_qkv_grid_of_a_plain_vit(small_models: dict) -> None:
    """TinyViT reshapes to [3, heads, width] and unbinds q, k, v: the stack axis is no head."""
    heads = [g.heads for g in analyze(small_models["vit"]).groups if g.heads]
    assert heads == [TinyViT().heads]


@pytest.mark.slow
def test_twelve_heads_two_blocks(tmp_path: Path) -> None:
    """The case the issue saw (36 for 12 heads), on a small two-block Spikformer."""
    torch.set_num_threads(1)
    config = ArchConfig(arch="spikformer", T=2, embed_dims=48, depths=2, num_heads=12)
    path = tmp_path / "spikformer12.onnx"
    spiking_model(config, seed=1, path=path)
    assert_heads_per_block(reported_heads(analyze_report(path)), configured_heads(config))
