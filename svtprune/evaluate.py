"""The one place that runs models on ONNX Runtime: sessions, batching, accuracy, latency.

Numpy and onnxruntime only (no torch), so evaluating an ONNX file stays fast to start.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from svtprune.data import Dataset
from svtprune.errors import UserError
from svtprune.graph.io import param_bytes


def make_session(model: onnx.ModelProto | str | Path, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session as a user would make one (default graph optimisations), quiet.

    SVTPRUNE_THREADS caps ORT's threads when the caller gives none, so that jobs sharing a
    machine (benchmarks side by side, CI) do not oversubscribe its cores.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    threads = threads or int(os.environ.get("SVTPRUNE_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise UserError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc


def input_shape(session: ort.InferenceSession) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in session.get_inputs()[0].shape]


def check_data(session: ort.InferenceSession, x: np.ndarray) -> None:
    """Wrong image size or channel count is the user's mistake: say which shapes differ."""
    expected = input_shape(session)
    actual = list(x.shape)
    if len(expected) != len(actual) or any(e is not None and e != a for e, a in zip(expected, actual, strict=False)):
        shown = ["N" if e is None else e for e in expected]
        raise UserError(f"data has shape {tuple(actual)} but the model expects {tuple(shown)}")


def predict(
    session: ort.InferenceSession,
    x: np.ndarray,
    batch: int = 256,
    outputs: list[str] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run in batches; returns every requested output (default: all) concatenated."""
    check_data(session, x)
    names = outputs or [o.name for o in session.get_outputs()]
    feed_name = session.get_inputs()[0].name
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    starts = range(0, len(x), batch)
    for start in _progress(starts, progress, "evaluating"):
        values = session.run(names, {feed_name: x[start : start + batch]})
        for name, value in zip(names, values, strict=True):
            chunks[name].append(value)
    return {n: np.concatenate(v) for n, v in chunks.items()}


def logits_of(session: ort.InferenceSession, x: np.ndarray, batch: int = 256, progress: bool = False) -> np.ndarray:
    first = session.get_outputs()[0].name
    return predict(session, x, batch, [first], progress)[first]


def top1(logits: np.ndarray, target: np.ndarray) -> float:
    """Percent of rows whose argmax equals target (labels, or a reference model's argmax)."""
    return 100.0 * float((logits.argmax(axis=1) == target).mean())


def latency_ms(session: ort.InferenceSession, batch: int, repeats: int = 10, fastest: bool = False) -> float:
    """Median (or with ``fastest`` the shortest) wall time of one call at this batch size, after a warm-up call.

    The shortest run is the one other processes disturbed least: a search comparing candidates
    on a shared machine ranks them by it; reports quote the median a user would see.
    """
    times = run_times_ms(session, batch, repeats)
    return min(times) if fastest else statistics.median(times)


def run_times_ms(session: ort.InferenceSession, batch: int, repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` calls at this batch size, after a warm-up call."""
    shape = [batch if d is None else d for d in input_shape(session)]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feed = {session.get_inputs()[0].name: x}
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(1000 * (time.perf_counter() - start))
    return times


@dataclass
class EvalResult:
    accuracy: float
    metric: str  # "top1" against labels, or "agreement" with a reference model
    samples: int
    param_bytes: int
    file_bytes: int | None
    latency_ms_b1: float | None
    latency_ms_b64: float | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(
    model: onnx.ModelProto | str | Path,
    data: Dataset,
    reference: np.ndarray | None = None,
    latency: bool = True,
    progress: bool = False,
    batch: int = 256,
) -> EvalResult:
    """Accuracy against labels, or top-1 agreement with ``reference`` logits when unlabelled."""
    started = time.perf_counter()
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
    return EvalResult(
        accuracy, metric, len(data), param_bytes(proto), file_bytes, b1, b64, time.perf_counter() - started
    )


def _progress(items: range, enabled: bool, label: str):  # noqa: ANN202
    if not enabled:
        return items
    from rich.progress import track

    return track(items, description=label, transient=True, console=_stderr_console())


def _stderr_console():  # noqa: ANN202
    from rich.console import Console

    return Console(stderr=True)
