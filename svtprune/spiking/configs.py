"""The sizes users have, named: published SViT configurations for ``svtprune export --config``.

Plain data (no torch), so the command line can list the names without loading the zoo. Each
entry holds ``ArchConfig`` fields and where the sizes come from; parameter counts are those of
spikingjelly 2.0.0's modules, checked in tests/test_export_configs.py against the papers.
"""

from __future__ import annotations

from typing import Any

ARCHITECTURES = ("spikformer", "sdt", "qkformer", "maxformer")
STAGED = ("qkformer", "maxformer")  # three stages, each with its own depth
IMAGENET = dict(in_channels=3, img_size=224, num_classes=1000)
CIFAR = dict(in_channels=3, img_size=32)

NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    "spikformer_cifar10": dict(
        fields=dict(arch="spikformer", **CIFAR, num_classes=10, embed_dims=384, num_heads=12, depths=4, patch_size=4),
        source="Spikformer-4-384 (Zhou et al., ICLR 2023, CIFAR-10: 9.32M); spikingjelly model.spikformer_cifar10",
    ),
    "spikformer_ti": dict(
        fields=dict(arch="spikformer", **IMAGENET, embed_dims=256, num_heads=8, depths=4, patch_size=16),
        source="spikingjelly 2.0.0 model.spikformer_ti (Spikformer-Ti: embed_dims=256, num_heads=8, depths=4, 224x224)",
    ),
    "spikformer_8_384": dict(
        fields=dict(arch="spikformer", **IMAGENET, embed_dims=384, num_heads=12, depths=8, patch_size=16),
        source="Spikformer-8-384 (Zhou et al., ICLR 2023, ImageNet: 16.81M); 12 heads as spikingjelly's spikformer_s",
    ),
    "spikformer_8_512": dict(
        fields=dict(arch="spikformer", **IMAGENET, embed_dims=512, num_heads=8, depths=8, patch_size=16),
        source="Spikformer-8-512 (Zhou et al., ICLR 2023, ImageNet: 29.68M); 8 heads as Spikformer's default",
    ),
    "sdt_8_384": dict(
        fields=dict(arch="sdt", **IMAGENET, embed_dims=384, num_heads=8, depths=8),
        source="Spike-driven Transformer-8-384 (Yao et al., NeurIPS 2023, ImageNet); spikingjelly model.sdt_8_384",
    ),
    "qkformer_10_384": dict(
        fields=dict(arch="qkformer", **IMAGENET, embed_dims=384, num_heads=6, depths=10, stage_depths=[1, 2, 7]),
        source="QKFormer-10-384 (Zhou et al., NeurIPS 2024, ImageNet: 16.47M); spikingjelly model.qkformer_10_384",
    ),
    "maxformer_cifar": dict(
        fields=dict(
            arch="maxformer",
            **CIFAR,
            num_classes=100,
            embed_dims=384,
            num_heads=8,
            depths=4,
            stage_depths=[1, 1, 2],
            cifar=True,
        ),
        source="Max-Former for CIFAR (CIFAR-100, stages 1-1-2, width 384); spikingjelly model.maxformer_cifar",
    ),
}
