"""``svtprune finetune``: distil the original's logits into a pruned (or quantized) model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.options import DATA_KINDS, Force, Json, PreprocessSpec, number, out_option
from svtprune.cli.render import emit_json, print_finetune


def finetune(
    model: Annotated[Path, typer.Argument(help="Pruned (student) ONNX model.", show_default=False)],
    teacher: Annotated[Path, typer.Option(help="Original ONNX model whose logits are distilled.")],
    data: Annotated[Path, typer.Option(help=f"Training data: {DATA_KINDS}.")],
    val: Annotated[Path, typer.Option(help="Held-out data (as --data) for accuracy and early stop.")],
    out: Annotated[Path, out_option("Fine-tuned ONNX file to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training data (early stop may end sooner).", min=1)] = 3,
    lr: Annotated[
        float, typer.Option(help="AdamW peak learning rate (cosine decay).", callback=number(above=0))
    ] = 3e-4,
    batch: Annotated[int, typer.Option(help="Training batch size.", min=1)] = 64,
    seed: Annotated[int, typer.Option(help="Seed for shuffling (runs are repeatable).")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    preprocess: PreprocessSpec = None,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Recover accuracy after pruning: distil the teacher's logits into the pruned model.

    Writes OUT (same graph, new weights) and OUT.report.json (accuracy before/after, wall time).
    Example: svtprune finetune pruned.onnx --teacher model.onnx --data train.npz --val val.npz -o tuned.onnx
    """
    from svtprune.jobs.finetune import finetune_file, use_threads

    use_threads(threads)  # first: without torch, one line naming the extra
    from svtprune.recover.train import TrainConfig

    config = TrainConfig(epochs=epochs, lr=lr, batch=batch, seed=seed)
    report = finetune_file(
        pruned=model,
        teacher=teacher,
        data=data,
        val=val,
        out=out,
        config=config,
        force=force,
        progress=not as_json,
        preprocess=preprocess,
    )
    if as_json:
        emit_json(report)
    else:
        print_finetune(report, out)
