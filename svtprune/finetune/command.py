"""``svtprune finetune``: pruned ONNX + teacher ONNX + data -> fine-tuned ONNX and a report.

Accuracies in the report are measured with ONNX Runtime on the files as written, so they are
what a user running the output sees, not the torch module's view.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from svtprune.data import Dataset, load_npz
from svtprune.errors import UserError
from svtprune.evaluate import top1
from svtprune.graph.io import load_model, param_bytes, save_model, write_text_atomic
from svtprune.runtime import logits_of, make_session

if TYPE_CHECKING:
    from svtprune.recover.train import TrainConfig


def _accuracy(logits: np.ndarray, val: Dataset, teacher_val: np.ndarray) -> float:
    return top1(logits, val.y if val.y is not None else teacher_val.argmax(axis=1))


def finetune_file(
    pruned: Path, teacher: Path, data: Path, val: Path, out: Path, config: TrainConfig, force: bool = False,
    progress: bool = True,
) -> dict:  # fmt: skip
    """Fine-tune ``pruned`` towards ``teacher``; writes ``out`` and ``out.report.json``."""
    from svtprune.recover.export import assert_export_agrees, write_back  # torch loads only when fine-tuning runs
    from svtprune.recover.quantized import stored_again, trainable_student
    from svtprune.recover.train import train

    started = time.perf_counter()
    out = Path(out)
    report_path = out.with_suffix(".report.json")
    for path in (out, report_path):
        if path.exists() and not force:
            raise UserError(f"{path} already exists; pass --force to overwrite it")
    if config.epochs < 1 or config.lr <= 0 or config.batch < 1:
        raise UserError("--epochs and --batch must be >= 1 and --lr > 0")
    student_model, teacher_model = load_model(pruned), load_model(teacher)
    train_data, val_data = load_npz(data), load_npz(val)
    teacher_session, student_session = make_session(teacher_model), make_session(student_model)
    teacher_train = logits_of(teacher_session, train_data.x)
    teacher_val = logits_of(teacher_session, val_data.x)
    before = _accuracy(logits_of(student_session, val_data.x), val_data, teacher_val)
    # a quantized student trains on its stored grids and is stored on them again (quantization-aware)
    student_float, module, thawed = trainable_student(student_model)
    result = train(module, train_data, teacher_train, val_data, config, teacher_val, progress)
    tuned = write_back(student_float, module)
    drift = assert_export_agrees(tuned, module, val_data.x[:64])  # before storing: see stored_again
    tuned = stored_again(tuned, thawed)
    requantized = None if thawed is None else {"bits": thawed.bits, "scheme": vars(thawed.scheme)}
    after = _accuracy(logits_of(make_session(tuned), val_data.x), val_data, teacher_val)
    save_model(tuned, out, force=True)
    original = _accuracy(teacher_val, val_data, teacher_val)
    report = {
        "command": "finetune",
        "output": str(out),
        "metric": "top1" if val_data.y is not None else "agreement",
        "original": {"path": str(teacher), "param_bytes": param_bytes(teacher_model),
                     "file_bytes": os.path.getsize(teacher), "accuracy": original},
        "pruned": {"path": str(pruned), "param_bytes": param_bytes(student_model),
                   "file_bytes": os.path.getsize(pruned), "accuracy": before},
        "compressed": {"param_bytes": param_bytes(tuned), "file_bytes": os.path.getsize(out), "accuracy": after},
        "accuracy_before_finetune": before,
        "accuracy_after_finetune": after,
        "memory_saving": 1 - param_bytes(tuned) / param_bytes(teacher_model),
        "accuracy_drop": original - after,
        "export_max_logit_diff": drift,
        **({"requantized": requantized} if requantized else {}),
        "config": vars(config),
        "training": result.to_dict(),
        "wall_seconds": time.perf_counter() - started,
        "evaluations": [],
    }  # fmt: skip
    write_text_atomic(report_path, json.dumps(report, indent=2))
    return report


def finetune_command(
    model: Annotated[Path, typer.Argument(help="Pruned (student) ONNX model.", show_default=False)],
    teacher: Annotated[Path, typer.Option(help="Original ONNX model whose logits are distilled.")],
    data: Annotated[Path, typer.Option(help="Training .npz (x, optional y).")],
    val: Annotated[Path, typer.Option(help="Held-out .npz for accuracy and early stop.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Fine-tuned ONNX file to write.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training data (early stop may end sooner).")] = 3,
    lr: Annotated[float, typer.Option(help="AdamW peak learning rate (cosine decay).")] = 3e-4,
    batch: Annotated[int, typer.Option(help="Training batch size.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed for shuffling (runs are repeatable).")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")] = False,
) -> None:
    """Recover accuracy after pruning: distil the teacher's logits into the pruned model.

    Writes OUT (same graph, new weights) and OUT.report.json (accuracy before/after, wall time).
    Example: svtprune finetune pruned.onnx --teacher model.onnx --data train.npz --val val.npz -o tuned.onnx
    """
    import torch

    from svtprune.recover.train import TrainConfig

    torch.set_num_threads(max(1, threads))
    config = TrainConfig(epochs=epochs, lr=lr, batch=batch, seed=seed)
    report = finetune_file(model, teacher, data, val, out, config, force, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(
        f"{out}: accuracy {report['accuracy_before_finetune']:.2f}% -> {report['accuracy_after_finetune']:.2f}% "
        f"(original {report['original']['accuracy']:.2f}%, memory saved {100 * report['memory_saving']:.1f}%, "
        f"{report['wall_seconds']:.0f} s)"
    )


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_command)
