"""The export job: a reference SViT (spikingjelly model zoo) to ONNX, trained weights or random.

A random-weight model is calibrated before export (svtprune.spiking.calibrate) so that its
neurons fire; one that stays dead is refused (exit 1, nothing written) unless ``allow_dead``.
"""

from __future__ import annotations

import time
from pathlib import Path

from svtprune.errors import ConstraintError, UserError
from svtprune.extras import require_torch
from svtprune.jobs.export_config import resolve_fields
from svtprune.outputs import OutputSet

SMALL_IMAGES = 64  # up to this height, 16 calibration images; beyond, 4 (a 224 px batch is heavy)


def export_reference(
    out: str | Path,
    arch: str | None = None,
    weights: str | Path | None = None,
    embed: int | None = None,
    depths: int | str | None = None,
    heads: int | None = None,
    steps: int | None = None,
    in_channels: int | None = None,
    img_size: int | None = None,
    batch: int = 2,
    seed: int = 0,
    force: bool = False,
    *,
    config: str | None = None,
    num_classes: int | None = None,
    patch_size: int | None = None,
    mlp_ratio: float | None = None,
    data: str | Path | None = None,
    calib_images: int | None = None,
    allow_dead: bool = False,
) -> dict:
    """Export ``weights`` (a checkpoint with its config) or a random, calibrated model; returns a summary.

    ``config`` names a published size (svtprune.spiking.configs); the other sizes override it (or
    the small default) and apply to the random initialisation only: a checkpoint carries its own.
    """
    start = time.perf_counter()
    if weights is not None and config is not None:
        raise UserError("cannot be combined with weights: a checkpoint carries its own configuration", "config")
    fields = None
    if weights is None:
        sizes = dict(steps=steps, in_channels=in_channels, img_size=img_size, num_classes=num_classes)
        sizes |= dict(embed=embed, heads=heads, mlp_ratio=mlp_ratio, patch_size=patch_size)
        fields = resolve_fields(config, arch, depths, **sizes)
    OutputSet([Path(out)], force=force).check()  # a bad -o fails before torch builds anything
    require_torch("export")
    from svtprune.spiking.export import build_checked, export_module, load_weights  # torch loads only here
    from svtprune.spiking.zoo import ArchConfig

    if fields is None:
        arch_config, state = load_weights(weights)
    else:
        arch_config, state = ArchConfig(**fields), None
    model = build_checked(arch_config, state, seed=seed)
    summary: dict = {"output": str(out), "arch": arch_config.arch}
    if state is None:
        summary["calibration"] = calibrate_random(model, arch_config, data, calib_images, seed, allow_dead)
        summary["firing_rates"] = summary["calibration"].pop("firing_rates")
    summary["parameters"] = sum(p.numel() for p in model.parameters())
    import torch

    example = torch.zeros(batch, arch_config.in_channels, arch_config.img_size, arch_config.img_size)
    exported = export_module(model, example, out, force=force)
    summary |= {"nodes": len(exported.graph.node), "config": arch_config.to_dict()}
    summary |= {"file_bytes": Path(out).stat().st_size, "wall_seconds": round(time.perf_counter() - start, 2)}
    return summary


def calibrate_random(model, config, data: str | Path | None, count: int | None, seed: int, allow_dead: bool) -> dict:
    """Calibrate on ``count`` images of ``data`` (or random ones drawn from ``seed``); refuse a dead network."""
    import torch

    from svtprune.spiking.calibrate import RATE_RANGE, calibrate, dead_layers

    count = count or (16 if config.img_size <= SMALL_IMAGES else 4)
    shape = (config.in_channels, config.img_size, config.img_size)
    if data is not None:
        from svtprune.data import load_npz

        x = load_npz(data).x[:count]
        if tuple(x.shape[1:]) != shape:
            raise UserError(f"images are {tuple(x.shape[1:])}, the model takes {shape}", option="data")
        images, source = torch.from_numpy(x), str(data)
    else:
        images, source = torch.randn(count, *shape, generator=torch.Generator().manual_seed(seed)), "random normal"
    report = calibrate(model, images)
    report |= {"images": len(images), "source": source, "target_range": list(RATE_RANGE)}
    dead = dead_layers(report["firing_rates"])
    same = len(images) > 1 and report["distinct_predictions"] < 2
    report["dead"] = bool(dead or same)
    if report["dead"] and not allow_dead:
        why = f"layers that never fire: {', '.join(dead[:5])}" if dead else "every image gets the same prediction"
        raise ConstraintError(f"the calibrated network is dead ({why}); --allow-dead exports it anyway", report)
    return report
