"""The finetune job: pruned ONNX + teacher ONNX + data -> fine-tuned ONNX and a report.

Accuracies in the report are measured with ONNX Runtime on the files as written, so they are
what a user running the output sees, not the torch module's view.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from svtprune.checks import load_checked_data, load_checked_model
from svtprune.costs import Started
from svtprune.data import Dataset
from svtprune.data_sources import check_preprocess_used
from svtprune.evaluate import top1
from svtprune.extras import require_torch
from svtprune.graph.io import model_bytes, param_bytes, written_bytes
from svtprune.jobs.options import check_number
from svtprune.outputs import OutputSet
from svtprune.runtime import logits_of, make_session

if TYPE_CHECKING:
    from svtprune.recover.train import TrainConfig


def use_threads(threads: int) -> None:
    """torch's CPU threads for the training (at least one)."""
    require_torch("finetune")
    import torch

    torch.set_num_threads(max(1, threads))


def train_config(epochs: int, lr: float, batch: int, seed: int) -> TrainConfig:
    """The training settings as the torch side takes them (torch loads here, after ``use_threads`` checked it)."""
    from svtprune.recover.train import TrainConfig

    return TrainConfig(epochs=epochs, lr=lr, batch=batch, seed=seed)


def check_config(config: TrainConfig) -> None:
    """Refuse a training configuration that cannot run, naming the field."""
    for name in ("epochs", "batch"):
        check_number(getattr(config, name), name, low=1)
    check_number(config.lr, "lr", low=0, low_open=True)


def _accuracy(logits: np.ndarray, val: Dataset, teacher_val: np.ndarray) -> float:
    """Top-1 on ``val``'s labels, or agreement with the teacher when it has none."""
    return top1(logits, val.y if val.y is not None else teacher_val.argmax(axis=1))


def finetune_file(
    pruned: Path, teacher: Path, data: Path, val: Path, out: Path, config: TrainConfig, force: bool = False,
    progress: bool = True, preprocess: Any = None,
) -> dict:  # fmt: skip
    """Fine-tune ``pruned`` towards ``teacher``; writes ``out`` and ``out.report.json``.

    ``preprocess``: how image folders among ``data`` and ``val`` are decoded (``data_folder.parse_preprocess``).
    """
    started = Started()
    out = Path(out)
    require_torch("finetune")
    check_config(config)
    check_preprocess_used(preprocess, [data, val])
    with OutputSet.claim((out, out.with_suffix(".report.json")), (pruned, teacher, data, val), force) as outputs:
        return finetune_claimed(pruned, teacher, (data, val, preprocess), outputs, config, progress, started)


def finetune_claimed(
    pruned: Path, teacher: Path, sources: tuple[Path, Path, Any], outputs: OutputSet, config: TrainConfig,
    progress: bool, started: Started,
) -> dict:  # fmt: skip
    """The fine-tuning once its two output files are claimed (``finetune_file`` checks and claims)."""
    from svtprune.recover.export import assert_export_agrees, write_back  # torch loads only when fine-tuning runs
    from svtprune.recover.quantized import stored_again, trainable_student
    from svtprune.recover.train import train

    out, report_path = outputs.paths
    student_model, teacher_model = load_checked_model(pruned), load_checked_model(teacher)
    data, val, preprocess = sources  # the training and validation data, and how folders among them decode
    train_data, val_data = (load_checked_data(path, teacher_model, preprocess) for path in (data, val))
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
    original = _accuracy(teacher_val, val_data, teacher_val)
    report = {
        "command": "finetune",
        "output": str(out),
        "metric": "top1" if val_data.y is not None else "agreement",
        "original": {"path": str(teacher), "param_bytes": param_bytes(teacher_model),
                     "file_bytes": os.path.getsize(teacher), "accuracy": original},
        "pruned": {"path": str(pruned), "param_bytes": param_bytes(student_model),
                   "file_bytes": os.path.getsize(pruned), "accuracy": before},
        "compressed": {"param_bytes": param_bytes(tuned), "file_bytes": written_bytes(tuned), "accuracy": after},
        "accuracy_before_finetune": before,
        "accuracy_after_finetune": after,
        "memory_saving": 1 - param_bytes(tuned) / param_bytes(teacher_model),
        "accuracy_drop": original - after,
        "export_max_logit_diff": drift,
        **({"requantized": requantized} if requantized else {}),
        "config": vars(config),
        "training": result.to_dict(),
        **started.cost(),
        "evaluations": [],
    }  # fmt: skip
    outputs.write({out: model_bytes(tuned), report_path: json.dumps(report, indent=2)})
    return report
