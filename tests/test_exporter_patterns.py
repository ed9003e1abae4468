"""What torch's two exporters write for attention, and what a fixed batch stores: each pattern is
followed (heads prunable) and every prune matches the oracle (the original, removed slices zeroed).

The models are small torch modules exported here with both exporters, so each test proves the rule
for the pattern, not for one file.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn
from torch.nn import functional

from svtprune.errors import ConstraintError
from svtprune.graph.analysis import analyze
from svtprune.graph.io import param_bytes, state_bytes
from svtprune.graph.plan import uniform_plan
from svtprune.importance import group_scores
from svtprune.jobs.oracle_guard import REFUSAL, guard_plan, oracle_holds
from svtprune.jobs.prune import prune_uniform
from tests.oracle import assert_matches_oracle


class FusedAttention(nn.Module):
    """timm's attention: fused qkv Linear, scaled_dot_product_attention (scale from the head size)."""

    def __init__(self, dim: int = 32, heads: int = 2, tokens: int = 9) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(12, dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attended = functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, tokens, dim))
        x = x + self.fc2(functional.gelu(self.fc1(x)))
        return self.head(x.mean(1))


class SplitHeads(nn.Module):
    """One fused 1x1 conv split into q, k and v, each reshaped into heads on its own (MaxFormer's form)."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Conv1d(6, dim, 1)
        self.qkv = nn.Conv1d(dim, 3 * dim, 1)
        self.proj = nn.Conv1d(dim, dim, 1)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        batch, dim, tokens = x.shape
        q, k, v = (t.reshape(batch, self.heads, dim // self.heads, tokens) for t in self.qkv(x).chunk(3, dim=1))
        attention = torch.relu(q.transpose(-1, -2) @ k) * 0.125
        mixed = (v @ attention.transpose(-1, -2)).reshape(batch, dim, tokens)
        return self.head((x + self.proj(mixed)).mean(-1))


def _export(module: nn.Module, example: torch.Tensor, path: Path, dynamo: bool, fixed: bool = False) -> onnx.ModelProto:
    torch.manual_seed(0)
    module.eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if dynamo:
            shapes = None if fixed else {"x": {0: torch.export.Dim("batch", min=1, max=1024)}}
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=18, dynamic_shapes=shapes)
        else:
            axes = None if fixed else {"x": {0: "batch"}, "y": {0: "batch"}}
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=17,
                input_names=["x"], output_names=["y"], dynamic_axes=axes,
            )  # fmt: skip
    return onnx.load(str(path))


def _inputs(model: onnx.ModelProto, count: int = 6) -> np.ndarray:
    dims = [d.dim_value or count for d in model.graph.input[0].type.tensor_type.shape.dim]
    return np.random.default_rng(1).standard_normal(dims).astype(np.float32)


@pytest.mark.parametrize("dynamo", [False, True], ids=["classic", "dynamo"])
def test_attention_heads_prunable_and_exact_under_both_exporters(tmp_path: Path, dynamo: bool) -> None:
    """The classic exporter computes 1/sqrt(head size) at run time (folded to a constant before the
    analysis); dynamo transposes k through a [B*H, N, D] detour (rewritten as one Transpose)."""
    torch.manual_seed(0)
    model = _export(FusedAttention(), torch.randn(2, 9, 12), tmp_path / "attn.onnx", dynamo)
    analysis = analyze(model)
    qkv = [g for g in analysis.groups if g.heads == 2]
    assert len(qkv) == 1 and qkv[0].prunable, [(g.name, g.heads, g.refused) for g in analysis.groups]
    plan = uniform_plan(analysis, 0.3, group_scores(analysis, "l2"))
    pruned = assert_matches_oracle(analysis, plan, _inputs(model))
    assert param_bytes(pruned) < param_bytes(model)
    assert not any(n.op_type in ("Shape", "Sqrt") and "attn" in n.name for n in analysis.model.graph.node)


def test_run_time_channel_count_is_refused_when_nothing_folds_it(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Without folding (neither the folder nor the probe), the scale is computed from the head size at run
    time: the analysis must refuse those channels itself (pruning them would divide by sqrt of the new size)."""
    from svtprune.graph import normalize

    model = _export(FusedAttention(), torch.randn(2, 9, 12), tmp_path / "attn.onnx", dynamo=False)
    monkeypatch.setattr(normalize, "FOLD_ROUNDS", 1)
    monkeypatch.setattr(normalize, "_with_shapes", lambda m: m)  # the folder sees no shapes, folds no Shape
    monkeypatch.setattr(normalize, "_shape_frontier", lambda m: set())  # and no probe turns them into constants
    analysis = analyze(model)
    reasons = [r for g in analysis.groups for r in g.refused]
    assert any("reads the channel count at run time" in r for r in reasons), reasons
    plan = uniform_plan(analysis, 0.3, group_scores(analysis, "l2"))
    assert_matches_oracle(analysis, plan, _inputs(model))


def test_unsound_pattern_is_caught_by_the_oracle_guard_not_written(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """With every safeguard of the analysis switched off, the prune would be silently wrong: the guard
    that runs before anything is written finds the groups, leaves them whole and says so."""
    from svtprune.graph import analysis as analysis_module
    from svtprune.graph import normalize

    path = tmp_path / "attn.onnx"
    model = _export(FusedAttention(), torch.randn(2, 9, 12), path, dynamo=False)
    monkeypatch.setattr(normalize, "FOLD_ROUNDS", 1)
    monkeypatch.setattr(normalize, "_with_shapes", lambda m: m)
    monkeypatch.setattr(normalize, "_shape_frontier", lambda m: set())
    monkeypatch.setattr(analysis_module, "follow_shape_reads", lambda state, node: None)
    analysis = analyze(model)
    plan = uniform_plan(analysis, 0.3, group_scores(analysis, "l2"))
    assert not oracle_holds(analysis, plan)  # the unsound analysis really does prune it wrongly
    refused = guard_plan(analysis, plan)
    assert refused and all(name not in plan.kept for name in refused)
    assert all(REFUSAL in analysis.group(name).refused for name in refused)
    assert oracle_holds(analysis, plan)
    result = prune_uniform(path, 0.3)
    assert result.refused and result.plan.meta["refused_by_oracle"] == result.refused


def test_guard_refuses_to_write_a_plan_it_cannot_repair(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from svtprune.jobs import oracle_guard

    model = _export(FusedAttention(), torch.randn(2, 9, 12), tmp_path / "attn.onnx", dynamo=False)
    analysis = analyze(model)
    plan = uniform_plan(analysis, 0.3, group_scores(analysis, "l2"))
    monkeypatch.setattr(oracle_guard, "oracle_holds", lambda analysis, plan: False)
    with pytest.raises(ConstraintError, match="nothing written"):
        guard_plan(analysis, plan)


def test_heads_split_apart_keep_every_projection(tmp_path: Path) -> None:
    """q, k and v reshaped into heads one by one: a plan keeps the same share of v as of q and k."""
    torch.manual_seed(0)
    model = _export(SplitHeads(), torch.randn(2, 6, 10), tmp_path / "split.onnx", dynamo=True)
    analysis = analyze(model)
    group = next(g for g in analysis.groups if g.heads == 4)
    assert group.prunable and set(np.concatenate(group.head_rows).tolist()) == set(group.channels.tolist())
    plan = uniform_plan(analysis, 0.3, group_scores(analysis, "l2"))
    assert len(plan.kept[group.name]) == 2 * 4 * 6  # q/k (coupled) and v: 4 heads each keep 6 of 8
    assert_matches_oracle(analysis, plan, _inputs(model))


def _fixed_batch_state_model(batch: int = 2, channels: int = 8, length: int = 5) -> onnx.ModelProto:
    """Conv -> membrane = conv + v0 (v0 a [B, C, L] constant of 0.25, as a fixed-batch full_like) -> Conv."""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((channels, 3, 1)).astype(np.float32),
        "w2": rng.standard_normal((4, channels, 1)).astype(np.float32),
        "v0": np.full((batch, channels, length), 0.25, np.float32),
        "threshold": np.array(0.5, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
        helper.make_node("Add", ["c1", "v0"], ["membrane"], name="charge"),
        helper.make_node("GreaterOrEqual", ["membrane", "threshold"], ["fires"], name="fire"),
        helper.make_node("Cast", ["fires"], ["spikes"], name="spike", to=onnx.TensorProto.FLOAT),
        helper.make_node("Conv", ["spikes", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "state",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, 3, length])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [batch, 4, length])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fixed_batch_neuron_state_is_state_not_weights() -> None:
    model = _fixed_batch_state_model()
    assert state_bytes(model) == 2 * 8 * 5 * 4
    assert param_bytes(model) == (8 * 3 + 4 * 8) * 4 + 4  # the weights and the threshold, not v0
    analysis = analyze(model)
    group = analysis.group("w1")
    assert group.prunable, group.refused
    plan = uniform_plan(analysis, 0.5, group_scores(analysis, "l2"))
    assert_matches_oracle(analysis, plan, _inputs(model, 2))


def test_fixed_batch_refusal_says_what_to_do() -> None:
    """A batch-shaped constant over heads that is not uniform is no state and no rule slices it: the
    refusal says that a dynamic-batch export may help."""
    model = _fixed_batch_state_model()
    v0 = next(t for t in model.graph.initializer if t.name == "v0")
    v0.CopyFrom(numpy_helper.from_array(np.random.default_rng(2).random((2, 2, 4, 5)).astype(np.float32), "v0"))
    model.graph.initializer.extend(
        [numpy_helper.from_array(np.array(s, np.int64), n) for n, s in (("heads", [2, 2, 4, 5]), ("flat", [2, 8, 5]))]
    )
    nodes = list(model.graph.node)
    nodes[1:2] = [
        helper.make_node("Reshape", ["c1", "heads"], ["c1_heads"], name="split_heads"),
        helper.make_node("Add", ["c1_heads", "v0"], ["m_heads"], name="charge"),
        helper.make_node("Reshape", ["m_heads", "flat"], ["membrane"], name="merge_heads"),
    ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    group = analyze(model).group("w1")
    assert not group.prunable
    assert any("an export with a dynamic batch" in r for r in group.refused), group.refused


def test_a_node_rewritten_twice_or_named_like_a_fresh_constant_keeps_names_unique() -> None:
    """Surgery names new shape constants after their node; an exporter may already use that name."""
    rng = np.random.default_rng(0)
    weights = {
        "w": rng.standard_normal((8, 3, 1, 1)).astype(np.float32),
        "r_shape": np.array([0, 8, 4], np.int64),  # the exporter's own name, the one surgery would pick
        "head": rng.standard_normal((8, 4)).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Reshape", ["c", "r_shape"], ["flat"], name="r"),
        helper.make_node("ReduceMean", ["flat"], ["pooled"], name="pool", axes=[2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["y"], name="fc"),
    ]
    graph = helper.make_graph(
        nodes,
        "names",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    analysis = analyze(model)
    plan = uniform_plan(analysis, 0.5, group_scores(analysis, "l2"))
    pruned = assert_matches_oracle(analysis, plan, _inputs(model, 3))
    names = [t.name for t in pruned.graph.initializer]
    assert len(names) == len(set(names))


class TokenNorm(nn.Module):
    """A class token joined to the tokens, a LayerNorm over the residual width (timm's ViT stem)."""

    def __init__(self, squash: bool = False, dim: int = 16) -> None:
        super().__init__()
        self.squash = squash
        self.embed = nn.Linear(6, dim)
        self.token = nn.Parameter(torch.randn(1, 1, dim))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(2 * dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        x = torch.sigmoid(x) if self.squash else x
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.head(functional.gelu(self.fc(self.norm(x)))[:, 0])


@pytest.mark.parametrize("dynamo", [False, True], ids=["classic", "dynamo"])
def test_layer_norm_over_pruned_channels_counts_them_as_zeros(tmp_path: Path, dynamo: bool) -> None:
    """The oracle's LayerNorm averages over every channel, the removed ones as zeros: surgery writes
    that arithmetic, and the class token concatenated beside the channels is cut with them."""
    torch.manual_seed(0)
    module = TokenNorm()
    with torch.no_grad():
        module.norm.weight.uniform_(0.5, 1.5)
        module.norm.bias.normal_(0.0, 0.2)
    model = _export(module, torch.randn(2, 7, 6), tmp_path / "norm.onnx", dynamo)
    analysis = analyze(model)
    stream = next(g for g in analysis.groups if g.size == 16)
    assert stream.prunable, stream.refused
    plan = uniform_plan(analysis, 0.5, group_scores(analysis, "l2"))
    pruned = assert_matches_oracle(analysis, plan, _inputs(model))
    assert "LayerNormalization" not in {n.op_type for n in pruned.graph.node}  # written out for C' of C


def test_layer_norm_refuses_channels_that_are_not_zero_once_removed(tmp_path: Path) -> None:
    """sigmoid(0) = 0.5: a removed channel would still count in the oracle's mean, so no exact prune."""
    model = _export(TokenNorm(squash=True), torch.randn(2, 7, 6), tmp_path / "norm.onnx", dynamo=True)
    stream = next(g for g in analyze(model).groups if g.size == 16)
    assert any("normalises over the channel axis" in r for r in stream.refused), stream.refused
