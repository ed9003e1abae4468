"""Fine-tuning loop: distillation from the teacher's logits, plus labels when present.

The teacher's logits are computed once with ONNX Runtime (the teacher is never converted),
so one epoch costs only the student's forward and backward. AdamW with a cosine decay,
seed-deterministic shuffling, held-out accuracy after every epoch, early stop on it, and the
best epoch's weights kept (an epoch that hurts is never what gets exported).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from svtprune.data import Dataset
from svtprune.progress import Say
from svtprune.recover.convert import OnnxModule
from svtprune.recover.export import torch_logits


@dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 3e-4
    batch: int = 64
    seed: int = 0
    temperature: float = 2.0  # distillation softens both distributions by this
    alpha: float = 0.5  # weight of distillation vs cross-entropy when labels exist
    weight_decay: float = 0.0  # decay would drift membranes relative to fixed thresholds
    patience: int = 2  # epochs without a held-out gain before stopping
    max_steps: int | None = None  # per epoch; for smoke tests


@dataclass
class TrainResult:
    history: list[dict] = field(default_factory=list)  # per epoch: loss, distill, accuracy, seconds
    best_epoch: int = 0  # 0: the starting weights were best (nothing learned is kept)
    initial_accuracy: float = 0.0
    best_accuracy: float = 0.0  # held-out, as measured by the module (equal to ORT's)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's KL(teacher || student) on temperature-softened logits, scaled by T^2."""
    log_p = F.log_softmax(student / temperature, dim=1)
    q = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


def held_out(module: OnnxModule, val: Dataset, teacher_val: np.ndarray | None, temperature: float) -> tuple:
    """(top-1 against labels, or agreement with the teacher when unlabelled; distillation loss)."""
    logits = torch_logits(module, val.x)
    target = val.y if val.y is not None else teacher_val.argmax(axis=1)
    accuracy = 100.0 * float((logits.argmax(axis=1) == target).mean())
    if teacher_val is None:
        return accuracy, 0.0
    return accuracy, float(distill_loss(torch.from_numpy(logits), torch.from_numpy(teacher_val), temperature))


def train(
    module: OnnxModule,
    data: Dataset,
    teacher_logits: np.ndarray,
    val: Dataset,
    config: TrainConfig,
    teacher_val: np.ndarray | None = None,
    progress: bool = True,
    log: Say | None = None,
) -> TrainResult:
    """Fine-tune ``module`` in place; on return it holds the best epoch's weights.

    ``log`` receives one-line status texts (every 10 steps and per epoch) for callers that
    already own the terminal (``compress`` runs inside a status spinner, where a second live
    progress bar is not allowed).
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    steps = math.ceil(len(data) / config.batch)
    if config.max_steps:
        steps = min(steps, config.max_steps)
    total = max(1, steps * config.epochs)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    best = held_out(module, val, teacher_val, config.temperature)
    result = TrainResult(initial_accuracy=best[0], best_accuracy=best[0])
    best_state = _snapshot(module)
    x_all, t_all = torch.from_numpy(np.asarray(data.x)), torch.from_numpy(teacher_logits.astype(np.float32))
    y_all = None if data.y is None else torch.from_numpy(data.y)
    stale = 0
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        order = torch.randperm(len(data), generator=generator)
        with _bar(progress, f"epoch {epoch}/{config.epochs}", steps) as advance:
            sums = _epoch(module, optimizer, schedule, (x_all, t_all, y_all), order, steps, config, epoch, advance, log)
        score = held_out(module, val, teacher_val, config.temperature)
        row = {key: value / steps for key, value in sums.items()}
        row.update(epoch=epoch, accuracy=score[0], val_distill=score[1], seconds=time.perf_counter() - epoch_start)
        result.history.append(row)
        summary = f"epoch {epoch}: loss {row['loss']:.4f} distill {row['distill']:.4f} held-out {score[0]:.2f}%"
        _say(progress, summary)
        if log is not None:
            log(f"fine-tuning {summary}")
        if (score[0], -score[1]) > (best[0], -best[1]):  # accuracy first, ties go to the lower loss
            best, result.best_accuracy, result.best_epoch, best_state, stale = (
                score,
                score[0],
                epoch,
                _snapshot(module),
                0,
            )
        else:
            stale += 1
            if stale >= config.patience and epoch < config.epochs:
                _say(progress, f"early stop: no held-out gain for {stale} epoch(s)")
                break
    module.load_state_dict(best_state, strict=False)
    result.seconds = time.perf_counter() - started
    return result


def _epoch(
    module: OnnxModule,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    tensors: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    order: torch.Tensor,
    steps: int,
    config: TrainConfig,
    epoch: int,
    advance: Say,
    log: Say | None,
) -> dict[str, float]:
    """One pass over ``steps`` batches in ``order``: summed loss and distillation loss."""
    x_all, t_all, y_all = tensors
    sums = {"loss": 0.0, "distill": 0.0}
    for step in range(steps):
        index = order[step * config.batch : (step + 1) * config.batch]
        loss, distill = _step(module, optimizer, x_all[index], t_all[index], _pick(y_all, index), config)
        schedule.step()
        sums["loss"] += loss
        sums["distill"] += distill
        advance(f"loss {sums['loss'] / (step + 1):.4f}")
        if log is not None and (step % 10 == 0 or step == steps - 1):
            log(f"fine-tuning epoch {epoch}/{config.epochs}: step {step + 1}/{steps}, "
                f"loss {sums['loss'] / (step + 1):.4f}")  # fmt: skip
    return sums


def _step(
    module: OnnxModule,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor | None,
    config: TrainConfig,
) -> tuple[float, float]:
    """One optimiser step on a batch: distillation, mixed with cross-entropy when labels exist."""
    module.train()
    optimizer.zero_grad(set_to_none=True)
    logits = module(x)
    distill = distill_loss(logits, teacher, config.temperature)
    loss = distill
    if labels is not None:
        loss = config.alpha * distill + (1 - config.alpha) * F.cross_entropy(logits, labels)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), float(distill.detach())


def _pick(y: torch.Tensor | None, index: torch.Tensor) -> torch.Tensor | None:
    return None if y is None else y[index]


def _snapshot(module: OnnxModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _say(enabled: bool, text: str) -> None:
    if enabled:
        from rich.console import Console

        Console(stderr=True).print(text)


class _bar:
    """A rich progress bar on stderr (stdout stays clean for --json), or nothing."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda text: None
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(*Progress.get_default_columns(), console=Console(stderr=True), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.label, total=self.total)
        return lambda text: self.progress.update(task, advance=1, description=f"{self.label} {text}")

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()
