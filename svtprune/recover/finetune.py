"""Fine-tuning as a step of ``compress``: the searched model in, a recovered model out.

``compress`` owns the data split and the held-out check; this module only checks the user's
training file against the model's input and runs the distillation (``train``) from the
original model's logits, so the search can spend a larger accuracy budget and win it back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from svtprune.checks import check_labels
from svtprune.data import Dataset
from svtprune.data_sources import load_data
from svtprune.errors import UserError
from svtprune.progress import Say
from svtprune.runtime import logits_of


def load_training_data(path: str | Path, like: Dataset, classes: int, epochs: int, preprocess: Any = None) -> Dataset:
    """The ``--finetune-data`` file, checked before the (long) search starts.

    Fails with a one-line UserError when the images do not have the evaluation data's
    C x H x W, when a label is outside the model's classes, or when ``epochs`` < 1.
    """
    if epochs < 1:
        raise UserError(f"must be >= 1, got {epochs}", option="finetune_epochs")
    data = load_data(path, preprocess)
    if data.x.shape[1:] != like.x.shape[1:]:
        raise UserError(
            f"{path}: images are {'x'.join(map(str, data.x.shape[1:]))}, "
            f"the model's data is {'x'.join(map(str, like.x.shape[1:]))}"
        )
    check_labels(data, classes, path)
    return data


def finetune_model(
    student: onnx.ModelProto,
    teacher: ort.InferenceSession,
    data: Dataset,
    val: Dataset,
    epochs: int,
    seed: int = 0,
    lr: float = 3e-4,
    log: Say | None = None,
) -> tuple[onnx.ModelProto, dict]:
    """Distil ``teacher`` into ``student`` on ``data``; ``val`` picks the best epoch.

    Returns the written-back model (same graph, new weights) and a summary for the report.
    ``val`` must not be the held-out data whose accuracy is reported.
    """
    from svtprune.recover.export import assert_export_agrees, write_back  # torch loads only when fine-tuning runs
    from svtprune.recover.quantized import stored_again, trainable_student
    from svtprune.recover.train import TrainConfig, train

    started = time.perf_counter()
    say = log or (lambda _text: None)
    say(f"fine-tuning: teacher logits on {len(data)} training images")
    teacher_train = logits_of(teacher, data.x)
    teacher_val = logits_of(teacher, val.x)
    config = TrainConfig(epochs=epochs, lr=lr, seed=seed)
    student_float, module, thawed = trainable_student(student)  # a quantized student trains on its grids
    result = train(module, data, teacher_train, val, config, teacher_val, progress=False, log=log)
    tuned = write_back(student_float, module)
    drift = assert_export_agrees(tuned, module, val.x[:64])  # before storing: see stored_again
    tuned = stored_again(tuned, thawed)
    summary = {
        "images": len(data),
        "labels": data.y is not None,
        "epochs": epochs,
        "config": vars(config),
        "best_epoch": result.best_epoch,
        "selection_accuracy_before": round(result.initial_accuracy, 3),
        "selection_accuracy_after": round(result.best_accuracy, 3),
        "history": [_rounded(row) for row in result.history],
        "export_max_logit_diff": float(np.float32(drift)),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return tuned, summary


def _rounded(row: dict) -> dict:
    return {key: round(value, 4) if isinstance(value, float) else value for key, value in row.items()}
