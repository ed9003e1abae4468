"""The one place that makes ONNX Runtime sessions, runs them in batches and times runs (graph/taps.py taps).

Numpy, onnx and onnxruntime only (no torch), so running an ONNX file stays fast to start.
Every site that runs a model goes through ``make_session``; the few that need other options
than a user's default session (no graph optimisation, one thread, ORT's own thread count) ask
for them by keyword, so what each site runs is written where it is asked for.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from svtprune.costs import count_data, count_timing
from svtprune.errors import UserError
from svtprune.runtime_layout import as_logits, batch_axis, fixed_batch, logits_layout, padded, unpadded

LATENCY_RUNS = (30, 5)  # timed calls at batch 1 and at batch 64
PROBE = Path(__file__).with_name("runtime_probe.py")  # run as a script in a fresh process (peak_rss_mb)
FLOAT = onnx.TensorProto.FLOAT
DEFAULT_BATCH = 256  # images per ORT run, unless the model's activations make that too much memory
ACTIVATION_BUDGET = 1 << 30  # bytes of activations one batch may hold
# bytes a model produces per image (shape inference, all values) over what ORT holds live at once, measured
# from peak RSS at batch 200: 17 MB / ~3 MB on the reference Spikformer, 211 MB / ~15 MB on a 9.3M spikformer_cifar10
PRODUCED_PER_LIVE = 8


ort.set_default_logger_severity(3)  # graph optimisers log through the default logger, not the session's


def make_session(
    model: onnx.ModelProto | str | Path,
    threads: int | None = None,
    *,
    env_threads: bool = True,
    optimize: bool = True,
    quiet: bool = True,
    matmulnbits_accuracy_level: int | None = None,
    arena: bool = True,
    profile_to: Path | None = None,
) -> ort.InferenceSession:
    """A CPU session as a user would make one (default graph optimisations), quiet.

    SVTPRUNE_THREADS caps ORT's threads when the caller gives none, so that jobs sharing a
    machine (benchmarks side by side, CI) do not oversubscribe its cores; ``env_threads=False``
    leaves ORT's own default instead. ``optimize=False`` disables graph optimisations (every
    node runs as written, so tapped values are the graph's own); ``quiet=False`` keeps ORT's
    default log level; ``matmulnbits_accuracy_level`` sets the accuracy level of the
    MatMulNBits kernels ORT fuses DequantizeLinear+MatMul into (``"0"``: float accuracy).
    ``arena=False`` frees each run's activations when it ends instead of keeping ORT's arena at
    its peak: for sessions run a few times and dropped (20% slower at batch 64 on the reference
    Spikformer, the same at batch 1, so never for sessions that are timed or run often).
    ``profile_to``: a folder where ORT writes its profiler trace (``end_profiling`` names the file)
    and the optimised graph it runs, ``optimized.onnx`` (hardware/profile.py reads both).
    """
    options = ort.SessionOptions()
    if profile_to is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_to) / "ort_profile")
        options.optimized_model_filepath = str(Path(profile_to) / "optimized.onnx")
    if quiet:
        options.log_severity_level = 3
    options.enable_cpu_mem_arena = arena
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if env_threads:
        threads = threads or int(os.environ.get("SVTPRUNE_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    if matmulnbits_accuracy_level is not None:
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", str(matmulnbits_accuracy_level))
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    try:
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
        raise UserError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0]}") from exc
    session.svtprune_batch = batch_for(model)  # read by ``predict`` when its caller gives no batch
    return session


def release_freed_memory() -> None:
    """Give the memory freed so far back to the system (glibc keeps freed pages for reuse).

    A search builds and drops hundreds of sessions, taps and design matrices; glibc keeps what they
    freed, so the resident size climbs towards the sum of their peaks (after the baseline of a 9.3M
    Spikformer: 0.68 GB resident, 0.30 GB once trimmed). Where the C library is not glibc, nothing.
    """
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: no malloc_trim
        pass


def batch_for(model: onnx.ModelProto | str | Path) -> int:
    """Images per run so that one batch's activations stay within ``ACTIVATION_BUDGET``.

    At 256 images a 9.3M-parameter Spikformer at 32x32 needed 3 GB for one batch; the estimate
    comes from the shapes onnx infers (every value's size per image), so it needs no trial run.
    """
    try:
        proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception:  # an unusual graph: the default batch, as before
        return DEFAULT_BATCH
    produced = 0
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims[1:]):
            produced += 4 * int(np.prod([d.dim_value for d in dims[1:]], dtype=np.int64))
    live = max(produced // PRODUCED_PER_LIVE, 1)
    return int(min(DEFAULT_BATCH, max(1, ACTIVATION_BUDGET // live)))


def input_shape(session: ort.InferenceSession) -> list[int | None]:
    """The first input's dims, symbolic ones (the batch) as None."""
    return [d if isinstance(d, int) else None for d in session.get_inputs()[0].shape]


def check_data(session: ort.InferenceSession, x: np.ndarray) -> None:
    """Wrong image size or channel count is the user's mistake: say which shapes differ."""
    check_shape(input_shape(session), x)


def check_shape(expected: list[int | None], x: np.ndarray) -> None:
    """``x`` must have the input's rank and every fixed dim but the first (None: any size).

    The first is the number of images, any number even where the graph fixes its batch: ``batches``
    runs such a graph that many images at a time."""
    actual = list(x.shape)
    expected = [None, *expected[1:]]
    if len(expected) != len(actual) or any(e is not None and e != a for e, a in zip(expected, actual, strict=False)):
        shown = ["N" if e is None else e for e in expected]
        raise UserError(f"data has shape {tuple(actual)} but the model expects {tuple(shown)}")


def batches(
    session: ort.InferenceSession, x: np.ndarray, batch: int, outputs: list[str], progress: bool = False
) -> Iterator[dict[str, np.ndarray]]:
    """The requested outputs of each batch of ``x`` in turn, for callers that reduce as they go.

    A graph that fixes its batch runs that many images at a time whatever ``batch`` asks: its last
    chunk is padded with copies of its own images, and the padding's rows are dropped from every
    output where the batch can be found (``runtime_layout.unpadded``)."""
    feed_name = session.get_inputs()[0].name
    fixed = fixed_batch(session)
    batch = fixed or batch
    axes = {name: batch_axis(session, name) for name in outputs}
    for start in _progress(range(0, len(x), batch), progress, "evaluating"):
        part = x[start : start + batch]
        feed = padded(part, fixed) if fixed else part
        values = dict(zip(outputs, session.run(outputs, {feed_name: feed}), strict=True))
        count_data(len(part))
        if len(feed) > len(part):
            values = {name: unpadded(value, len(part), len(feed), axes[name]) for name, value in values.items()}
        yield values


def predict(
    session: ort.InferenceSession,
    x: np.ndarray,
    batch: int | None = None,
    outputs: list[str] | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run in batches (default: the session's memory-bounded size); returns every requested output concatenated."""
    check_data(session, x)
    batch = batch or getattr(session, "svtprune_batch", DEFAULT_BATCH)
    names = outputs or [o.name for o in session.get_outputs()]
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for values in batches(session, x, batch, names, progress):
        for name in names:
            chunks[name].append(values[name])
    return {n: np.concatenate(v, axis=batch_axis(session, n)) for n, v in chunks.items()}


def logits_of(
    session: ort.InferenceSession, x: np.ndarray, batch: int | None = None, progress: bool = False
) -> np.ndarray:
    """The first output (the logits) for every row of ``x``, ``[N, classes]`` as the user scores them.

    A raw spikingjelly output ``[T, N, classes]`` is averaged over T; any other shape is refused
    before anything runs (``runtime_layout.logits_layout``)."""
    logits_layout(session)
    first = session.get_outputs()[0].name
    return as_logits(session, predict(session, x, batch, [first], progress)[first])


def timed_runs_ms(
    session: ort.InferenceSession, feeds: dict[str, np.ndarray], repeats: int, warm_up: bool = True
) -> list[float]:
    """Wall time (ms) of each of ``repeats`` calls on ``feeds``, after a warm-up call (unless ``warm_up`` is off)."""
    if warm_up:
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(1000 * (time.perf_counter() - start))
    first = next(iter(feeds.values()), None)
    count_timing((repeats + warm_up) * (len(first) if first is not None and first.ndim else 1))
    return times


def run_times_ms(session: ort.InferenceSession, batch: int, repeats: int, warm_up: bool = True) -> list[float]:
    """Wall time of each of ``repeats`` calls at this batch size (seeded random images), after a warm-up call.

    A batch larger than the session's memory-bounded one (``batch_for``) is timed as consecutive runs
    of that size, the time for all ``batch`` images: one batch-64 call of a 16.8M-parameter Spikformer
    at 224 px took ``eval`` to 5.7 GB. On models where 64 images fit (the reference: 256) nothing changes.
    A graph that fixes its batch runs only that many images at once: ``batch`` images take as many of
    its runs as hold them (batch 1 on a batch-2 graph: one run; batch 64 on a batch-1 graph: 64 runs).
    """
    fixed = fixed_batch(session)
    if fixed:
        runs = -(-batch // fixed)
        shape = [fixed if d is None else d for d in input_shape(session)]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        return [runs * t for t in timed_runs_ms(session, {session.get_inputs()[0].name: x}, repeats, warm_up)]
    limit = getattr(session, "svtprune_batch", DEFAULT_BATCH)
    if batch > limit:
        whole, rest = divmod(batch, limit)
        full = run_times_ms(session, limit, repeats, warm_up)
        tail = run_times_ms(session, rest, repeats, warm_up) if rest else [0.0] * repeats
        return [whole * a + b for a, b in zip(full, tail, strict=True)]
    shape = [batch if d is None else d for d in input_shape(session)]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return timed_runs_ms(session, {session.get_inputs()[0].name: x}, repeats, warm_up)


def latency_ms(session: ort.InferenceSession, batch: int, repeats: int = 10, fastest: bool = False) -> float:
    """Median (or with ``fastest`` the shortest) wall time of one call at this batch size, after a warm-up call.

    The shortest run is the one other processes disturbed least: a search comparing candidates
    on a shared machine ranks them by it; reports quote the median a user would see.
    """
    times = run_times_ms(session, batch, repeats)
    return min(times) if fastest else statistics.median(times)


def timed_pair(
    first: ort.InferenceSession, second: ort.InferenceSession
) -> tuple[tuple[tuple[float, float], tuple[float, float]], tuple[tuple[float, float], tuple[float, float]]]:
    """Median and fastest ms of both sessions at batch 1 and 64, their calls interleaved after one warm-up each.

    Interleaved, a load that comes and goes on a shared machine touches both alike (issue 30: the same file
    measured 1.32x in one run and 1.01x in another when the two were timed one after the other). The order
    alternates (A B, then B A): a call right after another runs warm, and always going second read the
    reference SDT 1.01-1.035x faster than itself."""
    times: list[dict[int, list[float]]] = [{}, {}]
    for batch, repeats in zip((1, 64), LATENCY_RUNS, strict=True):
        for i, session in enumerate((first, second)):
            times[i][batch] = run_times_ms(session, batch, 0)  # the warm-up call alone
        for repeat in range(repeats):
            for i in (0, 1) if repeat % 2 == 0 else (1, 0):
                times[i][batch] += run_times_ms((first, second)[i], batch, 1, warm_up=False)
    return tuple(  # type: ignore[return-value]
        ((statistics.median(t[1]), statistics.median(t[64])), (min(t[1]), min(t[64]))) for t in times
    )


def balanced_speedup(sessions: list[ort.InferenceSession], batch: int, rounds: int) -> float:
    """Median over rounds of the first session's time / the second's, each round timing first, second, second, first.

    Calls alternated one for one (A B A B ...) favour the second model: the reference SDT timed against
    itself read 1.04-1.11x at batch 1 that way (a call right after another runs warm); timed A B B A it
    read 0.98-1.0x, so a ratio above 1 is the model's, not its slot's. Exact rewrites (the stem run once,
    folded norms) are kept or not on this ratio."""
    for session in sessions:
        run_times_ms(session, batch, 0)  # the warm-up call alone
    ratios = []
    for _ in range(rounds):
        spent = [0.0, 0.0]
        for i in (0, 1, 1, 0):
            spent[i] += run_times_ms(sessions[i], batch, 1, warm_up=False)[0]
        ratios.append(spent[0] / spent[1])
    return float(statistics.median(ratios))


class PairedTiming:
    """Times models against one reference model, calls interleaved, so a load that comes and goes cancels out.

    A candidate's latency is the reference's own measurement scaled by the paired ratio of the two:
    the speedup a search reads off it is the ratio measured call against call, not two timings taken
    minutes apart (issue 30: one latency search reached 1.32x in one run and 1.01x in another)."""

    def __init__(self, reference: onnx.ModelProto, reference_ms: tuple[float, float]) -> None:
        self.reference, self.reference_ms = reference, reference_ms
        self.session: ort.InferenceSession | None = None

    def latency(self, model: onnx.ModelProto) -> tuple[float, float]:
        """ms at batch 1 and 64, as ``reference_ms`` times the fastest-call ratio of ``model`` to the reference."""
        if self.session is None:
            self.session = make_session(self.reference)
        (_, reference_fast), (_, model_fast) = timed_pair(self.session, make_session(model))
        return tuple(ms * m / r for ms, m, r in zip(self.reference_ms, model_fast, reference_fast, strict=True))  # type: ignore[return-value]


def measured_latency(model: onnx.ModelProto) -> tuple[float, float]:
    """ORT CPU latency in ms at batch 1 and 64, fastest of several runs, as the user's session runs it.

    Measured rather than predicted: the fitted per-op model (hardware/latency.py) misses whole
    pruned models by a median 2.5-3.4% but up to 14%, as much as the steps a search tells apart.
    """
    session = make_session(model)
    return latency_ms(session, 1, LATENCY_RUNS[0], fastest=True), latency_ms(session, 64, LATENCY_RUNS[1], fastest=True)


def single_thread_latency_ms(model: onnx.ModelProto | str | Path) -> float:
    """Median batch-1 wall time (ms) on one intra-op thread: what one core of a phone or a board gives the model."""
    return latency_ms(make_session(model, threads=1), 1, LATENCY_RUNS[0])


def peak_rss_mb(model: onnx.ModelProto | bytes | str | Path) -> tuple[float, float]:
    """Peak resident MiB of a fresh process that loads ``model`` and runs batch 1 on one thread, and of the
    same process before it loads the model (interpreter, numpy and onnxruntime): the difference is the model's.

    A fresh process (runtime_probe.py), since this one's peak is whatever the job held before; a path
    is loaded as it is (an .ort file too), a model or its bytes from a temporary .onnx file.
    """
    with tempfile.TemporaryDirectory(prefix="svtprune-probe-") as folder:
        if isinstance(model, str | Path):
            path = Path(model)
        else:
            path = Path(folder) / "model.onnx"
            path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
        run = subprocess.run(
            [sys.executable, "-P", str(PROBE), str(path)], capture_output=True, text=True, timeout=600, check=False
        )
    if run.returncode != 0:
        reason = (run.stderr.strip().splitlines() or [f"exit code {run.returncode}"])[-1]
        raise UserError(f"ONNX Runtime cannot run the model in a fresh process: {reason}")
    peaks = json.loads(run.stdout.strip().splitlines()[-1])
    return round(peaks["peak_rss_mb"], 1), round(peaks["peak_rss_mb_runtime_only"], 1)


def edge_measures(model: onnx.ModelProto | bytes | str | Path) -> dict[str, float]:
    """Single-thread batch-1 latency and peak memory (report keys), for devices with one core and little RAM."""
    peak, runtime_only = peak_rss_mb(model)
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else model
    return {
        "latency_ms_b1_1thread": round(single_thread_latency_ms(proto), 3),
        "peak_rss_mb": peak,
        "peak_rss_mb_runtime_only": runtime_only,
    }


def _progress(items: range, enabled: bool, label: str) -> Iterable[int]:
    """``items``, with a progress bar on stderr when enabled (rich loads only then)."""
    if not enabled:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=label, transient=True, console=Console(stderr=True))
