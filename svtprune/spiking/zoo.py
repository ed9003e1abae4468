"""Reference SViTs from spikingjelly's model zoo, wrapped to one interface.

Every wrapped model takes a static image batch ``[N, C, H, W]`` and returns logits
``[N, classes]`` averaged over time steps, so training, export and evaluation never
need to know which architecture they hold. This module imports torch: keep it off
the ONNX-only paths.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from svtprune.spiking.configs import ARCHITECTURES

__all__ = ["ARCHITECTURES", "ArchConfig", "TimeAveragedClassifier", "build_model", "reset_states"]
LEGACY_STAGE_DEPTHS = (1, 1, 1)  # what a staged config without stage_depths always built


@dataclass
class ArchConfig:
    """Everything needed to rebuild a reference model; stored beside its weights."""

    arch: str = "spikformer"
    T: int = 4
    in_channels: int = 1
    img_size: int = 28
    num_classes: int = 10
    embed_dims: int = 64
    num_heads: int = 4
    depths: int = 2
    mlp_ratio: float = 4.0
    patch_size: int = 4
    extra: dict[str, Any] = field(default_factory=dict)
    stage_depths: list[int] | None = None  # qkformer/maxformer: blocks per stage (None: 1, 1, 1)
    cifar: bool = False  # maxformer: the CIFAR stem and attention (32x32 inputs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class TimeAveragedClassifier(nn.Module):
    """Gives every zoo model the same contract: image in, time-averaged logits out."""

    def __init__(self, net: nn.Module, averages_over_time: bool) -> None:
        super().__init__()
        self.net = net
        self.averages_over_time = averages_over_time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.mean(0) if self.averages_over_time else out


def build_model(config: ArchConfig) -> TimeAveragedClassifier:
    """Build an untrained reference model; raises ValueError on an unknown arch."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based import model as zoo

    common = dict(
        T=config.T,
        in_channels=config.in_channels,
        num_classes=config.num_classes,
        embed_dims=config.embed_dims,
        **config.extra,
    )
    if config.arch == "spikformer":
        net = zoo.Spikformer(
            img_size_h=config.img_size,
            img_size_w=config.img_size,
            patch_size=config.patch_size,
            num_heads=config.num_heads,
            depths=config.depths,
            mlp_ratio=config.mlp_ratio,
            **common,
        )
        wrapped = TimeAveragedClassifier(net, averages_over_time=True)
    elif config.arch == "sdt":
        net = zoo.SpikeDrivenTransformer(
            num_heads=config.num_heads, depths=config.depths, mlp_ratio=config.mlp_ratio, **common
        )
        wrapped = TimeAveragedClassifier(net, averages_over_time=False)
    elif config.arch == "qkformer":
        net = zoo.QKFormer(
            num_heads=(1, 2, 2) if config.num_heads == 4 else (config.num_heads,) * 3,
            depths=tuple(config.stage_depths or LEGACY_STAGE_DEPTHS),
            mlp_ratio=config.mlp_ratio,
            **common,
        )
        wrapped = TimeAveragedClassifier(net, averages_over_time=False)
    elif config.arch == "maxformer":  # its heads are fixed: 8 with the CIFAR stem, width / 64 otherwise
        net = zoo.MaxFormer(
            depths=tuple(config.stage_depths or LEGACY_STAGE_DEPTHS),
            mlp_ratio=config.mlp_ratio,
            cifar=config.cifar,
            **common,
        )
        wrapped = TimeAveragedClassifier(net, averages_over_time=False)
    else:
        raise ValueError(f"unknown architecture {config.arch!r}; choose one of {ARCHITECTURES}")
    functional.set_step_mode(wrapped, "m")
    return wrapped


def reset_states(model: nn.Module) -> None:
    """Neurons keep membrane state between calls; every new batch must start from rest."""
    from spikingjelly.activation_based import functional

    functional.reset_net(model)
