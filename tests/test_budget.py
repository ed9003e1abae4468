"""The accuracy budget's arithmetic lives in one frozen object: each phase's share, checked by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from svtprune.jobs.options import CompressOptions, QuantizeOptions
from svtprune.search.budget import (
    FINETUNE_SEARCH_FACTOR,
    PSVIT_UNIFORM_SHARE,
    SEARCH_SHARE_OF_BUDGET,
    TIME_SHARE,
    TOKEN_SHARE,
    Budget,
    Points,
    token_points,
)


def test_without_fine_tuning_a_search_spends_the_whole_budget() -> None:
    assert Points(1.0).search == 1.0 and Points(1.0).pruning == 1.0
    assert Points(1.0, prune_share=0.5).pruning == 0.5 and Points(1.0, prune_share=0.5).search == 1.0


def test_with_fine_tuning_the_search_loses_more_and_keeps_a_reserve() -> None:
    assert Points(1.0, finetuned=True).search == pytest.approx(SEARCH_SHARE_OF_BUDGET * FINETUNE_SEARCH_FACTOR)
    assert Points(1.0, finetuned=True, finetune_search_drop=2.0).search == pytest.approx(SEARCH_SHARE_OF_BUDGET * 2)
    tuned = Points(1.0, finetuned=True, prune_share=0.25)
    assert tuned.pruning == pytest.approx(0.25 * SEARCH_SHARE_OF_BUDGET * FINETUNE_SEARCH_FACTOR)


def test_options_give_the_shares_their_goals_imply(tmp_path: Path) -> None:
    assert CompressOptions(max_accuracy_drop=2.0).points == Points(2.0)
    quantizing = CompressOptions.from_fields(max_accuracy_drop=2.0, quantize="greedy", prune_share=0.4)
    assert quantizing.points.pruning == pytest.approx(0.8) and quantizing.points.search == 2.0
    assert QuantizeOptions(max_accuracy_drop=1.5).points == Points(1.5)


def test_the_budget_is_frozen_and_its_shares_are_new_budgets() -> None:
    budget = Budget(90.0, 1.0, sequential=True, held_images=2000, objective="latency", min_speedup=1.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.max_drop = 2.0  # type: ignore[misc]
    first = budget.uniform_first()
    assert first.max_drop == PSVIT_UNIFORM_SHARE and first.sequential and first.held_images == 2000
    assert first.min_speedup is None and budget.max_drop == 1.0
    assert budget.left_after(0.3) == pytest.approx(0.7)
    tokens = budget.time_steps().tokens()  # leaving tokens out keeps a reserve for the channels after it
    assert tokens.max_drop == pytest.approx(TIME_SHARE * TOKEN_SHARE) and tokens.min_speedup == 1.5
    assert token_points(2.0) == pytest.approx(2.0 * TOKEN_SHARE) and TOKEN_SHARE < 1


def test_compress_and_quantize_share_their_defaults() -> None:
    compress, quantize = CompressOptions(), QuantizeOptions()
    assert compress.max_accuracy_drop == quantize.max_accuracy_drop == 1.0
    assert compress.layout == quantize.layout == "fastest"


def test_a_candidate_is_timed_against_the_original_call_for_call(
    monkeypatch: pytest.MonkeyPatch, small_models: dict
) -> None:
    """The search's latency is the original's measurement times the paired ratio (a load on both cancels out)."""
    from svtprune import runtime

    calls = []

    def paired(first, second):  # noqa: ANN001, ANN202
        calls.append((first, second))
        return ((2.0, 100.0), (2.0, 100.0)), ((1.0, 30.0), (1.0, 25.0))  # (median, fastest) of each

    monkeypatch.setattr(runtime, "timed_pair", paired)
    timing = runtime.PairedTiming(small_models["spikformer"], (4.0, 120.0))
    assert timing.latency(small_models["spikformer"]) == pytest.approx((2.0, 30.0))
    assert timing.latency(small_models["spikformer"]) == pytest.approx((2.0, 30.0))
    assert calls[0][0] is calls[1][0]  # the original's session is made once
