"""Export: ONNX Runtime must compute what PyTorch computes, spikes bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron

from svtprune.spiking.export import export_module
from svtprune.spiking.neurons import find_neurons, with_taps
from svtprune.spiking.zoo import reset_states
from tests.conftest import SMALL
from tests.model_builders import active_model
from tests.oracle import run


def torch_spikes(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, list[np.ndarray]]:
    """Logits and every LIF layer's output [T, N, ...], in execution order."""
    seen: list[np.ndarray] = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().numpy()))
        for m in model.modules()
        if isinstance(m, neuron.BaseNode)
    ]
    with torch.no_grad():
        logits = model(x).numpy()
    reset_states(model)
    for hook in hooks:
        hook.remove()
    return logits, seen


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(SMALL))
def test_ort_spikes_and_logits_equal_pytorch(arch: str, tmp_path: Path) -> None:
    model = active_model(SMALL[arch], seed=5)
    onnx_model = export_module(model, torch.zeros(2, 1, 28, 28), tmp_path / "m.onnx")
    neurons = find_neurons(onnx_model)
    tapped = with_taps(onnx_model, neurons, spikes=True)
    for batch in (1, 5):  # exported at batch 2: the batch axis must be dynamic
        x = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32))
        logits, layers = torch_spikes(model, x)
        out = run(tapped, x.numpy())
        np.testing.assert_allclose(out["logits"], logits, atol=1e-4, rtol=1e-4)
        assert len(layers) == len(neurons)
        rates = []
        for spikes_torch, found in zip(layers, neurons, strict=True):
            spikes_ort = np.stack([out[name] for name in found.spikes])
            np.testing.assert_array_equal(spikes_ort.reshape(spikes_torch.shape), spikes_torch)
            rates.append(float(spikes_torch.mean()))
        assert 0.02 < float(np.mean(rates)) < 0.9, rates  # neurons really fire, so equality means something
