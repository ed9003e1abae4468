"""``svtprune finetune``: distil the original's logits into a pruned (or quantized) model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import DATA, EXPERT, FINETUNING
from svtprune.cli.options import DATA_KINDS, Force, Json, PreprocessSpec, number, out_option
from svtprune.cli.render import emit_json, print_finetune


def finetune(
    model: Annotated[Path, typer.Argument(help="Pruned (student) ONNX model.", show_default=False)],
    teacher: Annotated[
        Path, typer.Option(help="Original ONNX model whose logits are distilled.", rich_help_panel=DATA)
    ],
    data: Annotated[Path, typer.Option(help=f"Training data: {DATA_KINDS}.", rich_help_panel=DATA)],
    val: Annotated[
        Path, typer.Option(help="Held-out data (as --data) for accuracy and early stop.", rich_help_panel=DATA)
    ],
    out: Annotated[Path, out_option("Fine-tuned ONNX file to write.")],
    epochs: Annotated[
        int,
        typer.Option(
            help="Passes over the training data (early stop may end sooner).", min=1, rich_help_panel=FINETUNING
        ),
    ] = 3,
    lr: Annotated[
        float,
        typer.Option(
            help="AdamW peak learning rate (cosine decay).", callback=number(above=0), rich_help_panel=FINETUNING
        ),
    ] = 3e-4,
    batch: Annotated[int, typer.Option(help="Training batch size.", min=1, rich_help_panel=FINETUNING)] = 64,
    seed: Annotated[int, typer.Option(help="Seed for shuffling (runs are repeatable).", rich_help_panel=EXPERT)] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.", rich_help_panel=EXPERT)] = 2,
    preprocess: PreprocessSpec = None,
    force: Force = False,
    as_json: Json = False,
) -> None:
    """Recover accuracy after pruning: distil the teacher's logits into the pruned model.

    Writes OUT (same graph, new weights) and OUT.report.json (accuracy before/after, wall time).
    Example: svtprune finetune pruned.onnx --teacher model.onnx --data train.npz --val val.npz -o tuned.onnx
    """
    from svtprune.jobs.finetune import finetune_file, train_config, use_threads

    use_threads(threads)  # first: without torch, one line naming the extra
    config = train_config(epochs=epochs, lr=lr, batch=batch, seed=seed)
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
