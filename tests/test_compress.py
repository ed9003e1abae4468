"""compress: each policy's choices, with a stub evaluator so they are exact and fast."""

from __future__ import annotations

import numpy as np
import pytest

from svtprune.graph.analysis import analyze
from svtprune.importance import group_scores
from svtprune.search.budget import Budget
from svtprune.search.policies import primesvt, psvit, uniform
from svtprune.search.prune_executor import PruneExecutor as Executor
from svtprune.search.records import Measurement


class StubExecutor(Executor):
    """Accuracy falls by a fixed cost per group and rate; bytes are the real pruned bytes."""

    def __init__(self, analysis, costs: dict[str, float]) -> None:  # noqa: ANN001
        super().__init__(analysis, group_scores(analysis), None, None, 1_000_000)  # type: ignore[arg-type]
        self.costs = costs

    def measure(self, ratios: dict[str, float], label: str, screen: bool = False, test=None) -> Measurement:  # noqa: ANN001
        accuracy = 90.0 - sum(self.costs[name] * rate for name, rate in ratios.items())
        kept_bytes = self.original_bytes * (1 - 0.1 * sum(ratios.values()))
        record = Measurement(label, accuracy, int(kept_bytes), 0.0, dict(ratios))
        self.records.append(record)
        return record


@pytest.fixture(scope="module")
def analysis(small_models: dict):  # noqa: ANN201
    return analyze(small_models["spikformer"])


def sizes(analysis) -> dict[str, int]:  # noqa: ANN001
    from svtprune.graph.analysis import group_table

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


def test_fit_keys_follow_the_graph_upstream() -> None:
    """A layer's cached fit depends on the groups at or above it, never on groups below it."""
    from svtprune.search.prune_executor import upstream_groups
    from tests.model_builders import parse_with_weights

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[N, 3, 4, 4] x) => (float[N, 2, 4, 4] y) {
        a = Conv(x, w1)
        b = Conv(a, w2)
        y = Conv(b, w3)
    }"""
    rng = np.random.default_rng(0)
    model = parse_with_weights(
        text,
        {
            "w1": rng.standard_normal((4, 3, 1, 1)),
            "w2": rng.standard_normal((5, 4, 1, 1)),
            "w3": rng.standard_normal((2, 5, 1, 1)),
        },
    )
    chain = analyze(model)
    first, second = (g.name for g in chain.prunable_groups)  # channels of a, channels of b
    conv1, conv2, conv3 = (n.name for n in chain.model.graph.node if n.op_type == "Conv")
    upstream = upstream_groups(chain)
    assert upstream[conv1] == [first]  # its own output channels
    assert sorted(upstream[conv2]) == sorted([first, second])
    assert sorted(upstream[conv3]) == sorted([first, second])


def test_screen_is_the_paired_estimate_of_the_full_split(analysis, images: np.ndarray) -> None:  # noqa: ANN001
    """Screened accuracy = full-split accuracy of the original + (candidate - original) on the subset."""
    from svtprune.data import Dataset
    from svtprune.runtime import logits_of, make_session

    rng = np.random.default_rng(5)
    x = np.concatenate([images] * 4) + 0.3 * rng.standard_normal((20, *images.shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, len(x))
    executor = Executor(analysis, group_scores(analysis), Dataset(x, labels), labels, 10**6, screen_images=8)
    ratios = {g.name: 0.5 for g in analysis.prunable_groups}
    builds = []
    build = executor.build
    executor.build = lambda r: builds.append(r) or build(r)  # type: ignore[method-assign]
    record = executor.measure(ratios, "half", screen=True)
    rows = executor.screen_index()
    assert record.images == 8 and len(rows) == 8
    original = logits_of(make_session(analysis.model), x).argmax(axis=1) == labels
    candidate = logits_of(make_session(build(ratios)), x[rows]).argmax(axis=1) == labels[rows]
    expected = 100 * (original.mean() + candidate.mean() - original[rows].mean())
    assert record.accuracy == pytest.approx(expected)
    full = executor.measure(ratios, "half")
    assert len(builds) == 1  # the full measurement reused the screened model
    assert full.images == len(x) and full.accuracy == pytest.approx(
        100 * (logits_of(make_session(build(ratios)), x).argmax(axis=1) == labels).mean()
    )


def test_a_plan_measured_the_same_way_again_is_reused_without_forwarding(analysis, images: np.ndarray) -> None:  # noqa: ANN001
    """Same plan, same test, same images: the earlier record's numbers, no image forwarded, marked as reused;
    a full look after a reused screen starts from the images that screen scored."""
    from svtprune.costs import Started
    from svtprune.data import Dataset
    from svtprune.search.sequential import SequentialTest

    rng = np.random.default_rng(7)
    x = np.concatenate([images] * 20) + 0.3 * rng.standard_normal((100, *images.shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, len(x))
    executor = Executor(analysis, group_scores(analysis), Dataset(x, labels), labels, 10**6, screen_images=8)
    ratios = {g.name: 0.3 for g in analysis.prunable_groups}
    test = SequentialTest(50.0, len(x))
    first = executor.measure(ratios, "scan", screen=True, test=test)
    other = executor.measure({}, "between", screen=True, test=test)  # another plan in between: no last-plan shortcut
    before = Started()
    again = executor.measure(ratios, "step (screen)", screen=True, test=test)
    assert before.images_forwarded() == 0
    assert again.reused and not first.reused and not other.reused
    assert (again.accuracy, again.images, again.verdict, again.stderr) == (
        first.accuracy,
        first.images,
        first.verdict,
        first.stderr,
    )
    assert executor.records[-1] is again and executor.records[-1].to_dict()["reused"] is True
    before = Started()
    full = executor.measure(ratios, "step", test=test)  # not the same way: measured, after the screen's images
    assert not full.reused
    assert before.by_phase.get("evaluation", 0) + full.images - first.images == Started().by_phase["evaluation"]


def test_primesvt_screens_before_it_confirms(analysis) -> None:  # noqa: ANN001
    """A step whose screen is hopeless is never measured on the whole split; kept steps always are."""
    names = sorted(sizes(analysis), key=lambda n: -sizes(analysis)[n])
    executor = StubExecutor(analysis, {name: 1.0 for name in names})
    primesvt(executor, Budget(90.0, 2.05), lambda _m: None)
    screened = [r.label.removesuffix(" (screen)") for r in executor.records if r.label.endswith("(screen)")]
    full = [r.label for r in executor.records if r.label.startswith("prioritized") and "(screen)" not in r.label]
    assert all(label in screened for label in full)  # nothing confirmed without a screen first
    # the stub's screen is exact, so only the steps inside the budget were confirmed
    assert all(90.0 - r.accuracy <= 2.05 for r in executor.records if r.label in full)


def test_primesvt_bisects_each_groups_rate(analysis) -> None:  # noqa: ANN001
    """Third group: 0.8 fails, then bisection 0.4 (pass), 0.6, 0.5 (fail): 4 tries, not 5; only 0.4 is confirmed."""
    names = sorted(sizes(analysis), key=lambda n: -sizes(analysis)[n])
    executor = StubExecutor(analysis, {name: 1.0 for name in names})
    primesvt(executor, Budget(90.0, 2.05), lambda _m: None)
    third = [r for r in executor.records if r.label.startswith(f"prioritized {names[2]}")]
    assert [r.ratios[names[2]] for r in third if "(screen)" in r.label] == pytest.approx([0.8, 0.4, 0.6, 0.5])
    assert [r.ratios[names[2]] for r in third if "(screen)" not in r.label] == pytest.approx([0.4])


class StubTimedExecutor(StubExecutor):
    """As StubExecutor, plus a synthetic clock: each group costs ``times[g] * (1 - rate)`` ms at batch 1 and 64."""

    def __init__(self, analysis, costs: dict[str, float], times: dict[str, float]) -> None:  # noqa: ANN001
        super().__init__(analysis, costs)
        self.times = times

    def latency_of(self, ratios: dict[str, float]) -> tuple[float, float]:
        total = 1.0 + sum(t * (1 - ratios.get(n, 0.0)) for n, t in self.times.items())
        return total, 64 * total

    def measure(self, ratios: dict[str, float], label: str, screen: bool = False, test=None) -> Measurement:  # noqa: ANN001
        record = super().measure(ratios, label, screen)
        record.latency_ms = None if screen else self.latency_of(ratios)
        return record


def test_objective_latency_orders_groups_by_measured_time_and_stops_at_the_speedup(analysis) -> None:  # noqa: ANN001
    names = sorted(sizes(analysis), key=lambda n: sizes(analysis)[n])  # smallest group is the slowest here
    times = {name: 10.0 / (i + 1) for i, name in enumerate(names)}
    executor = StubTimedExecutor(analysis, {name: 0.1 for name in names}, times)
    original = executor.latency_of({})
    budget = Budget(90.0, 5.0, objective="latency", original_latency=original, min_speedup=1.5)
    result = primesvt(executor, budget, lambda _m: None)
    prioritized = [r.label.split()[1] for r in executor.records if r.label.startswith("prioritized")]
    assert prioritized[0] == names[0]  # time, not parameter count, decides who goes first
    assert budget.speedup(result.best.latency_ms) >= 1.5
    # the slowest group alone at 0.8 gives 1 + 10 * 0.2 + the rest untouched: not yet 1.5x, the second finishes it
    assert [n for n, r in result.ratios.items() if r > 0] == names[:2]


@pytest.fixture
def compress_args(small_models: dict, tmp_path, images: np.ndarray) -> tuple:  # noqa: ANN001
    """(model, data, out, max drop) for a real compress of the small Spikformer on 120 unlabelled images."""
    import onnx

    from svtprune.data import Dataset, save_npz

    onnx.save(small_models["spikformer"], tmp_path / "m.onnx")
    x = np.concatenate([images] * 24) + np.random.default_rng(1).standard_normal((120, 1, 28, 28)).astype(np.float32)
    save_npz(tmp_path / "val.npz", Dataset(x.astype(np.float32), None))
    return tmp_path / "m.onnx", tmp_path / "val.npz", tmp_path / "s.onnx", 20.0


@pytest.mark.slow
def test_objective_latency_checks_its_options_and_reports_an_unmet_speedup(
    small_models: dict,
    tmp_path,
    compress_args: tuple,  # noqa: ANN001
) -> None:
    from svtprune.errors import ConstraintError, UserError
    from svtprune.jobs.compress import compress

    args = compress_args
    with pytest.raises(UserError, match="objective 'latency'"):
        compress(*args, objective="memory", min_speedup=1.5)
    with pytest.raises(UserError, match="primesvt"):
        compress(*args, method="psvit", objective="latency")
    with pytest.raises(ConstraintError, match="speedup") as failed:
        compress(*args, objective="latency", min_speedup=50.0)
    report = failed.value.report
    assert not (tmp_path / "s.onnx").exists()
    assert set(report["latency_order"]) == {g.name for g in analyze(small_models["spikformer"]).prunable_groups}
    timed = [e for e in report["evaluations"] if "latency_ms_b1" in e]
    assert timed and all(e["images"] > 8 for e in timed)  # every full measurement was timed, no screen was


class StubEnergyExecutor(StubExecutor):
    """As StubExecutor, plus a synthetic energy: each group costs ``energy[g] * (1 - rate)`` uJ."""

    def __init__(self, analysis, costs: dict[str, float], energy: dict[str, float]) -> None:  # noqa: ANN001
        super().__init__(analysis, costs)
        self.energy = energy

    def energy_of(self, ratios: dict[str, float]) -> float:
        return 1.0 + sum(e * (1 - ratios.get(n, 0.0)) for n, e in self.energy.items())

    def measure(self, ratios: dict[str, float], label: str, screen: bool = False, test=None) -> Measurement:  # noqa: ANN001
        record = super().measure(ratios, label, screen)
        record.energy_uj = None if screen else self.energy_of(ratios)
        return record


def test_objective_energy_orders_groups_by_energy_saved_and_stops_at_the_goal(analysis) -> None:  # noqa: ANN001
    names = sorted(sizes(analysis), key=lambda n: sizes(analysis)[n])  # smallest group spends the most energy
    energy = {name: 20.0 / (i + 1) for i, name in enumerate(names)}
    executor = StubEnergyExecutor(analysis, {name: 0.1 for name in names}, energy)
    budget = Budget(90.0, 5.0, objective="energy", original_energy=executor.energy_of({}), min_energy_saving=0.4)
    result = primesvt(executor, budget, lambda _m: None)
    prioritized = [r.label.split()[1] for r in executor.records if r.label.startswith("prioritized")]
    assert prioritized[0] == names[0]  # energy, not parameter count, decides who goes first
    assert executor.energy_rank[names[0]] == max(executor.energy_rank.values())
    assert budget.energy_saving(result.best.energy_uj) >= 0.4
    assert not budget.goal_met(executor, executor.records[0])  # a goal is checked, not assumed
    # the first group alone at 0.8 saves 16 of ~50 uJ (~32%): the second group is needed, the third is not
    assert [n for n, r in result.ratios.items() if r > 0] == names[:2]


@pytest.mark.slow
def test_objective_energy_checks_its_options_and_reports_an_unmet_saving(
    small_models: dict,
    tmp_path,
    compress_args: tuple,  # noqa: ANN001
) -> None:
    from svtprune.errors import ConstraintError, UserError
    from svtprune.jobs.compress import compress

    args = compress_args
    with pytest.raises(UserError, match="objective 'energy'"):
        compress(*args, objective="memory", min_energy_saving=0.5)
    with pytest.raises(UserError, match="in \\(0, 1\\)"):
        compress(*args, objective="energy", min_energy_saving=1.5)
    with pytest.raises(ConstraintError, match="energy saving") as failed:
        compress(*args, objective="energy", min_energy_saving=0.999)
    report = failed.value.report
    assert not (tmp_path / "s.onnx").exists()
    assert set(report["energy_order"]) == {g.name for g in analyze(small_models["spikformer"]).prunable_groups}
    estimated = [e for e in report["evaluations"] if "energy_uj" in e]
    assert estimated and all(e["images"] > 8 for e in estimated)  # full measurements only, no screen
    original = report["energy"]["original"]["energy_uJ_per_image"]
    compressed = report["energy"]["compressed"]["energy_uJ_per_image"]
    assert report["energy_saving"] == pytest.approx(1 - compressed / original, abs=1e-4)


def test_steps_back_are_accepted_full_measurements_most_compressed_first(analysis) -> None:  # noqa: ANN001
    from svtprune.search.held_out import MAX_STEPS_BACK
    from svtprune.search.held_out import pruned_steps_back as _steps_back

    executor = StubExecutor(analysis, {})
    executor.data = np.zeros((100, 1))  # type: ignore[assignment]  # only its length matters: the full split

    def record(label: str, ratio: float, accuracy: float, size: int, images: int = 100) -> Measurement:
        executor.records.append(Measurement(label, accuracy, size, 0.0, {"g": ratio}, images=images))
        return executor.records[-1]

    record("small step", 0.2, 89.5, 800)
    record("screen only", 0.4, 89.5, 700, images=50)
    record("over budget", 0.5, 80.0, 650)
    record("middle step", 0.4, 89.0, 700)
    record("another", 0.3, 89.2, 750)
    record("the largest", 0.1, 89.9, 900)
    chosen = record("chosen", 0.6, 88.5, 600)
    steps = _steps_back(executor, Budget(90.0, 2.0), chosen)
    assert [s.label for s in steps] == ["middle step", "another", "small step"][:MAX_STEPS_BACK]
    assert _steps_back(executor, Budget(90.0, 2.0), None) == []


def test_held_out_miss_takes_the_first_smaller_accepted_plan(analysis, images: np.ndarray) -> None:  # noqa: ANN001
    from svtprune.data import Dataset
    from svtprune.search.held_out import pruned_held_out as _held_out_choice
    from svtprune.search.records import SearchResult

    data = Dataset(images, None)
    executor = Executor(analysis, group_scores(analysis), data, np.zeros(len(images), dtype=np.int64), 10**6)
    group = analysis.prunable_groups[0].name
    small, large = executor.measure({group: 0.2}, "small step"), executor.measure({group: 0.5}, "large step")
    verdicts = iter([False, True])  # the chosen plan misses on held-out, the next one holds
    result = SearchResult(large, ratios={group: 0.5})
    final, _accuracy, checks = _held_out_choice(
        executor, Budget(100.0, 100.0), result, data, np.zeros(len(images), dtype=np.int64),
        lambda _a: next(verdicts), True, lambda _m: None,
    )  # fmt: skip
    assert [c["label"] for c in checks] == ["large step", "small step"]
    assert result.ratios == {group: 0.2} and result.best is small
    from svtprune.graph.io import param_bytes

    assert param_bytes(final) == small.param_bytes > large.param_bytes  # the step's model, not the first choice


def test_a_pruned_model_past_the_budget_steps_back_to_unpruned_when_quantization_follows(small_models: dict) -> None:
    """Oracle: agreement with the original's own decisions (the unpruned model agrees on every image)."""
    from types import SimpleNamespace

    from onnx import numpy_helper

    from svtprune.data import Dataset
    from svtprune.graph.io import param_bytes
    from svtprune.runtime import logits_of, make_session
    from svtprune.search.held_out import pruned_held_out as _held_out_choice
    from svtprune.search.records import SearchResult

    original = small_models["spikformer"]
    broken = original.__class__()
    broken.CopyFrom(original)
    for tensor in broken.graph.initializer:  # a "pruned" model that lost everything
        if tensor.name.endswith("weight") and len(tensor.dims) > 1:
            tensor.CopyFrom(numpy_helper.from_array(np.zeros(tuple(tensor.dims), np.float32), tensor.name))
    x = np.random.default_rng(1).standard_normal((40, 1, 28, 28)).astype(np.float32)
    target = logits_of(make_session(original), x).argmax(axis=1)
    executor = SimpleNamespace(
        records=[], data=Dataset(x, None), original_bytes=param_bytes(original),
        build=lambda ratios: broken if ratios else original,
    )  # fmt: skip
    chosen = SimpleNamespace(label="pruned", param_bytes=param_bytes(original) // 2, ratios={"g": 0.5})
    holds = lambda a: 100.0 - a <= 1.0  # noqa: E731
    for or_unpruned in (False, True):
        result = SearchResult(ratios={"g": 0.5}, best=chosen)
        final, accuracy, checks = _held_out_choice(
            executor,
            SimpleNamespace(accepts=lambda _r: True),
            result,
            Dataset(x, None),
            target,
            holds,
            True,
            lambda _m: None,
            or_unpruned,
        )
        assert checks[0]["label"] == "pruned" and not holds(checks[0]["accuracy"])
        if or_unpruned:  # the last step back: no channel removed, and the search result says so
            assert final is original and accuracy == 100.0 and checks[-1]["label"] == "unpruned"
            assert result.ratios == {} and result.best is None
        else:  # without quantization next, the miss is reported as it is
            assert final is broken and len(checks) == 1 and result.best is chosen


class StubClockExecutor(StubExecutor):
    """As StubExecutor, with the time limit passing after ``allowed`` measurements."""

    def __init__(self, analysis, costs: dict[str, float], allowed: int) -> None:  # noqa: ANN001
        super().__init__(analysis, costs)
        self.allowed = allowed

    def measure(self, ratios: dict[str, float], label: str, screen: bool = False, test=None) -> Measurement:  # noqa: ANN001
        if len(self.records) >= self.allowed:
            self.deadline = 0.0  # long past
        return self.past_deadline(ratios, label) or super().measure(ratios, label, screen)


def test_a_time_limit_keeps_the_last_step_accepted_before_it(analysis) -> None:  # noqa: ANN001
    """Oracle: the unlimited run's own record; cut after n measurements, the result is its last step taken by then."""
    costs = {name: 2.0 + i for i, name in enumerate(sizes(analysis))}
    budget = Budget(90.0, 1.5)
    full = StubExecutor(analysis, costs)
    primesvt(full, budget, lambda _m: None)
    steps = [r for r in full.records if r.label.startswith("prioritized") and not r.label.endswith("(screen)")]
    assert any(budget.accepts(r) for r in steps) and len(full.records) > 6
    for allowed in range(len(full.records) + 1):
        limited = StubClockExecutor(analysis, costs, allowed)
        result = primesvt(limited, budget, lambda _m: None)
        taken = [r for r in full.records[:allowed] if r in steps and budget.accepts(r)]
        assert result.best == (taken[-1] if taken else None), allowed
        assert result.ratios == (taken[-1].ratios if taken else {})
        assert limited.records == full.records[:allowed]  # nothing after the limit is scored or reported
        assert (limited.not_measured > 0) == (allowed < len(full.records))


@pytest.mark.parametrize(
    ("fields", "search", "if_needed"),
    [
        ({}, None, False),  # auto without a memory goal: pruning only, as before
        ({"min_memory_saving": 0.9}, "greedy", True),
        ({"min_memory_saving": 0.9, "quantize": "none"}, None, False),
        ({"quantize": "beam"}, "beam", False),
    ],
)
def test_quantize_auto_plans_a_bit_search_only_for_a_memory_goal(fields: dict, search, if_needed: bool) -> None:  # noqa: ANN001
    from svtprune.jobs.options import CompressOptions

    options = CompressOptions.from_fields(max_accuracy_drop=1.0, **fields)
    assert (options.quantize.search if options.quantize else None) == search
    assert options.quantize_if_needed is if_needed


@pytest.mark.parametrize(("goal", "runs"), [(0.1, False), (0.9, True)])
def test_quantize_auto_runs_only_where_pruning_alone_misses_the_goal(analysis, goal: float, runs: bool) -> None:  # noqa: ANN001
    """Half the channels of every group removed saves well over 10% of the bytes and well under 90%."""
    from types import SimpleNamespace

    from svtprune.graph.io import param_bytes
    from svtprune.graph.plan import uniform_plan
    from svtprune.graph.surgery import prune
    from svtprune.jobs.compress import quantization_needed
    from svtprune.jobs.options import CompressOptions

    pruned = prune(analysis, uniform_plan(analysis, 0.5, group_scores(analysis)))
    saved = 1 - param_bytes(pruned) / param_bytes(analysis.model)
    assert 0.1 < saved < 0.9
    options = CompressOptions.from_fields(max_accuracy_drop=1.0, min_memory_saving=goal)
    quant, why = quantization_needed(options, SimpleNamespace(model=pruned), analysis.model)
    assert (quant is not None) is runs
    assert f"pruning alone saved {saved:.1%}" in why


def test_an_unknown_quantize_value_names_every_choice() -> None:
    from svtprune.errors import UserError
    from svtprune.jobs.options import CompressOptions

    with pytest.raises(UserError, match="auto, none, greedy, beam, exhaustive"):
        CompressOptions.from_fields(max_accuracy_drop=1.0, quantize="gredy")


@pytest.mark.parametrize(
    ("fields", "objective"),
    [
        ({}, "memory"),
        ({"min_memory_saving": 0.9}, "memory"),
        ({"min_speedup": 1.5}, "latency"),
        ({"min_memory_saving": 0.9, "min_speedup": 1.5}, "latency"),  # issue 17: several goals, no other flag
        ({"max_latency_ms": 3.0}, "latency"),
        ({"min_energy_saving": 0.5}, "energy"),
        ({"objective": "latency"}, "latency"),
    ],
)
def test_the_goals_name_the_objective_when_it_is_not_given(fields: dict, objective: str) -> None:
    from svtprune.jobs.options import CompressOptions

    assert CompressOptions.from_fields(max_accuracy_drop=1.0, **fields).goal.objective == objective


def test_goals_that_order_the_search_differently_ask_for_a_choice() -> None:
    from svtprune.errors import UserError
    from svtprune.jobs.options import CompressOptions

    with pytest.raises(UserError, match="choose one"):
        CompressOptions.from_fields(max_accuracy_drop=1.0, min_speedup=1.5, min_energy_saving=0.5)
    with pytest.raises(UserError, match="objective 'energy'"):
        CompressOptions.from_fields(max_accuracy_drop=1.0, objective="latency", min_energy_saving=0.5)
