"""Parallel candidate evaluation: the same search, step for step, serially, in a process pool and on Ray.

Oracle: the serial run itself. A pool only changes where candidates are measured, so the
result, the curves and every record (label, accuracy, bytes, images, verdict) must be equal,
in the same order, and the images counted outside the re-fit equal too (they are the images
each candidate was scored on, now forwarded in the workers).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from svtprune.costs import FORWARDED, Started
from svtprune.data import Dataset
from svtprune.graph.analysis import analyze
from svtprune.importance import group_scores
from svtprune.runtime import logits_of, make_session
from svtprune.search.budget import Budget
from svtprune.search.parallel import CandidatePool
from svtprune.search.policies import SCAN_RATES, _robustness, primesvt, psvit
from svtprune.search.prune_executor import PruneExecutor
from tests.test_compress import StubExecutor, sizes

JUDGED, CALIBRATION = 256, 32


@pytest.fixture(scope="module")
def problem(small_models: dict) -> tuple:
    """The random-init Spikformer, 256 judged noise images (targets: its own predictions), 32 for the re-fit."""
    analysis = analyze(small_models["spikformer"])
    x = np.random.default_rng(3).standard_normal((CALIBRATION + JUDGED, 1, 28, 28)).astype(np.float32)
    logits = logits_of(make_session(analysis.model), x)
    return analysis, x, logits


def executor_for(problem: tuple) -> PruneExecutor:
    analysis, x, logits = problem
    target = logits.argmax(axis=1)
    judged = slice(CALIBRATION, None)
    return PruneExecutor(
        analysis, group_scores(analysis), Dataset(x[judged], target[judged]), target[judged], 10**6,
        calibration=x[:CALIBRATION], screen_images=128, original_logits=logits[judged],
    )  # fmt: skip


BUDGET = Budget(100.0, 4.0, sequential=True)


def search(problem: tuple, policy=primesvt, **pool: object) -> tuple:  # noqa: ANN001
    """(result, records, labels the search's own executor measured)."""
    executor = executor_for(problem)
    measured: list[str] = []
    measure = executor.measure
    executor.measure = lambda r, label, **kw: measured.append(label) or measure(r, label, **kw)  # type: ignore[method-assign]
    with CandidatePool(executor, **pool) as candidates:
        result = policy(executor, BUDGET, lambda _m: None, pool=candidates)
    return result, executor.records, measured


def fields(record) -> tuple:  # noqa: ANN001
    return record.label, record.accuracy, record.param_bytes, record.images, record.verdict, record.ratios


def same_search(serial: tuple, other: tuple) -> None:
    assert other[0].ratios == serial[0].ratios and serial[0].ratios  # something was pruned: a search with steps
    assert other[0].sensitivity == serial[0].sensitivity
    assert [fields(r) for r in other[1]] == [fields(r) for r in serial[1]]
    assert not any(label.startswith("sensitivity") for label in other[2])  # the scan ran in the workers
    assert any(label.startswith("sensitivity") for label in serial[2])


@pytest.mark.parametrize("policy", [primesvt, psvit])
def test_a_process_pool_takes_the_serial_steps(problem: tuple, policy) -> None:  # noqa: ANN001
    same_search(search(problem, policy), search(problem, policy, workers=2))


def test_the_images_the_workers_forward_are_counted_here(problem: tuple) -> None:
    """The scan's candidates are distinct plans, each scored once: the same images outside the re-fit either way."""

    def scan(**pool: object) -> tuple[list, int]:
        executor, started = executor_for(problem), Started()
        with CandidatePool(executor, **pool) as candidates:
            _robustness(executor, BUDGET, lambda _m: None, {}, SCAN_RATES, candidates)
        refit = FORWARDED.by_phase.get("re-fit", 0) - started.by_phase.get("re-fit", 0)
        return executor.records, FORWARDED.data - started.data - refit

    (serial, serial_images), (pooled, pooled_images) = scan(), scan(workers=2)
    assert [fields(r) for r in pooled] == [fields(r) for r in serial]
    assert pooled_images == serial_images == sum(r.images for r in serial) > 0


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_ray_actors_take_the_serial_steps(problem: tuple) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        same_search(search(problem), search(problem, workers=2, backend="ray"))
    finally:
        ray.shutdown()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_a_ray_cluster_at_an_address_takes_the_serial_steps(problem: tuple) -> None:
    """A head started apart (``ray start --head``, as on a cluster), at ``ray://host:port`` as in docs/parallel.md."""
    ray = str(Path(sys.executable).parent / "ray")
    gcs, client = free_port(), free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [ray, "start", "--head", f"--port={gcs}", f"--ray-client-server-port={client}", "--num-cpus=2"]
    subprocess.run(
        [*start, "--include-dashboard=false", "--disable-usage-stats"], check=True, env=env, capture_output=True
    )
    try:
        remote = search(problem, workers=2, backend="ray", address=f"ray://127.0.0.1:{client}")
        same_search(search(problem), remote)
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)


class InProcessWaves(CandidatePool):
    """A parallel pool whose workers are this process: records each list it is handed."""

    parallel = True  # type: ignore[assignment]

    def __init__(self, executor: PruneExecutor) -> None:
        super().__init__(executor)
        self.lists: list[list[str]] = []

    def measure_many(self, jobs: list) -> list:
        self.lists.append([label for _, label, _ in jobs])
        return [self.executor.measure(ratios, label, **options) for ratios, label, options in jobs]


def test_waves_give_the_serial_loops_records_in_its_order(analysis) -> None:  # noqa: ANN001
    """Stub accuracies: some groups fail at the first rate (and try the finer one), others rise further."""
    costs = {name: (12.0 if i % 2 else 1.0) for i, name in enumerate(sizes(analysis))}
    serial = StubExecutor(analysis, costs)
    expected = primesvt(serial, Budget(90.0, 1.5), lambda _m: None)
    waved = StubExecutor(analysis, costs)
    pool = InProcessWaves(waved)
    result = primesvt(waved, Budget(90.0, 1.5), lambda _m: None, pool=pool)
    assert waved.records == serial.records
    assert (result.ratios, result.sensitivity) == (expected.ratios, expected.sensitivity)
    assert len(pool.lists[0]) == len(costs)  # the first wave: every group at once
    measured = [label for batch in pool.lists for label in batch]
    assert measured != [r.label for r in serial.records if r.label.startswith("sensitivity")]  # not the serial order


@pytest.fixture(scope="module")
def analysis(small_models: dict):  # noqa: ANN201
    return analyze(small_models["spikformer"])


def test_after_the_time_limit_nothing_is_sent_or_recorded(problem: tuple) -> None:
    executor = executor_for(problem)
    executor.deadline = 0.0  # long past
    pool = CandidatePool(executor, workers=2)
    records = pool.measure_many([({}, "a", {}), ({}, "b", {"screen": True})])
    assert [r.measured for r in records] == [False, False] and executor.records == []
    assert executor.not_measured == 2 and pool.engine is None  # no worker was started


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--executor", "dask"], "--executor unknown value 'dask'"),
        (["--ray-address", "ray://head:10001"], "--ray-address needs executor 'ray'"),
        (["--workers", "2", "--objective", "latency"], "--workers cannot be combined with objective 'latency'"),
    ],
)
def test_bad_worker_options_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, args: list[str], words: str
) -> None:
    from svtprune.cli.app import run

    model, data = tmp_path / "m.onnx", tmp_path / "d.npz"
    code = run(["compress", str(model), "--data", str(data), "-o", str(tmp_path / "out.onnx"), *args])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.onnx").exists()
