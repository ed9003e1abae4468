"""Surgery against the zeroed-slice oracle on real exported graphs (issue: graph analysis)."""

from __future__ import annotations

import numpy as np
import pytest

from svtprune.graph.analysis import analyze
from svtprune.graph.io import param_bytes
from svtprune.graph.plan import Plan, uniform_plan
from svtprune.graph.surgery import prune
from svtprune.importance import group_scores
from tests.oracle import assert_matches_oracle, random_plan, run, spike_counts

ARCHS = ["spikformer", "sdt", "qkformer", "vit"]


@pytest.fixture(scope="module")
def analyses(small_models: dict) -> dict:
    return {name: analyze(model) for name, model in small_models.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_models_are_not_trivial(arch: str, small_models: dict, images: np.ndarray) -> None:
    """Guards every other test: logits differ between inputs and neurons fire."""
    logits, counts = spike_counts(small_models[arch], images)
    assert np.ptp(logits - logits.mean(axis=0), axis=0).max() > 1e-3
    if arch != "vit":
        assert counts, "no neuron found"
        fired = sum(int(c.sum()) for c in counts)
        assert fired > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_ratio_zero_returns_the_original(arch: str, small_models: dict, analyses: dict, images: np.ndarray) -> None:
    analysis = analyses[arch]
    plan = uniform_plan(analysis, 0.0, group_scores(analysis))
    pruned = prune(analysis, plan)
    original = run(small_models[arch], images)
    out = run(pruned, images)
    for name, value in original.items():
        np.testing.assert_array_equal(out[name], value)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_uniform_l2_matches_oracle(arch: str, ratio: float, analyses: dict, images: np.ndarray) -> None:
    analysis = analyses[arch]
    plan = uniform_plan(analysis, ratio, group_scores(analysis))
    pruned = assert_matches_oracle(analysis, plan, images)
    assert param_bytes(pruned) < param_bytes(analysis.model)
    assert_matches_oracle(analysis, plan, images[:1])  # batch 1 too: the batch axis stays dynamic


@pytest.mark.parametrize("arch", ARCHS)
def test_random_plans_with_head_removal_match_oracle(arch: str, analyses: dict, images: np.ndarray) -> None:
    analysis = analyses[arch]
    rng = np.random.default_rng(sum(map(ord, arch)))
    for _ in range(4):
        assert_matches_oracle(analysis, random_plan(analysis, rng), images)


@pytest.mark.parametrize("arch", ["spikformer", "sdt", "qkformer"])
def test_only_the_classifier_is_refused(arch: str, analyses: dict) -> None:
    refused = [g for g in analyses[arch].groups if not g.prunable]
    assert len(refused) == 1 and "model output" in refused[0].refused[0], [g.refused for g in refused]


def test_qkformer_token_attention_keeps_every_head(analyses: dict) -> None:
    """Its q is summed over the channels of each head: prune inside heads, never whole heads."""
    from svtprune.errors import UserError

    analysis = analyses["qkformer"]
    pinned = [g for g in analysis.groups if g.head_rows and not g.heads_removable]
    assert pinned
    group = pinned[0]
    position = {int(c): i for i, c in enumerate(group.channels)}
    first_head = {position[int(c)] for c in group.head_rows[0]}
    plan = Plan({group.name: sorted(set(range(group.size)) - first_head)})
    with pytest.raises(UserError, match="whole head"):
        prune(analysis, plan)


def test_spikformer_groups(analyses: dict) -> None:
    """Stem stages, one residual stream, per block: attention (q,k coupled + v, in heads) and MLP."""
    groups = {g.name: g for g in analyses["spikformer"].groups}
    sizes = sorted((g.size, bool(g.head_rows), g.prunable) for g in groups.values())
    assert sizes == [
        (4, False, True),
        (8, False, True),
        (10, False, False),
        (16, False, True),
        (32, False, True),
        (64, True, True),
        (128, False, True),
    ]
    residual = next(g for g in groups.values() if g.size == 32)
    assert len([m for m in residual.members if m.role == "source"]) == 4  # stem, pos-enc, proj, fc2
    attention = next(g for g in groups.values() if g.head_rows)
    assert len(attention.head_rows) == 12  # 4 heads each of q, k, v
    head = next(g for g in groups.values() if not g.prunable)
    assert any("model output" in r for r in head.refused)


def test_vit_residual_stream_is_prunable_through_layernorm(analyses: dict, images: np.ndarray) -> None:
    """Its LayerNorms are written out for the kept channels (graph/layer_norm.py): exact, so prunable."""
    analysis = analyses["vit"]
    groups = analysis.groups
    stream = [g for g in groups if g.size == 32]
    assert len(stream) == 1 and stream[0].prunable, [g.refused for g in stream]
    assert any(g.head_rows and g.prunable for g in groups)  # attention
    assert any(g.size == 64 and g.prunable for g in groups)  # MLP hidden
    assert_matches_oracle(analysis, Plan({stream[0].name: list(range(0, 32, 2))}), images)


def test_invalid_plans_are_rejected(analyses: dict) -> None:
    from svtprune.errors import UserError

    analysis = analyses["spikformer"]
    attention = next(g for g in analysis.groups if g.head_rows)
    ragged = Plan({attention.name: list(range(1, attention.size))})  # one head loses one channel
    with pytest.raises(UserError, match="heads"):
        prune(analysis, ragged)
    with pytest.raises(UserError, match="refused"):
        prune(analysis, Plan({next(g for g in analysis.groups if not g.prunable).name: [0]}))
    with pytest.raises(UserError, match="does not have"):
        prune(analysis, Plan({"no-such-group": [0]}))


@pytest.mark.parametrize("arch", ["spikformer", "sdt"])
def test_torchscript_exports_analyse_and_match_oracle(arch: str, torchscript_models: dict, images: np.ndarray) -> None:
    """Run-time Reshape/Slice arguments are read at two batch sizes and become constants."""
    from svtprune.spiking.neurons import find_neurons

    model = torchscript_models[arch]
    assert any(n.op_type == "Shape" for n in model.graph.node)  # really the run-time shape form
    analysis = analyze(model)
    assert [g for g in analysis.groups if not g.prunable] == [analysis.groups[-1]]  # only the classifier
    assert len(find_neurons(model)) == {"spikformer": 10, "sdt": 12}[arch]
    rng = np.random.default_rng(3)
    for _ in range(3):
        assert_matches_oracle(analysis, random_plan(analysis, rng), images)
    assert_matches_oracle(analysis, random_plan(analysis, rng), images[:1])
