"""The sequential test's decisions, on a stub evaluator whose candidates have a known true drop.

Oracle: the stub draws each image's flip from the candidate's true flip rates, so whether a
decision is right is known; the executor-level test checks the looks, the reuse of scored
images and the verdict against the rule applied by hand to the same predictions.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from svtprune.search.sequential import (
    ACCEPTED,
    EARLY_LOOK,
    FIRST_LOOK,
    OPEN,
    PLAUSIBLE,
    REJECTED,
    Z_MARGIN,
    SequentialTest,
    looks,
    paired_estimate,
)

SEARCH, HELD = 2048, 1000


def stub_change(drop_points: float, flips_up: float, images: int, seed: int) -> np.ndarray:
    """Per-image change (candidate - original correct) with a true drop of ``drop_points``."""
    rng = np.random.default_rng(seed)
    down = flips_up + drop_points / 100.0
    u = rng.random(images)
    return np.where(u < down, -1.0, np.where(u < down + flips_up, 1.0, 0.0))


def run(test: SequentialTest, change: np.ndarray, screen_cap: int | None = None) -> tuple[str, int]:
    """The stub evaluator's loop: looks over ``change`` until the test decides."""
    cap = screen_cap or len(change)
    sizes = looks(cap)
    for size in sizes:
        verdict = test.verdict(paired_estimate(change[:size]), last=size == sizes[-1], screen=cap < len(change))
        if verdict != OPEN:
            return verdict, size
    raise AssertionError("the last look always decides")


def test_looks_double_from_the_first_and_end_on_the_whole_split() -> None:
    assert looks(1000) == [32, 128, 256, 512, 1000]  # the early look first (it can only reject)
    assert looks(128) == [128] and looks(100) == [100] and looks(1024) == [32, 128, 256, 512, 1024]


def test_paired_estimate_counts_one_pseudo_flip() -> None:
    change = np.zeros(128)
    change[:4] = -1.0
    estimate = paired_estimate(change)
    assert estimate.drop == pytest.approx(100 * 4 / 128)
    mean = -4 / 128
    assert estimate.spread == pytest.approx(math.sqrt(5 / 129 - mean**2))
    assert paired_estimate(np.zeros(256)).stderr > 0  # nothing flipped is not proof of nothing ever flipping


def test_a_clearly_broken_candidate_stops_at_the_first_look() -> None:
    test = SequentialTest(1.0, SEARCH, HELD)
    assert run(test, stub_change(20.0, 0.01, SEARCH, seed=1)) == (REJECTED, FIRST_LOOK)


def test_the_early_look_rejects_only_a_candidate_broken_beyond_doubt() -> None:
    """At 32 images: most predictions moved -> rejected there; 10 points down (4 of 32 flips) -> looked at again;
    nothing moved -> never accepted that early (acceptance waits for the first full look)."""
    test = SequentialTest(1.0, SEARCH, HELD)
    assert run(test, stub_change(50.0, 0.01, SEARCH, seed=11)) == (REJECTED, EARLY_LOOK)
    verdict, images = run(test, stub_change(10.0, 0.01, SEARCH, seed=12))
    assert verdict == REJECTED and images >= FIRST_LOOK
    assert test.verdict(paired_estimate(np.zeros(EARLY_LOOK)), last=False) == OPEN
    # the rule by hand: rejected at 32 exactly when the drop is 3 standard errors past the line
    change = stub_change(25.0, 0.01, SEARCH, seed=13)[:EARLY_LOOK]
    estimate = paired_estimate(change)
    expected = REJECTED if estimate.drop - 3.0 * estimate.stderr > test.line(estimate) else OPEN
    assert test.verdict(estimate, last=False) == expected


def test_a_harmless_candidate_is_accepted_before_the_whole_split() -> None:
    test = SequentialTest(1.0, SEARCH, HELD)
    verdict, images = run(test, np.zeros(SEARCH))
    assert verdict == ACCEPTED and images < SEARCH


def test_a_borderline_candidate_needs_the_whole_split() -> None:
    test = SequentialTest(1.0, SEARCH, HELD)
    change = stub_change(0.5, 0.005, SEARCH, seed=3)
    verdict, images = run(test, change)
    assert images == SEARCH
    estimate = paired_estimate(change)
    assert verdict == (ACCEPTED if estimate.drop <= test.line(estimate) else REJECTED)


def test_the_margin_is_the_noise_of_search_and_held_out_together() -> None:
    estimate = paired_estimate(stub_change(0.5, 0.01, SEARCH, seed=4))
    noise = estimate.spread * math.sqrt(1 / SEARCH + 1 / HELD)
    assert SequentialTest(1.0, SEARCH, HELD).line(estimate) == pytest.approx(1.0 - 100 * Z_MARGIN * noise)
    assert SequentialTest(1.0, SEARCH, 0).line(estimate) == 1.0  # no held-out check to protect: the budget itself


def test_a_screen_only_rejects_what_is_clearly_outside() -> None:
    test = SequentialTest(1.0, SEARCH, HELD)
    verdict, images = run(test, stub_change(0.8, 0.01, SEARCH, seed=5), screen_cap=500)
    assert images <= 500 and verdict in (PLAUSIBLE, REJECTED, ACCEPTED)
    assert run(test, stub_change(15.0, 0.01, SEARCH, seed=6), screen_cap=500) == (REJECTED, FIRST_LOOK)


def test_decisions_are_right_most_of_the_time() -> None:
    """Over many seeds: a candidate 3 points down is rejected, one 0.1 down accepted, each >= 95% of the time."""
    test = SequentialTest(1.0, SEARCH, HELD)
    bad = [run(test, stub_change(3.0, 0.01, SEARCH, seed))[0] for seed in range(200)]
    good = [run(test, stub_change(0.1, 0.003, SEARCH, seed))[0] for seed in range(200)]
    assert bad.count(REJECTED) >= 190 and good.count(ACCEPTED) >= 190


def test_the_executor_runs_the_looks_on_one_seeded_order(small_models: dict, images: np.ndarray) -> None:
    """PruneExecutor: each look extends the last, scored images are reused, the verdict is the rule's."""
    from svtprune.data import Dataset
    from svtprune.graph.analysis import analyze
    from svtprune.importance import group_scores
    from svtprune.runtime import logits_of, make_session
    from svtprune.search.prune_executor import PruneExecutor

    analysis = analyze(small_models["spikformer"])
    rng = np.random.default_rng(2)
    x = np.concatenate([images] * 40) + 0.3 * rng.standard_normal((40 * len(images), *images.shape[1:]))
    x = x.astype(np.float32)
    target = logits_of(make_session(analysis.model), x).argmax(axis=1)
    executor = PruneExecutor(analysis, group_scores(analysis), Dataset(x, target), target, 10**6)
    ratios = {g.name: 0.5 for g in analysis.prunable_groups}
    test = SequentialTest(1.0, len(x), len(x))
    builds = []
    build = executor.build
    executor.build = lambda r: builds.append(r) or build(r)  # type: ignore[method-assign]
    screen = executor.measure(ratios, "half (screen)", screen=True, test=test)
    full = executor.measure(ratios, "half", test=test)
    assert len(builds) == 1  # the full test reused the screened model and its scored images
    order = executor.look_order()
    candidate = logits_of(make_session(build(ratios)), x[order]).argmax(axis=1) == target[order]
    change = candidate.astype(np.float64) - 1.0  # the original is right on every image: its own predictions
    expected, size = run(test, change)
    assert (full.verdict, full.images) == (expected, size)
    assert full.accuracy == pytest.approx(100.0 - paired_estimate(change[:size]).drop)
    assert screen.images <= min(executor.screen_images, len(x))


@pytest.mark.parametrize("bits", [8, 2])
def test_the_quantization_executor_judges_on_the_same_looks(small_models: dict, images: np.ndarray, bits: int) -> None:
    """QuantExecutor with a test: the verdict and the images it took are the rule's on the paired change."""
    from svtprune.data import Dataset
    from svtprune.quantization import Quantizer
    from svtprune.runtime import logits_of, make_session
    from svtprune.search.quant_executor import QuantExecutor

    model = small_models["spikformer"]
    rng = np.random.default_rng(3)
    x = np.concatenate([images] * 40) + 0.3 * rng.standard_normal((40 * len(images), *images.shape[1:]))
    x = x.astype(np.float32)
    target = logits_of(make_session(model), x).argmax(axis=1)
    quantizer = Quantizer(model)
    test = SequentialTest(1.0, len(x), len(x))
    executor = QuantExecutor(quantizer, Dataset(x, target), target, None, test=test)
    setting = {layer.name: max(bits, quantizer.lowest_bits(layer)) for layer in quantizer.layers}
    record = executor.measure(setting, f"all at {bits}")
    order = executor.look_order()
    candidate = logits_of(make_session(quantizer.apply(setting)), x[order]).argmax(axis=1) == target[order]
    change = candidate.astype(np.float64) - 1.0  # the starting model is right on every image: its own predictions
    expected, size = run(test, change)
    assert (record.verdict, record.images) == (expected, size)
    assert record.accuracy == pytest.approx(100.0 - paired_estimate(change[:size]).drop)


def test_an_apparent_gain_is_not_taken_as_one() -> None:
    """A candidate flipping 8% of predictions, more of them right than wrong here, is still too noisy to keep."""
    test = SequentialTest(1.0, SEARCH, HELD)
    change = stub_change(-0.5, 0.04, SEARCH, seed=8)  # a true *gain* of half a point, 8.5% flips
    estimate = paired_estimate(change)
    assert estimate.drop < 0 and test.line(estimate) < 0
    assert run(test, change)[0] == REJECTED
    quiet = stub_change(-0.2, 0.001, SEARCH, seed=9)  # few flips: the gain counts as no change, and that fits
    assert run(test, quiet)[0] == ACCEPTED
