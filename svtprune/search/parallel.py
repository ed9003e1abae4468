"""Candidates measured side by side: in this process, in a pool of processes, or on Ray actors.

A policy hands a ``CandidatePool`` candidates that do not depend on each other (one wave of
the sensitivity scan) and gets back the records ``PruneExecutor.measure`` would have given one
by one, in the same order, appended to the search executor's records in that order. The
measurement itself is the executor's, untouched: each worker holds its own executor, built once
from a ``Recipe`` (the search executor's settings, the judged images as a memory-mapped ``.npy``
for processes or in Ray's object store), and runs ONNX Runtime on one thread, so N workers use
N cores. A candidate measured on the same images gives the same record in any process, so a
search takes the same steps whatever the backend (tests/test_parallel.py checks it).

What differs from the serial run: the images forwarded (each worker computes the calibration
targets and its own cached fits), counted in the workers and added to this process's totals;
and the time limit, checked here when a wave is handed out rather than before each candidate.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, fields
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from svtprune.costs import FORWARDED, Forwarded, add_forwarded, counting, phase
from svtprune.data import Dataset
from svtprune.errors import UserError
from svtprune.search.prune_executor import PruneExecutor
from svtprune.search.records import Measurement

Job = tuple[dict[str, float], str, dict[str, Any]]  # ratios, label, measure's keyword arguments
# what stays with the search's own executor: its records, its time limit and the group ranks only it orders by
LOCAL_FIELDS = {"data", "records", "deadline", "not_measured", "latency_rank", "energy_rank"}
# a worker's threads: one for ORT (make_session reads it), one for numpy's BLAS (read when it loads)
WORKER_ENVIRON = {"SVTPRUNE_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COPY_ROWS = 256  # images copied at a time into the workers' memory-mapped file


@dataclass
class Recipe:
    """What a worker builds its executor from: the search executor's settings and the images it judges on."""

    settings: dict[str, Any]  # PruneExecutor's public fields (caches and records stay empty)
    images: str | np.ndarray  # an .npy file each worker memory-maps, or the array (Ray's object store)
    labels: np.ndarray | None

    @classmethod
    def of(cls, executor: PruneExecutor, images: str | np.ndarray) -> Recipe:
        names = [f.name for f in fields(PruneExecutor) if f.init and not f.name.startswith("_")]
        settings = {name: getattr(executor, name) for name in names if name not in LOCAL_FIELDS}
        return cls(settings, images, executor.data.y)

    def build(self) -> PruneExecutor:
        x = np.load(self.images, mmap_mode="r") if isinstance(self.images, str) else self.images
        return PruneExecutor(data=Dataset(x, self.labels), **self.settings)


class Worker:
    """One executor, built once, measuring the candidates it is sent on one ONNX Runtime thread."""

    def __init__(self, recipe: Recipe) -> None:
        os.environ["SVTPRUNE_THREADS"] = "1"
        self.executor = recipe.build()

    def measure(self, job: Job, phase_name: str) -> tuple[Measurement, Forwarded]:
        """The record and the images forwarded for it (under the search's phase, as the serial run counts them)."""
        ratios, label, options = job
        with counting() as counts, phase(phase_name):
            record = self.executor.measure(ratios, label, **options)
        self.executor.records.clear()  # the search executor keeps the records
        return record, counts


_WORKER: Worker | None = None  # this process's worker, in a pool's process


def _start(recipe: Recipe) -> None:
    global _WORKER
    _WORKER = Worker(recipe)


def _measure(job: Job, phase_name: str) -> tuple[Measurement, Forwarded]:
    assert _WORKER is not None, "started by the pool's initializer"
    return _WORKER.measure(job, phase_name)


def _started() -> None:
    """A no-op task: submitting one per worker starts them all at once."""


class Processes:
    """Workers in a process pool on this machine ('spawn': nothing of the search process leaks in)."""

    def __init__(self, executor: PruneExecutor, workers: int) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="svtprune-workers-"))
        images = str(self.folder / "images.npy")
        write_npy(executor.data.x, images)
        recipe = Recipe.of(executor, images)
        with environ(WORKER_ENVIRON):  # inherited from the start, before a worker loads numpy's BLAS
            self.pool = ProcessPoolExecutor(workers, get_context("spawn"), _start, (recipe,))
            for _ in range(workers):  # each submit without an idle worker spawns one, now, in this environment
                self.pool.submit(_started)

    def map(self, jobs: list[Job], phase_name: str) -> list[tuple[Measurement, Forwarded]]:
        return list(self.pool.map(_measure, jobs, [phase_name] * len(jobs)))

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        shutil.rmtree(self.folder, ignore_errors=True)


class RayActors:
    """Workers as Ray actors (one CPU each) on the cluster at ``address``, or on a local Ray instance."""

    def __init__(self, executor: PruneExecutor, workers: int, address: str | None) -> None:
        import ray
        from ray.util import ActorPool

        self.ray, self.started = ray, not ray.is_initialized()
        if self.started:
            connect(ray, address, workers)
        recipe = ray.put(Recipe.of(executor, np.ascontiguousarray(executor.data.x[:])))
        actor = ray.remote(num_cpus=1)(Worker)
        self.actors = [actor.remote(recipe) for _ in range(workers)]
        self.pool = ActorPool(self.actors)

    def map(self, jobs: list[Job], phase_name: str) -> list[tuple[Measurement, Forwarded]]:
        return list(self.pool.map(lambda actor, job: actor.measure.remote(job, phase_name), jobs))

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self.started:  # a Ray the caller started (a test, a notebook) stays up
            self.ray.shutdown()


def connect(ray: Any, address: str | None, workers: int) -> None:
    """``ray.init`` on the cluster at ``address`` (``ray://head:10001``), or a local instance of ``workers`` CPUs."""
    try:
        if address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        else:
            ray.init(address=address, logging_level="ERROR")
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError, its own types
        where = address or "a local instance"
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot start Ray on {where}: {line}", "ray_address" if address else "executor") from exc


class CandidatePool:
    """Measures lists of candidates that do not depend on each other: serially, or spread over workers.

    Workers start at the first list a parallel pool is given (a search that never has one starts
    none) and stop at ``close`` (or the end of a ``with`` block).
    """

    def __init__(
        self, executor: PruneExecutor, workers: int = 1, backend: str = "process", address: str | None = None
    ) -> None:
        self.executor, self.workers, self.backend, self.address = executor, workers, backend, address
        self.engine: Processes | RayActors | None = None

    @property
    def parallel(self) -> bool:
        return self.workers > 1 or self.backend == "ray"

    def measure_many(self, jobs: list[Job]) -> list[Measurement]:
        """Each job's record in input order, as ``executor.measure`` gives and records them one by one."""
        if not self.parallel:
            return [self.executor.measure(ratios, label, **options) for ratios, label, options in jobs]
        late = [self.executor.past_deadline(ratios, label) for ratios, label, _ in jobs]  # not sent, not recorded
        sent = [job for job, placeholder in zip(jobs, late, strict=True) if placeholder is None]
        answers = iter(self._engine().map(sent, FORWARDED.phase) if sent else [])
        records = []
        for (ratios, _label, options), placeholder in zip(jobs, late, strict=True):
            if placeholder is not None:
                records.append(placeholder)
                continue
            record, counts = next(answers)
            add_forwarded(counts)
            self.executor.records.append(record)
            self.executor.remember(ratios, options.get("screen", False), options.get("test"), record)
            records.append(record)
        return records

    def _engine(self) -> Processes | RayActors:
        if self.engine is None:
            if self.backend == "ray":
                self.engine = RayActors(self.executor, self.workers, self.address)
            else:
                self.engine = Processes(self.executor, self.workers)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def __enter__(self) -> CandidatePool:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def write_npy(x: Any, path: str) -> None:
    """``x`` (an array, or images read on access) into an ``.npy`` file, a few rows at a time."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=tuple(x.shape))
    for start in range(0, len(x), COPY_ROWS):
        out[start : start + COPY_ROWS] = x[start : start + COPY_ROWS]
    out.flush()
    del out


@contextlib.contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` inside (for the processes started there), as it was after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
