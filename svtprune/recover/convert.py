"""ONNX graph -> trainable ``torch.nn.Module``, with surrogate-gradient spiking neurons.

Why our own converter: onnx2torch (the maintained one) imports torchvision, which does not
load beside this CPU torch, and has no converter for ``GreaterOrEqual``; onnxruntime-training
needs onnx <= 1.17. The op set SViT exporters produce is small (``svtprune.recover.torch_ops``), so
the module interprets the graph node by node in its stored (topological) order.

Why it exports exactly: the module runs on the user's graph as given, not on a normalised
copy, and each trainable tensor is a parameter named after its initializer; writing the
parameters back (``export.write_back``) reproduces the same graph with new values.

Neurons: every comparison that ``find_neurons`` recognises as a firing layer is computed as
``H(a - b)`` with a surrogate gradient (spikingjelly's ATan). Forward is exact: for IEEE
floats ``a - b >= 0`` iff ``a >= b`` (subnormals kept), and ``a > b`` iff ``not (b - a >= 0)``.
The boolean comparison itself (used by hard resets through ``Where``) stays non-differentiable,
like spikingjelly's ``detach_reset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx
import torch
from onnx import numpy_helper
from spikingjelly.activation_based import surrogate
from torch import nn

from svtprune.errors import UserError
from svtprune.graph.io import attribute
from svtprune.recover.torch_ops import OPS, attrs, to_torch
from svtprune.runtime_layout import graph_time_first
from svtprune.spiking.neurons import find_neurons

WEIGHTED = {"Conv", "MatMul", "Gemm"}
AFFINE = {"BatchNormalization": (1, 2), "LayerNormalization": (1, 2)}


@dataclass
class SpikeSite:
    """A spike tensor computed from the comparison ``left OP right`` (``Cast`` or ``Where``)."""

    left: str
    right: str
    strict: bool  # Greater / Less: fires on a strict inequality
    flip: bool  # Less / LessOrEqual: operands swapped
    low: float = 0.0  # Where(fire, high, low); Cast is (1, 0)
    high: float = 1.0


def trainable_names(model: onnx.ModelProto) -> list[str]:
    """Float initializers that are weights: Conv/MatMul/Gemm operands, BN/LN affine, biases.

    A bias is an initializer added straight to a weighted node's output. Thresholds, BN
    statistics, scalars and shape constants stay fixed.
    """
    floats = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 1}
    producer = {out: node for node in model.graph.node for out in node.output}
    names: list[str] = []
    for node in model.graph.node:
        picked: list[str] = []
        if node.op_type in WEIGHTED:
            picked = list(node.input[:3]) if node.op_type != "MatMul" else list(node.input)
        elif node.op_type in AFFINE:
            picked = [node.input[i] for i in AFFINE[node.op_type] if i < len(node.input)]
        elif node.op_type == "Add":
            sources = [producer.get(name) for name in node.input]
            if any(s is not None and s.op_type in WEIGHTED for s in sources):
                picked = list(node.input)
        names += [n for n in picked if n in floats and n not in names]
    return names


def _spike_sites(model: onnx.ModelProto, consts: dict) -> dict[str, SpikeSite]:
    """Spike tensor name -> how to compute it, for every recognised neuron's time steps."""
    producer = {out: node for node in model.graph.node for out in node.output}
    sites: dict[str, SpikeSite] = {}
    for neuron in find_neurons(model):
        for spike in neuron.spikes:
            node = producer[spike]
            fire = producer[node.input[0]]
            site = SpikeSite(
                left=fire.input[0],
                right=fire.input[1],
                strict=fire.op_type in ("Greater", "Less"),
                flip=fire.op_type in ("Less", "LessOrEqual"),
            )
            if node.op_type == "Where":
                site.high = float(consts[node.input[1]].reshape(-1)[0])
                site.low = float(consts[node.input[2]].reshape(-1)[0])
            sites[spike] = site
    return sites


class OnnxModule(nn.Module):
    """Interprets one ONNX graph with torch ops; weights are parameters, neurons surrogate."""

    def __init__(self, model: onnx.ModelProto, alpha: float = 2.0) -> None:
        super().__init__()
        self.graph = model.graph
        self.surrogate = surrogate.ATan(alpha=alpha)
        arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        unknown = sorted({n.op_type for n in model.graph.node if n.op_type not in OPS})
        if unknown:
            raise UserError(f"cannot fine-tune: operators without a torch mapping: {', '.join(unknown)}")
        self.keys: dict[str, str] = {}  # initializer name -> attribute name in this module
        self.params = nn.ParameterDict()
        trainable = set(trainable_names(model))
        for index, (name, array) in enumerate(arrays.items()):
            key = f"t{index}"
            self.keys[name] = key
            if name in trainable:
                self.params[key] = nn.Parameter(to_torch(array))
            else:
                self.register_buffer(key, to_torch(array), persistent=False)
        self.trainable = [name for name in arrays if name in trainable]
        consts = dict(arrays)
        for node in model.graph.node:
            value = attribute(node, "value") if node.op_type == "Constant" else None
            if value is not None:
                consts[node.output[0]] = numpy_helper.to_array(value)
        self.sites = _spike_sites(model, consts)
        self.input_name = [i.name for i in model.graph.input if i.name not in arrays][0]
        self.time_first = graph_time_first(model)  # logits [T, N, classes]: scored as their mean over T
        self.output_names = [o.name for o in model.graph.output]
        self.last_reads = self._last_reads()
        self.probe: dict[str, torch.Tensor] | None = None  # {}: keeps each spike's H input (tests)
        # initializer name -> how the file stores it (a quantization grid, float16): the forward pass, and
        # what is written back, is the stored value, so a quantized model trains as it will run
        self.stored: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {}

    def _last_reads(self) -> list[list[str]]:
        """Per node, the tensors it is the last to read: dropped after it, which keeps no_grad
        evaluation at large batches from holding every intermediate of the graph."""
        last: dict[str, int] = {}
        for index, node in enumerate(self.graph.node):
            site = self.sites.get(node.output[0])
            for name in (site.left, site.right) if site else node.input:
                last[name] = index
        reads: list[list[str]] = [[] for _ in self.graph.node]
        for name, index in last.items():
            reads[index].append(name)
        return reads

    def tensor(self, name: str) -> torch.Tensor:
        key = self.keys[name]
        value = self.params[key] if key in self.params else getattr(self, key)
        view = self.stored.get(name)
        return value if view is None else view(value)

    def parameter_of(self, name: str) -> nn.Parameter:
        return self.params[self.keys[name]]

    def _spike(self, name: str, env: dict) -> torch.Tensor:
        site = self.sites[name]
        left, right = env[site.left], env[site.right]
        if site.flip:
            left, right = right, left
        # H(d) = (d >= 0): a >= b is H(a - b); a > b is 1 - H(b - a), the slope mirrored
        diff = right - left if site.strict else left - right
        if self.probe is not None:
            diff.retain_grad()
            self.probe[name] = diff
        spike = 1.0 - self.surrogate(diff) if site.strict else self.surrogate(diff)
        if (site.low, site.high) != (0.0, 1.0):
            spike = site.low + (site.high - site.low) * spike
        return spike

    def run(self, x: torch.Tensor, outputs: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Every requested tensor (default: the graph outputs) for input ``x``."""
        wanted = outputs or self.output_names
        env: dict[str, torch.Tensor] = {self.input_name: x}
        for name in self.keys:
            env[name] = self.tensor(name)
        keep = set(wanted)
        for node, done in zip(self.graph.node, self.last_reads, strict=True):
            self._step(node, env)
            for name in done:
                if name not in keep:
                    env.pop(name, None)
        return {name: env[name] for name in wanted}

    def _step(self, node: onnx.NodeProto, env: dict) -> None:
        if node.output[0] in self.sites:
            env[node.output[0]] = self._spike(node.output[0], env)
            return
        inputs = [env[name] if name else None for name in node.input]
        try:
            results = OPS[node.op_type](node, inputs)
        except (RuntimeError, NotImplementedError, KeyError) as exc:
            raise UserError(f"cannot run node {node.name or node.op_type} ({node.op_type}): {exc}") from exc
        for name, value in zip(node.output, results, strict=False):
            env[name] = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The first graph output (the logits), ``[N, classes]`` as ``runtime.logits_of`` scores them."""
        logits = self.run(x, self.output_names[:1])[self.output_names[0]]
        return logits.mean(0) if self.time_first else logits


def convert(model: onnx.ModelProto, alpha: float = 2.0) -> OnnxModule:
    """A trainable module computing what ``model`` computes (see the module docstring)."""
    inits = {t.name for t in model.graph.initializer}
    if len([i for i in model.graph.input if i.name not in inits]) != 1:
        raise UserError("cannot fine-tune: the model must have exactly one input")
    return OnnxModule(model, alpha)


__all__ = ["OnnxModule", "SpikeSite", "attrs", "convert", "trainable_names"]
