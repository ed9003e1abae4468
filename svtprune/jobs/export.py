"""The export job: a reference SViT (spikingjelly model zoo) to ONNX, trained weights or random."""

from __future__ import annotations

from pathlib import Path

from svtprune.errors import UserError


def export_reference(
    out: str | Path,
    arch: str = "spikformer",
    weights: str | Path | None = None,
    embed: int = 64,
    depths: int = 2,
    heads: int = 4,
    steps: int = 4,
    in_channels: int = 1,
    img_size: int = 28,
    batch: int = 2,
    seed: int = 0,
    force: bool = False,
) -> dict:
    """Export ``weights`` (a checkpoint with its config) or a random ``arch`` model; returns a summary.

    The architecture sizes apply to the random initialisation only: a checkpoint carries its own.
    """
    from svtprune.spiking.export import export_onnx, load_weights  # torch loads only when exporting
    from svtprune.spiking.zoo import ARCHITECTURES, ArchConfig

    if weights is not None:
        config, state = load_weights(weights)
    else:
        if arch not in ARCHITECTURES:
            raise UserError(f"must be one of {', '.join(ARCHITECTURES)}, got {arch!r}", option="arch")
        if arch != "qkformer" and embed % heads:  # qkformer's stages have their own widths and heads
            raise UserError(f"must be a multiple of the number of heads ({heads}), got {embed}", option="embed")
        config = ArchConfig(
            arch=arch,
            T=steps,
            in_channels=in_channels,
            img_size=img_size,
            embed_dims=embed,
            num_heads=heads,
            depths=depths,
        )
        state = None
    model = export_onnx(config, out, state, batch=batch, force=force, seed=seed)
    return {"output": str(out), "arch": config.arch, "nodes": len(model.graph.node), "config": config.to_dict()}
