"""Find T and every place it lives in an exported SViT, or say why the graph has no time axis to follow.

A static-image SViT runs every layer T times: the image is repeated T times (``Unsqueeze ->
Expand/Tile``, or a Concat of copies), reshapes fold T into the batch for the convolutions
(``[T*B, ...]``) and back (``[T, B, ...]``), each neuron is unrolled into T steps (``Slice`` /
``Gather`` / ``Split`` -> ... -> comparison), and the steps are averaged (``ReduceMean`` over the
time axis, before or after the head) or returned raw (``[T, B, classes]``). T comes from the
neurons (``find_neurons``, by pattern); the rest from following the time axis op by op
(``time_flow``), so graphs of either torch exporter are read the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from svtprune.graph.analysis import constants_of
from svtprune.spiking.neurons import find_neurons
from svtprune.spiking.tensor_shapes import probe_batch, tensor_shapes
from svtprune.spiking.time_flow import Follower
from svtprune.spiking.time_tags import Flow, NotFollowable, Sites

WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


@dataclass
class TimeAxis:
    """T, the neurons that run it, and where it lives (``flow``: every tensor's tag and the sites)."""

    steps: int
    neurons: int
    flow: Flow
    mean_before_head: list[bool]  # per time mean: does a weighted layer follow it?

    @property
    def sites(self) -> Sites:
        return self.flow.sites

    def summary(self) -> dict:
        """Plain data for ``analyze --json``: T and the count of each kind of place it lives."""
        sites = self.flow.sites
        means = [
            f"{name} ({'before' if before else 'after'} the head)"
            for name, before in zip(sites.means + [s for s, _ in sites.sums], self.mean_before_head, strict=True)
        ]
        return {
            "T": self.steps,
            "repeat": sites.repeats,
            "folds": len(sites.folds),
            "constants_with_T": len(sites.edits),
            "neurons": self.neurons,
            "neuron_steps": self.neurons * self.steps,
            "step_reads": len(sites.steps) + self.steps * len(sites.splits),
            "stacks": len(sites.stacks),
            "mean": means,
            "outputs_with_time": sorted(sites.outputs),
        }

    def line(self) -> str:
        """One line for the human output of ``analyze``."""
        s = self.summary()
        end = f"averaged at {'; '.join(s['mean'])}" if s["mean"] else "not averaged: the output keeps the steps"
        outputs = f" (output {', '.join(s['outputs_with_time'])} is [T, ...])" if s["outputs_with_time"] else ""
        return (
            f"time axis: T={s['T']}, the image repeated at {', '.join(s['repeat'])}, folded into the batch by "
            f"{s['folds']} reshapes, {s['neurons']} neurons x {s['T']} steps, {end}{outputs}"
        )


def find_time_axis(model: onnx.ModelProto) -> TimeAxis | str:
    """The time axis of ``model``, or a one-line reason why there is none this module can follow."""
    neurons = find_neurons(model)
    if not neurons:
        return "no spiking neurons found (a non-spiking model has no time axis)"
    counts = sorted({n.time_steps for n in neurons})
    if len(counts) != 1:
        return f"the neurons run different numbers of time steps {counts}"
    steps = counts[0]
    if steps == 1:
        return "the neurons run one time step: there is no time axis to cut"
    if len(model.graph.input) != 1:
        return f"the graph has {len(model.graph.input)} inputs; only single-image models are followed"
    try:
        shapes = tensor_shapes(model, probe_batch(model, avoid=steps))
    except Exception as exc:  # ORT's or onnx's own error types: the graph does not run as given
        return f"cannot measure the graph's tensor shapes ({str(exc).splitlines()[0]})"
    try:
        flow = Follower(model, steps, shapes, constants_of(model)).run()
    except NotFollowable as exc:
        return f"cannot follow the time axis through {exc}"
    if not flow.sites.repeats:
        return f"no node repeats the image {steps} times (does the input already hold the time steps?)"
    if not flow.sites.means and not flow.sites.sums and not flow.sites.outputs:
        return "the outputs neither average the time steps nor keep them"
    reductions = flow.sites.means + [s for s, _ in flow.sites.sums]
    return TimeAxis(steps, len(neurons), flow, [_weighted_after(model, name) for name in reductions])


def _weighted_after(model: onnx.ModelProto, tensor: str) -> bool:
    """Whether a Conv/MatMul/Gemm reads ``tensor`` or anything computed from it (a mean before the head)."""
    reached = {tensor}
    for node in model.graph.node:
        if any(name in reached for name in node.input):
            if node.op_type in WEIGHTED:
                return True
            reached.update(node.output)
    return False
