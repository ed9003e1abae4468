"""Export reference SViTs to ONNX with spikes ONNX Runtime computes exactly as PyTorch does.

The dynamo exporter traces spikingjelly's LIF (its custom op ``sj_lif::forward`` stops the
TorchScript exporter) into plain Sub/Div/Add/GreaterOrEqual/Cast steps, and keeps the
batch axis symbolic, so a file exported at batch 2 runs at any batch size.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from svtprune.errors import UserError
from svtprune.graph.io import save_model
from svtprune.outputs import OutputSet
from svtprune.spiking.zoo import ArchConfig, build_model

if TYPE_CHECKING:
    import torch


def load_weights(path: str | Path) -> tuple[ArchConfig, dict]:
    """A checkpoint written by tools/train_reference.py: {"config": ..., "state_dict": ...}."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        return ArchConfig.from_dict(checkpoint["config"]), checkpoint["state_dict"]
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not an svtprune checkpoint (needs 'config' and 'state_dict')") from exc
    except Exception as exc:  # torch raises pickle/zip errors of many kinds
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__})") from exc


def export_onnx(
    config: ArchConfig,
    out: str | Path,
    state_dict: dict | None = None,
    batch: int = 2,
    force: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """Build (and load) the model, export it with a dynamic batch axis, write it atomically."""
    import torch

    OutputSet([Path(out)], force=force).check()  # a bad -o fails before torch builds anything
    model = build_checked(config, state_dict, seed)
    example = torch.zeros(batch, config.in_channels, config.img_size, config.img_size)
    return export_module(model, example, out, force=force)


def build_checked(config: ArchConfig, state_dict: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """The zoo model, seeded, with ``state_dict`` loaded; what cannot be built is a UserError."""
    import torch

    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():  # a too-small width is refused below, in one line, not torch's warning
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = build_model(config)
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise UserError(f"cannot build {config.arch} with this configuration: {exc}") from exc
    empty = next((name for name, p in model.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # the stem narrows embed_dims (spikformer: by 8), which torch accepts but cannot run
        raise UserError(f"{config.embed_dims} is too small for {config.arch}: {empty} gets no channels", option="embed")
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise UserError(f"weights do not fit {config.arch}: {str(exc).splitlines()[0]}") from exc
    return model


def export_module(
    model: torch.nn.Module, example: torch.Tensor, out: str | Path, force: bool = False
) -> onnx.ModelProto:
    """Export any image -> logits module; input ``x`` and output ``logits`` with a dynamic batch."""
    import torch

    model.eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["x"],
            output_names=["logits"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        )
    exported = program.model_proto
    save_model(exported, out, force=force)
    return exported
