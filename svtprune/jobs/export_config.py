"""Which model ``export`` builds: a named configuration or the small default, then the user's overrides.

Torch-free: every size is checked, and every option an architecture cannot honour refused, before
the zoo is imported. A staged architecture (qkformer, maxformer) records its per-stage depths in
``stage_depths`` and their sum in ``depths``, so the recorded configuration is the one that was built.
"""

from __future__ import annotations

from typing import Any

from svtprune.errors import UserError
from svtprune.jobs.options import check_number
from svtprune.spiking.configs import ARCHITECTURES, NAMED_CONFIGS, STAGED

# ArchConfig's defaults: the small 28x28 model a plain ``export`` builds
DEFAULTS: dict[str, Any] = dict(
    T=4, in_channels=1, img_size=28, num_classes=10, embed_dims=64, num_heads=4, depths=2, mlp_ratio=4.0, patch_size=4
)
# library option -> ArchConfig field
OVERRIDES = dict(
    steps="T",
    in_channels="in_channels",
    img_size="img_size",
    num_classes="num_classes",
    embed="embed_dims",
    heads="num_heads",
    mlp_ratio="mlp_ratio",
    patch_size="patch_size",
)
SPIKFORMER_PATCHES = (4, 16)  # the only patch sizes spikingjelly's Spikformer stem builds


def resolve_fields(config: str | None, arch: str | None, depths: int | str | None, **sizes: Any) -> dict[str, Any]:
    """ArchConfig fields for ``config`` (or the default) with every size that is not None applied."""
    if config is not None:
        if config not in NAMED_CONFIGS:
            raise UserError(f"unknown configuration {config!r}; choose one of {', '.join(NAMED_CONFIGS)}", "config")
        fields = dict(NAMED_CONFIGS[config]["fields"])
        if arch is not None and arch != fields["arch"]:
            raise UserError(f"{arch!r} conflicts with --config {config} (a {fields['arch']})", option="arch")
    else:
        arch = "spikformer" if arch is None else arch
        if arch not in ARCHITECTURES:
            raise UserError(f"must be one of {', '.join(ARCHITECTURES)}, got {arch!r}", option="arch")
        fields = dict(DEFAULTS, arch=arch)
    for option, value in sizes.items():
        if value is not None:
            check_number(value, option, low=0, low_open=True)
            fields[OVERRIDES[option]] = value
    check_architecture(fields, sizes, config is None)
    apply_depths(fields, depths)
    return fields


def check_architecture(fields: dict[str, Any], sizes: dict[str, Any], default: bool) -> None:
    """Refuse what the architecture cannot build, rather than build something else."""
    arch = fields["arch"]
    if sizes.get("patch_size") is not None and arch != "spikformer":
        raise UserError(f"applies to spikformer only ({arch} down-samples by its own stem)", option="patch_size")
    if arch == "spikformer" and fields["patch_size"] not in SPIKFORMER_PATCHES:
        raise UserError(f"must be 4 or 16 for spikformer, got {fields['patch_size']}", option="patch_size")
    if arch == "maxformer":
        if sizes.get("heads") is not None:
            raise UserError("does not apply to maxformer: its heads are fixed (8 with the CIFAR stem)", option="heads")
        if default:
            fields["cifar"] = fields["img_size"] <= 64  # the CIFAR stem for small images, the ImageNet one beyond
        if fields["embed_dims"] % (8 if fields.get("cifar") else 4):
            raise UserError(f"must be a multiple of 8 for maxformer, got {fields['embed_dims']}", option="embed")
        fields["num_heads"] = 8 if fields.get("cifar") else max(1, fields["embed_dims"] // 64)
    elif arch != "qkformer" and fields["embed_dims"] % fields["num_heads"]:  # qkformer's stages have their own widths
        raise UserError(
            f"must be a multiple of the number of heads ({fields['num_heads']}), got {fields['embed_dims']}",
            option="embed",
        )


def apply_depths(fields: dict[str, Any], depths: int | str | None) -> None:
    """``--depths N`` for one-stage models, ``--depths A,B,C`` for staged ones; anything else refused."""
    staged = fields["arch"] in STAGED
    if depths is not None:
        try:
            values = [int(d) for d in str(depths).split(",")]
        except ValueError:
            raise UserError(f"must be whole numbers separated by commas, not {depths!r}", option="depths") from None
        if any(v < 1 for v in values):
            raise UserError(f"must be >= 1, got {depths}", option="depths")
        if staged and len(values) != 3:
            raise UserError(
                f"{fields['arch']} has three stages: give three depths such as 1,2,7, not {depths}", option="depths"
            )
        if not staged and len(values) != 1:
            raise UserError(f"{fields['arch']} has one stack of blocks: give one depth, not {depths}", option="depths")
        if staged:
            fields["stage_depths"] = values
        else:
            fields["depths"] = values[0]
    if staged:
        fields["stage_depths"] = list(fields.get("stage_depths") or (1, 1, 1))
        fields["depths"] = sum(fields["stage_depths"])
