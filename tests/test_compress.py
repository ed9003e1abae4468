"""compress: each policy's choices, with a stub evaluator so they are exact and fast."""

from __future__ import annotations

import numpy as np
import pytest

from svtprune.graph.analysis import analyze
from svtprune.importance import group_scores
from svtprune.search.executor import Executor, Measurement
from svtprune.search.policies import Budget, primesvt, psvit, uniform


class StubExecutor(Executor):
    """Accuracy falls by a fixed cost per group and rate; bytes are the real pruned bytes."""

    def __init__(self, analysis, costs: dict[str, float]) -> None:  # noqa: ANN001
        super().__init__(analysis, group_scores(analysis), None, None, 1_000_000)  # type: ignore[arg-type]
        self.costs = costs

    def measure(self, ratios: dict[str, float], label: str) -> Measurement:
        accuracy = 90.0 - sum(self.costs[name] * rate for name, rate in ratios.items())
        kept_bytes = self.original_bytes * (1 - 0.1 * sum(ratios.values()))
        record = Measurement(label, dict(ratios), accuracy, int(kept_bytes), 0.0)
        self.records.append(record)
        return record


@pytest.fixture(scope="module")
def analysis(small_models: dict):  # noqa: ANN201
    return analyze(small_models["spikformer"])


def sizes(analysis) -> dict[str, int]:  # noqa: ANN001
    from svtprune.pruning import group_table

    return {row["group"]: row["params"] for row in group_table(analysis) if row["prunable"]}


def test_primesvt_visits_groups_largest_first_and_respects_the_budget(analysis) -> None:  # noqa: ANN001
    names = sorted(sizes(analysis), key=lambda n: -sizes(analysis)[n])
    costs = {name: 1.0 for name in names}
    executor = StubExecutor(analysis, costs)
    result = primesvt(executor, Budget(90.0, 2.05), lambda _m: None)
    prioritized = [r.label.split()[1] for r in executor.records if r.label.startswith("prioritized")]
    assert prioritized[0] == names[0]
    assert [n for i, n in enumerate(prioritized) if i == 0 or n != prioritized[i - 1]] == names[: len(set(prioritized))]
    assert 90.0 - result.best.accuracy <= 2.05
    # one point per unit rate, 2.05 points of budget: the two largest groups take the top rate 0.8, the third
    # only what is left (0.4), and nothing fits for the rest
    assert [result.ratios.get(n, 0.0) for n in names] == pytest.approx([0.8, 0.8, 0.4] + [0.0] * (len(names) - 3))


def test_primesvt_stops_when_the_memory_goal_is_met(analysis) -> None:  # noqa: ANN001
    executor = StubExecutor(analysis, {name: 0.1 for name in sizes(analysis)})
    result = primesvt(executor, Budget(90.0, 5.0, min_saving=0.05), lambda _m: None)
    assert len([n for n, r in result.ratios.items() if r > 0]) == 1  # one group saved enough


def test_uniform_finds_the_largest_passing_ratio(analysis) -> None:  # noqa: ANN001
    costs = {name: 1.0 for name in sizes(analysis)}
    executor = StubExecutor(analysis, costs)
    result = uniform(executor, Budget(90.0, 0.4 * len(costs) + 1e-9), lambda _m: None)
    assert set(result.ratios.values()) == {0.4}


def test_psvit_goes_beyond_its_uniform_step(analysis) -> None:  # noqa: ANN001
    names = list(sizes(analysis))
    costs = {name: (0.2 if i % 2 else 5.0) for i, name in enumerate(names)}  # half the groups are robust
    executor = StubExecutor(analysis, costs)
    result = psvit(executor, Budget(90.0, 2.0), lambda _m: None)
    robust = [n for i, n in enumerate(names) if i % 2]
    assert all(result.ratios[n] >= 0.7 for n in robust)
    assert 90.0 - result.best.accuracy <= 2.0


def test_real_executor_measures_pruned_models(analysis, images: np.ndarray) -> None:  # noqa: ANN001
    from svtprune.data import Dataset

    data = Dataset(images, None)
    executor = Executor(analysis, group_scores(analysis), data, np.zeros(len(images), dtype=np.int64), 10**6)
    full = executor.measure({}, "none")
    half = executor.measure({g.name: 0.5 for g in analysis.prunable_groups}, "half")
    assert half.param_bytes < full.param_bytes
