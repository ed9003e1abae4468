"""Small random models for the graph tests, exported once per session.

Fresh spikingjelly models do not spike (all logits 0), so an equality test on them proves
nothing: ``make_active`` re-randomises BatchNorm so that a fair share of neurons fire.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from svtprune.spiking.export import export_module
from svtprune.spiking.zoo import ArchConfig, build_model


def parse_with_weights(text: str, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A graph written in ONNX text, with float32 initializers from ``weights``."""
    from onnx import numpy_helper

    model = onnx.parser.parse_model(text)
    model.graph.initializer.extend(numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items())
    return model


def make_active(model: nn.Module, seed: int) -> nn.Module:
    """BatchNorm scales/shifts drawn so pre-activations cross the thresholds often."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.weight.copy_(2.0 + 2.0 * torch.rand(n, generator=generator))
                module.bias.copy_(0.5 + 0.5 * torch.randn(n, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            # Spikformer's own init (std 0.02) leaves activations far below any threshold
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.normal_(0.0, 1.5 / fan_in**0.5, generator=generator)
                if module.bias is not None:
                    module.bias.normal_(0.0, 0.1, generator=generator)
    return model.eval()


class TinyViT(nn.Module):
    """A plain (non-spiking) ViT: LayerNorm, softmax attention, GELU MLP, learned positions."""

    def __init__(self, dim: int = 32, heads: int = 4, depth: int = 1, mlp: int = 64, img: int = 28) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(1, dim, kernel_size=7, stride=7)
        self.pos = nn.Parameter(torch.randn(1, (img // 7) ** 2, dim) * 0.1)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            self.blocks.append(
                nn.ModuleDict(
                    dict(
                        ln1=nn.LayerNorm(dim),
                        qkv=nn.Linear(dim, 3 * dim),
                        proj=nn.Linear(dim, dim),
                        ln2=nn.LayerNorm(dim),
                        fc1=nn.Linear(dim, mlp),
                        fc2=nn.Linear(mlp, dim),
                    )
                )
            )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        n, length, dim = x.shape
        for block in self.blocks:
            qkv = block["qkv"](block["ln1"](x)).reshape(n, length, 3, self.heads, dim // self.heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            attn = (q @ k.transpose(-2, -1) * (dim // self.heads) ** -0.5).softmax(-1)
            x = x + block["proj"]((attn @ v).transpose(1, 2).reshape(n, length, dim))
            x = x + block["fc2"](torch.nn.functional.gelu(block["fc1"](block["ln2"](x))))
        return self.head(self.norm(x).mean(1))


def export_for_tests(model: nn.Module, example: torch.Tensor, path: Path) -> onnx.ModelProto:
    return export_module(model, example, path, force=True)


def active_model(config: ArchConfig, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return make_active(build_model(config), seed)


def spiking_model(config: ArchConfig, seed: int, path: Path) -> onnx.ModelProto:
    model = active_model(config, seed)
    example = torch.from_numpy(
        np.random.default_rng(seed).standard_normal((2, config.in_channels, config.img_size, config.img_size))
    )
    return export_for_tests(model, example.float(), path)


class PlainLIF(nn.Module):
    """A plain-torch LIF (charge, fire, hard reset) that the TorchScript exporter can trace."""

    def __init__(self, tau: float, threshold: float) -> None:
        super().__init__()
        self.tau, self.threshold = tau, threshold

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v = x_seq[0] / self.tau  # starting from x[0], not zeros_like, keeps the batch dynamic
        spikes = []
        for t in range(x_seq.shape[0]):
            if t > 0:
                v = v + (x_seq[t] - v) / self.tau
            spike = (v >= self.threshold).float()
            v = v * (1.0 - spike)
            spikes.append(spike)
        return torch.stack(spikes)


def torchscript_model(config: ArchConfig, seed: int, path: Path) -> onnx.ModelProto:
    """The same zoo model through the other exporter: TorchScript, plain LIF, dynamic_axes."""
    from spikingjelly.activation_based import functional, neuron

    torch.manual_seed(seed)
    model = make_active(build_model(config), seed)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, neuron.LIFNode):
                setattr(parent, name, PlainLIF(float(child.tau), float(child.v_threshold)))

    def seq_to_ann(x_seq: torch.Tensor, modules: tuple) -> torch.Tensor:
        steps = x_seq.shape[0]
        y = x_seq.flatten(0, 1)
        for module in modules if isinstance(modules, list | tuple) else (modules,):
            y = module(y)
        return y.reshape(steps, -1, *y.shape[1:])  # unflatten would bake the batch size in

    original = functional.seq_to_ann_forward
    functional.seq_to_ann_forward = seq_to_ann
    try:
        example = torch.randn(2, config.in_channels, config.img_size, config.img_size)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=False,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "batch"}},
                opset_version=17,
            )
    finally:
        functional.seq_to_ann_forward = original
    return onnx.load(str(path))


def float16_weights(model: onnx.ModelProto, min_size: int = 2) -> onnx.ModelProto:
    """Float32 initializers stored as float16, each read through a Cast to float32 (what half-weight exports write)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    casts = []
    for tensor in out.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT and int(np.prod(tensor.dims)) >= min_size:
            name = tensor.name
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{name}_half"))
            casts.append(
                helper.make_node("Cast", [f"{name}_half"], [name], name=f"{name}_cast", to=onnx.TensorProto.FLOAT)
            )
    nodes = casts + list(out.graph.node)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def float16_graph(model: onnx.ModelProto) -> onnx.ModelProto:
    """The whole graph in float16 (weights used directly by float16 operators); input and output stay float32."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for tensor in out.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    for node in out.graph.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == onnx.TensorProto.FLOAT:
                a.i = onnx.TensorProto.FLOAT16
    x, y = out.graph.input[0].name, out.graph.output[0].name
    for node in out.graph.node:
        node.input[:] = [f"{x}_half" if name == x else name for name in node.input]
        node.output[:] = [f"{y}_half" if name == y else name for name in node.output]
    first = helper.make_node("Cast", [x], [f"{x}_half"], name="input_half", to=onnx.TensorProto.FLOAT16)
    last = helper.make_node("Cast", [f"{y}_half"], [y], name="output_float", to=onnx.TensorProto.FLOAT)
    nodes = [first, *out.graph.node, last]
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    return out


def tiny_spiking(batch: int | str = "N", mean_over_time: bool = False, bias: float = 0.0) -> onnx.ModelProto:
    """x [B, 1, 4, 4] -> MatMul(8) -> a two-step neuron (fire at 1, reset to 0) -> MatMul(10) per step.

    The output is ``[2, B, 10]`` as a raw spikingjelly model returns it, or with ``mean_over_time`` its
    ReduceMean over axis 0 ``[B, 10]``; ``batch`` an int fixes the input's batch; a ``bias`` of -100
    leaves the neuron silent (a dead network)."""
    output = f"float[{batch}, 10] y" if mean_over_time else f"float[2, {batch}, 10] y"
    tail = "z = Add(m, b2)\n y = ReduceMean <axes = [0], keepdims = 0> (z)" if mean_over_time else "y = Add(m, b2)"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[{batch}, 1, 4, 4] x) => ({output}) {{
        h = Flatten <axis = 1> (x)
        p = MatMul(h, w1)
        a = Add(p, b1)
        f0 = GreaterOrEqual(a, thr)
        s0 = Cast <to = 1> (f0)
        k0 = Sub(one, s0)
        r0 = Mul(a, k0)
        v1 = Add(r0, a)
        f1 = GreaterOrEqual(v1, thr)
        s1 = Cast <to = 1> (f1)
        u0 = Unsqueeze(s0, zero)
        u1 = Unsqueeze(s1, zero)
        st = Concat <axis = 0> (u0, u1)
        m = MatMul(st, w2)
        {tail}
    }}"""
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((16, 8)),
        "b1": rng.standard_normal(8) + bias,
        "w2": rng.standard_normal((8, 10)),
    }
    weights.update(b2=rng.standard_normal(10), thr=np.array(1.0), one=np.array(1.0))
    model = parse_with_weights(text, weights)
    model.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "zero"))
    return model
