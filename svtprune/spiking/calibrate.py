"""Wake a random-weight SViT: without calibration no neuron fires after the first convolution.

spikingjelly's initialisation (weights of std 0.02, BatchNorm statistics 0 and 1) keeps every
pre-activation far below the threshold, so a random export is a dead network and every image
gets the same logits. One pass over a small batch fixes that, layer by layer in execution order:
BatchNorm takes its running statistics from the batch (cumulative average), and each spiking
layer, just before it runs, gets the threshold at which about ``TARGET_RATE`` of its neurons fire
on the input it actually receives. A LIF that resets to 0 fires on ``x`` at threshold ``t`` as it
fires on ``x / t`` at threshold 1, so a threshold is the per-layer input scale, kept in the one
place every architecture shares. The classifier's bias is then centred on the batch's mean
logits, so that predictions follow what differs between images, not a common offset.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from spikingjelly.activation_based import neuron
from torch import nn

from svtprune.spiking.zoo import reset_states

TARGET_RATE = 0.15
RATE_RANGE = (0.05, 0.30)  # what calibration aims every layer into
DEAD_RATE = 0.01  # below this a layer counts as dead
SAMPLE = 200_000  # neurons per layer the threshold search simulates (the stem of a 224 px model has millions)
SEARCH_STEPS = 30


def spiking_layers(model: nn.Module) -> dict[str, neuron.BaseNode]:
    """Every spiking neuron layer by module name, in registration (≈ execution) order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, neuron.BaseNode)}


def calibrate(model: nn.Module, images: torch.Tensor, target: float = TARGET_RATE) -> dict:
    """Set BatchNorm statistics, thresholds and the head's bias from ``images``; returns what fires.

    The summary holds ``firing_rates`` ({layer: fraction of spikes}), ``distinct_predictions``
    and ``logit_spread`` (the standard deviation of the logits across images), measured in eval mode.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in norms]
    model.eval()
    with torch.no_grad():
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average: one batch gives its own statistics
            bn.train()
        with fitted_thresholds(model, target):
            model(images)
        reset_states(model)
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
            bn.eval()
        rates, logits = measure(model, images)
        centre_head(model, logits.mean(0))
        logits = logits - logits.mean(0)
    return {
        "firing_rates": rates,
        "distinct_predictions": int(logits.argmax(1).unique().numel()),
        "logit_spread": float(logits.std(0).mean()) if len(logits) > 1 else 0.0,
    }


@contextmanager
def fitted_thresholds(model: nn.Module, target: float) -> Iterator[None]:
    """While active, every spiking layer fits its threshold to the input it is about to fire on."""
    generator = torch.Generator().manual_seed(0)  # which neurons the search samples: fixed, so export is deterministic

    def fit(module: neuron.BaseNode, args: tuple) -> None:
        fit_threshold(module, args[0], target, generator)

    hooks = [m.register_forward_pre_hook(fit) for m in spiking_layers(model).values()]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def fit_threshold(module: neuron.BaseNode, x_seq: torch.Tensor, target: float, generator: torch.Generator) -> None:
    """Bisect (in log scale) the threshold whose firing rate on ``x_seq`` [T, ...] is nearest ``target``."""
    flat = x_seq.reshape(x_seq.shape[0], -1)
    if flat.shape[1] > SAMPLE:
        flat = flat[:, torch.randperm(flat.shape[1], generator=generator)[:SAMPLE]]
    top = float(flat.max())
    if not top > 0:
        return  # nothing positive to fire on: no threshold helps, and the rates will say so
    low, high = math.log(top * 1e-6), math.log(top * 1.001)  # above the largest input nothing fires
    best = (math.inf, float(module.v_threshold))
    for _ in range(SEARCH_STEPS):
        threshold = math.exp((low + high) / 2)
        rate = rate_at(module, flat, threshold)
        best = min(best, (abs(rate - target), threshold))
        if best[0] < 0.02:  # anywhere in 13-17 % will do
            break
        low, high = (math.log(threshold), high) if rate > target else (low, math.log(threshold))
    module.v_threshold = best[1]
    module.reset()


def rate_at(module: neuron.BaseNode, x_seq: torch.Tensor, threshold: float) -> float:
    """The layer's firing rate on ``x_seq`` at ``threshold`` (``forward``, not ``__call__``: no hooks)."""
    module.v_threshold = threshold
    module.reset()
    return float(module.forward(x_seq).float().mean())


def measure(model: nn.Module, images: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """Per-layer firing rates and the logits on ``images``, in eval mode."""
    totals: dict[str, list[float]] = {}

    def record(name: str):
        def hook(_module: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            totals.setdefault(name, []).append(float(out.float().mean()))

        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in spiking_layers(model).items()]
    try:
        model.eval()
        with torch.no_grad():
            logits = model(images)
        reset_states(model)
    finally:
        for hook in hooks:
            hook.remove()
    return {name: sum(v) / len(v) for name, v in totals.items()}, logits


def centre_head(model: nn.Module, mean_logits: torch.Tensor) -> None:
    """Subtract the batch's mean logits from the classifier's bias (every zoo model ends in ``head``)."""
    head = getattr(getattr(model, "net", model), "head", None)
    if isinstance(head, nn.Linear) and head.bias is not None:
        with torch.no_grad():
            head.bias -= mean_logits


def dead_layers(rates: dict[str, float]) -> list[str]:
    """Layers that (almost) never fire."""
    return [name for name, rate in rates.items() if rate < DEAD_RATE]
