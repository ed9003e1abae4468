"""The pruning oracle: a pruned model must equal the original with removed slices zeroed."""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.analysis import Analysis
from svtprune.graph.plan import Plan, kept_for_ratio
from svtprune.graph.surgery import prune, zero_out
from svtprune.runtime import make_session, predict
from svtprune.spiking.neurons import find_neurons, with_taps


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    return predict(make_session(model), x)


def spike_counts(model: onnx.ModelProto, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and, per neuron and time step, each sample's number of spikes."""
    neurons = find_neurons(model)
    outputs = run(with_taps(model, neurons, spikes=True), x)
    logits = outputs[model.graph.output[0].name]
    counts = []
    for neuron in neurons:
        per_step = [outputs[s].reshape(outputs[s].shape[0], -1).sum(axis=1) for s in neuron.spikes]
        counts.append(np.stack(per_step))
    return logits, counts


def random_plan(analysis: Analysis, rng: np.random.Generator, max_ratio: float = 0.8) -> Plan:
    """Random ratios, random kept sets, and sometimes whole heads removed."""
    plan = Plan(meta={"method": "random"})
    for group in analysis.prunable_groups:
        ratio = float(rng.uniform(0.0, max_ratio))
        drop = int(rng.integers(0, 3)) if group.head_rows and rng.random() < 0.5 else 0
        plan.kept[group.name] = kept_for_ratio(analysis, group, ratio, rng.random(group.size), drop_heads=drop)
    return plan


def assert_matches_oracle(analysis: Analysis, plan: Plan, x: np.ndarray) -> onnx.ModelProto:
    pruned = prune(analysis, plan)
    zeroed = zero_out(analysis, plan)
    logits_p, spikes_p = spike_counts(pruned, x)
    logits_z, spikes_z = spike_counts(zeroed, x)
    np.testing.assert_allclose(logits_p, logits_z, atol=1e-4, rtol=0)
    assert len(spikes_p) == len(spikes_z)
    for count_p, count_z in zip(spikes_p, spikes_z, strict=True):
        np.testing.assert_array_equal(count_p, count_z)
    return pruned
