"""Accuracy of a model on a dataset, and the eval report (size, latency) built around it.

Sessions, batching and timing live in ``svtprune.runtime``; this module only scores.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from svtprune.costs import Started
from svtprune.data import Dataset
from svtprune.errors import UserError
from svtprune.graph.io import param_bytes
from svtprune.runtime import edge_measures, latency_ms, logits_of, make_session
from svtprune.runtime_layout import fixed_batch


def top1(logits: np.ndarray, target: np.ndarray) -> float:
    """Percent of rows whose argmax equals target (labels, or a reference model's argmax)."""
    return 100.0 * float((logits.argmax(axis=1) == target).mean())


@dataclass
class EvalResult:
    """What ``evaluate`` measured for one model (the ``eval`` report)."""

    accuracy: float
    metric: str  # "top1" against labels, or "agreement" with a reference model
    samples: int
    param_bytes: int
    file_bytes: int | None
    latency_ms_b1: float | None
    latency_ms_b64: float | None
    seconds: float
    latency_ms_b1_1thread: float | None = None  # one intra-op thread (runtime.edge_measures)
    peak_rss_mb: float | None = None  # a fresh process that loads the file and runs batch 1
    peak_rss_mb_runtime_only: float | None = None  # the same process before it loads the file
    images_forwarded: int = 0  # data images run through ONNX Runtime for this result
    # the input's fixed batch (None: any): each latency is of the whole runs of that many images holding its batch
    fixed_batch: int | None = None
    # eval --profile: each layer's share of the batch-1 kernel time (hardware/profile.py); absent from the dict if None
    profile: list[dict] | None = None

    def to_dict(self) -> dict:
        result = asdict(self)
        if result["profile"] is None:
            del result["profile"]
        return result


def evaluate(
    model: onnx.ModelProto | str | Path,
    data: Dataset,
    reference: np.ndarray | None = None,
    latency: bool = True,
    progress: bool = False,
    batch: int | None = None,
) -> EvalResult:
    """Accuracy against labels, or top-1 agreement with ``reference`` logits when unlabelled.

    ``latency=False`` skips every runtime measure: the timings and the fresh process for peak memory."""
    started = Started()
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    file_bytes = os.path.getsize(model) if isinstance(model, str | Path) else None
    session = make_session(proto)
    logits = logits_of(session, data.x, batch, progress)
    if data.y is not None:
        accuracy, metric = top1(logits, data.y), "top1"
    elif reference is not None:
        accuracy, metric = top1(logits, reference.argmax(axis=1)), "agreement"
    else:
        raise UserError("data has no labels ('y'); give a reference model to measure agreement with")
    b1 = latency_ms(session, 1) if latency else None
    b64 = latency_ms(session, 64, repeats=5) if latency else None
    edge = edge_measures(proto if isinstance(model, onnx.ModelProto) else model) if latency else {}
    return EvalResult(
        accuracy,
        metric,
        len(data),
        param_bytes(proto),
        file_bytes,
        b1,
        b64,
        started.seconds(),
        **edge,
        images_forwarded=started.images_forwarded(),
        fixed_batch=fixed_batch(session),
    )
