"""Progress that says which step of how many and the time left (issue 29: "Say what was and was not checked").

The search's phases send ``Step`` messages (plain strings with a phase and a total); the CLI's
progress turns them into "5 of ~12 prioritized steps, about 0:00:40 left" on stderr. The totals
are counted beside the search: the policies choose exactly what they chose with a plain callback.
"""

from __future__ import annotations

import pytest

from svtprune.cli.eta import Steps, clock
from svtprune.cli.render import progress
from svtprune.progress import Step, bisection_steps
from svtprune.search.budget import Budget
from svtprune.search.policies import primesvt
from tests.test_compress import StubExecutor, analysis, sizes  # noqa: F401 (analysis: a fixture)
from tests.test_quantize import StubQuantExecutor, costs_for, quantizer  # noqa: F401 (a fixture)


def test_the_estimate_is_elapsed_over_done_times_what_is_left() -> None:
    steps = Steps()
    assert steps.text("analysing the graph", 0.0) == ""  # a plain message: no count
    assert steps.text(Step("scan a", "sensitivity", 10), 0.0) == "1 of ~10 sensitivity steps"
    assert steps.text(Step("scan b", "sensitivity", 10), 10.0) == "2 of ~10 sensitivity steps"
    assert steps.text(Step("scan c", "sensitivity", 10), 20.0) == "3 of ~10 sensitivity steps, about 0:01:20 left"
    assert steps.text(Step("drift x", "drift", 4, exact=True), 25.0) == "1 of 4 drift steps"  # a new phase restarts
    assert clock(3 * 3600 + 62) == "3:01:02"
    bar = Steps()  # the live bar's narrow column
    shown = [bar.text(Step("s", "drift", 4, exact=True), t, compact=True) for t in (0.0, 1.0, 2.0)]
    assert shown == ["1/4", "2/4", "3/4, 0:00:02 left"]


def test_progress_lines_go_to_stderr_with_the_count(capsys: pytest.CaptureFixture) -> None:
    with progress("compressing") as say:
        for index in range(3):
            say(Step(f"prioritized g @ 0.{index}", "prioritized", 12))
        say("measuring the chosen model on the held-out split")
    said = capsys.readouterr()
    assert said.out == ""
    lines = said.err.splitlines()
    assert lines[0].startswith("compressing [step 1, 0:00:00, 0 images]: prioritized g @ 0.0 (1 of ~12 prioritized")
    assert "3 of ~12 prioritized steps, about" in lines[2] and "left)" in lines[2]
    assert lines[3].endswith("held-out split")


def test_bisection_steps_bound_the_highest_passing_search(monkeypatch: pytest.MonkeyPatch) -> None:
    from svtprune.search import policies

    for count in range(9):
        rates = [0.1 * (i + 1) for i in range(count)]
        for threshold in [0.0, *rates]:
            said: list[str] = []
            monkeypatch.setattr(policies, "confirmed", lambda _e, _b, ratios, _l, t=threshold: ratios["g"] <= t or None)
            policies._highest_passing(None, None, said.append, {}, "g", rates)  # type: ignore[arg-type]
            assert len(said) <= bisection_steps(count), (count, threshold)


def test_the_search_sends_counted_steps_and_chooses_the_same(analysis) -> None:  # noqa: ANN001, F811
    costs = {name: 1.0 for name in sizes(analysis)}
    plain = primesvt(StubExecutor(analysis, costs), Budget(90.0, 2.05), lambda _m: None)
    said: list[str] = []
    executor = StubExecutor(analysis, costs)
    counted = primesvt(executor, Budget(90.0, 2.05), said.append)
    assert counted.ratios == plain.ratios and counted.best.label == plain.best.label
    seen: dict[str, int] = {}
    for message in said:
        assert isinstance(message, Step), message
        seen[message.phase] = seen.get(message.phase, 0) + 1
        assert seen[message.phase] <= message.total, (message, message.total)
    assert set(seen) == {"sensitivity", "prioritized"}
    labels = [r.label for r in executor.records]
    assert seen["sensitivity"] == sum(label.startswith("sensitivity") for label in labels)
    assert seen["prioritized"] == sum(label.startswith("prioritized") and "(screen)" in label for label in labels)


def test_the_drift_scan_counts_exactly(quantizer) -> None:  # noqa: ANN001, F811
    from svtprune.search.quant_policies import greedy

    said: list[str] = []
    greedy(StubQuantExecutor(quantizer, costs_for(quantizer)), Budget(90.0, 3.0), (8, 4, 2), said.append)
    drifts = [m for m in said if getattr(m, "phase", None) == "drift"]
    assert drifts and all(m.exact and m.total == len(drifts) for m in drifts)
