"""Build the exporter corpus: compact ONNX graphs exported the way users export them.

The corpus (``tests/data/corpus/``) holds small random-init models of the families users
bring (timm ViT/DeiT/PVTv2/MobileViT/LeViT/EfficientFormer/PoolFormer/ConvNeXt/Swin and the
spikingjelly 2.0.0 Spiking Vision Transformer zoo), each exported with the exporters users
use (the classic TorchScript exporter at opset 17, ``dynamo=True`` at opsets 18 and 20), with
a dynamic batch and with a fixed one. ``tools/bench_corpus.py`` runs svtprune's CLI over it.

This script needs timm, which needs torchvision; the registry's torchvision does not import
against the CPU torch wheel of svtprune's own environment, so it runs in a side environment:

    python3.11 -m venv /work/corpus-venv
    /work/corpus-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /work/corpus-venv/bin/pip install timm onnx onnxscript onnxruntime numpy spikingjelly==2.0.0

(measured with timm 1.0.31, onnx 1.23.2, onnxscript 0.7.2, onnxruntime 1.32.0, numpy 2.4.6;
never change the torch pin there afterwards). Then, from the repository root:

    /work/corpus-venv/bin/python tools/make_corpus.py            # everything (~10-20 min, 2 cores)
    /work/corpus-venv/bin/python tools/make_corpus.py --only vit  # graphs whose name contains "vit"
    /work/corpus-venv/bin/python tools/make_corpus.py --list      # the plan, nothing built

Everything is deterministic (seed 0 for weights, seed 1 for reference inputs). Weights are
never downloaded. Each graph is written without doc strings, metadata_props and value_info.
Beside every ``NAME.onnx`` goes ``NAME.ref.npz`` (``x``: a seeded N(0,1) input at the graph's
batch, or 2 when the batch is dynamic; ``y``: torch's output on it), and ``corpus.json``
describes every graph (family, exporter, opset, the batch the file really has, shapes, output
layout, parameters, bytes, ORT-vs-torch difference, firing rate for spiking models) and every
export that failed, with why. ``--only`` rebuilds a subset and merges it into corpus.json.

timm models: timm's init leaves residual branches nearly silent (layer scales 1e-5/1e-6, LeViT's
residual BatchNorm weights 0, weights at std 0.02), so an oracle check would pass whatever is
pruned; ``liven_timm`` re-draws weights at std 1/sqrt(fan_in), layer scales and norm weights
U(0.5, 1.5), and BatchNorm statistics from data (see its docstring). ``y_std`` in corpus.json is
the spread of the reference logits.

Spiking models: with spikingjelly's default init nothing spikes and every logit is 0, so each
one is calibrated here on 32 N(0,1) images: every BatchNorm gets the statistics of its input
(one forward pass in train mode with momentum None) and an affine gain of 2 (pre-activations
~N(0, 4)), then the classifier is re-drawn so the logits have unit spread and is re-centred on
the batch mean. The firing rate (share of neuron outputs that spike on the reference input)
is recorded per graph.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "corpus"
SEED = 0
REF_SEED = 1
MAX_BYTES = 2 * 1024 * 1024
ATOL = 1e-4


# --------------------------------------------------------------------------- models


@dataclass
class Built:
    model: nn.Module
    input_shape: tuple  # C, H, W
    source: str  # timm | spikingjelly
    layout: str = "[B,classes]"
    transformer_like: bool = True
    spiking: bool = False
    config: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)


def _timm(name: str, **kw) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10, **kw)


def liven_timm(model: nn.Module, input_shape, seed: int = SEED + 200) -> dict:
    """Give a random timm model a trained model's signal paths, so pruning changes the output.

    timm's init makes residual branches nearly silent: layer scales start at 1e-5 or 1e-6
    (ConvNeXt, PoolFormer, EfficientFormer), LeViT's residual BatchNorms at weight 0, and
    weights at std 0.02; an oracle check at 1e-4 on such a model passes whatever is removed.
    Here every Linear/Conv weight is re-drawn with std 1/sqrt(fan_in) (biases N(0, 0.1)),
    layer scales set to U(0.5, 1.5), norm affines to U(0.5, 1.5) / N(0, 0.1), and every
    BatchNorm gets the statistics of its input on 32 N(0,1) images (one train-mode pass).
    """
    g = torch.Generator().manual_seed(seed)
    n_w = n_ls = n_norm = 0
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                fan_in = mod.weight[0].numel()
                mod.weight.normal_(0.0, 1.0 / np.sqrt(fan_in), generator=g)
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.1, generator=g)
                n_w += 1
            elif isinstance(mod, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
                if getattr(mod, "weight", None) is not None:
                    mod.weight.uniform_(0.5, 1.5, generator=g)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.normal_(0.0, 0.1, generator=g)
                n_norm += 1
        for pname, p in model.named_parameters():
            leaf = pname.rsplit(".", 1)[-1]
            if leaf == "gamma" or ("layer_scale" in pname and leaf == "scale"):
                p.uniform_(0.5, 1.5, generator=g)
                n_ls += 1
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bns:
            for bn in bns:
                bn.reset_running_stats()
                bn.momentum = None
            model.train()
            model(torch.randn((32, *input_shape), generator=g))
            model.eval()
            for bn in bns:
                bn.momentum = 0.1
    model.eval()
    return {
        "method": "Linear/Conv weights N(0, 1/fan_in), biases N(0, 0.1); layer scales and norm weights "
        "U(0.5, 1.5), norm biases N(0, 0.1); BatchNorm statistics from 32 N(0,1) images",
        "weights_redrawn": n_w,
        "layer_scales": n_ls,
        "norms": n_norm,
        "batchnorms_from_data": len(bns),
    }


def build_vit_tiny() -> Built:
    cfg = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0)
    return Built(
        _timm("vit_tiny_patch16_224", **cfg), (3, 32, 32), "timm", config={"timm": "vit_tiny_patch16_224", **cfg}
    )


def build_vit_tiny_nofused() -> Built:
    """ViT with timm's fused attention off (explicit q @ k^T * scale, softmax, @ v)."""
    cfg = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3, mlp_ratio=4.0)
    m = _timm("vit_tiny_patch16_224", **cfg)
    for mod in m.modules():
        if hasattr(mod, "fused_attn"):
            mod.fused_attn = False
    return Built(m, (3, 32, 32), "timm", config={"timm": "vit_tiny_patch16_224", "fused_attn": False, **cfg})


def build_deit_distilled() -> Built:
    cfg = dict(img_size=32, patch_size=4, embed_dim=48, depth=2, num_heads=3)
    return Built(
        _timm("deit_tiny_distilled_patch16_224", **cfg),
        (3, 32, 32),
        "timm",
        config={"timm": "deit_tiny_distilled_patch16_224", **cfg},
    )


def build_pvt_v2() -> Built:
    cfg = dict(
        embed_dims=(16, 24, 32, 48),
        depths=(1, 1, 1, 1),
        num_heads=(1, 1, 2, 2),
        sr_ratios=(8, 4, 2, 1),
        mlp_ratios=(4, 4, 4, 4),
    )
    return Built(_timm("pvt_v2_b0", **cfg), (3, 32, 32), "timm", config={"timm": "pvt_v2_b0", **cfg})


def build_mobilevit() -> Built:
    from timm.models.byobnet import ByobNet, ByoModelCfg
    from timm.models.mobilevit import _inverted_residual_block, _mobilevit_block

    cfg = ByoModelCfg(
        blocks=(
            _inverted_residual_block(d=1, c=16, s=1, br=2.0),
            _inverted_residual_block(d=1, c=24, s=2, br=2.0),
            _mobilevit_block(d=1, c=32, s=2, transformer_dim=32, transformer_depth=1, patch_size=2, br=2.0),
            _mobilevit_block(d=1, c=40, s=2, transformer_dim=40, transformer_depth=2, patch_size=2, br=2.0),
        ),
        stem_chs=16,
        stem_type="3x3",
        stem_pool="",
        downsample="",
        act_layer="silu",
        num_features=80,
    )
    m = ByobNet(cfg=cfg, num_classes=10)
    return Built(
        m,
        (3, 32, 32),
        "timm",
        config={
            "timm": "ByobNet (mobilevit_xxs blocks, reduced)",
            "blocks": "ir(16,s1) ir(24,s2) mvit(32,dim32,depth1,p2,s2) mvit(40,dim40,depth2,p2,s2)",
            "num_features": 80,
        },
    )


def build_levit() -> Built:
    cfg = dict(img_size=32, embed_dim=(32, 48, 64), key_dim=8, num_heads=(2, 3, 4), depth=(1, 1, 1))
    return Built(_timm("levit_128s", **cfg), (3, 32, 32), "timm", config={"timm": "levit_128s", **cfg})


def build_efficientformer() -> Built:
    """timm fixes EfficientFormer's attention bias at 7x7 tokens (224 px input); at 64 px the last
    stage has 2x2 tokens, so its Attention is rebuilt for resolution 2 (and fewer, narrower heads)."""
    from timm.models import efficientformer as ef

    cfg = dict(img_size=64, depths=(1, 1, 1, 2), embed_dims=(16, 24, 32, 48), num_vit=1)
    m = _timm("efficientformer_l1", **cfg)
    attn = dict(key_dim=16, num_heads=2, attn_ratio=2, resolution=2)
    for mod in m.modules():
        if isinstance(mod, ef.MetaBlock1d):
            mod.token_mixer = ef.Attention(mod.norm1.normalized_shape[0], **attn)
    return Built(m, (3, 64, 64), "timm", config={"timm": "efficientformer_l1", **cfg, "attention": attn})


def build_poolformer() -> Built:
    from timm.models.metaformer import GroupNorm1, MetaFormer

    cfg = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 64))
    m = MetaFormer(
        num_classes=10,
        downsample_norm=None,
        mlp_act=nn.GELU,
        mlp_bias=True,
        norm_layers=GroupNorm1,
        layer_scale_init_values=1e-5,
        res_scale_init_values=None,
        use_mlp_head=False,
        **cfg,
    )
    return Built(m, (3, 32, 32), "timm", config={"timm": "MetaFormer with poolformer_s12 settings", **cfg})


def build_convnext() -> Built:
    cfg = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 64))
    return Built(_timm("convnext_atto", **cfg), (3, 32, 32), "timm", config={"timm": "convnext_atto", **cfg})


def build_swin() -> Built:
    cfg = dict(img_size=32, patch_size=2, window_size=4, embed_dim=24, depths=(2, 2), num_heads=(2, 4))
    return Built(
        _timm("swin_tiny_patch4_window7_224", **cfg),
        (3, 32, 32),
        "timm",
        config={"timm": "swin_tiny_patch4_window7_224", **cfg},
    )


class TimeMean(nn.Module):
    """What users wrap around a raw spikingjelly Spikformer: average the T steps."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).mean(0)


def _neurons(model: nn.Module):
    from spikingjelly.activation_based import neuron

    return [m for m in model.modules() if isinstance(m, neuron.BaseNode)]


def _reset(model: nn.Module):
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


def firing(model: nn.Module, x: torch.Tensor):
    """Run model on x; return (output, share of neuron outputs that spike, per-neuron shares)."""
    stats = []

    def hook(_m, _i, out):
        stats.append((float(out.detach().float().sum()), out.numel()))

    hs = [n.register_forward_hook(hook) for n in _neurons(model)]
    try:
        _reset(model)
        with torch.no_grad():
            y = model(x)
        _reset(model)
    finally:
        for h in hs:
            h.remove()
    total = sum(s for s, _ in stats)
    count = sum(c for _, c in stats)
    return y, (total / count if count else 0.0), [s / c for s, c in stats]


def calibrate_spiking(model: nn.Module, input_shape, gain: float = 2.0) -> dict:
    """Make neurons fire on N(0,1) inputs: BatchNorm stats from data, gain 2; re-draw the head."""
    g = torch.Generator().manual_seed(SEED + 100)
    x = torch.randn((32, *input_shape), generator=g)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one pass sets running stats to batch stats
            if bn.affine:
                bn.weight.fill_(gain)
                bn.bias.zero_()
        model.train()
        _reset(model)
        model(x)
        _reset(model)
        model.eval()
        for bn in bns:
            bn.momentum = 0.1
        head = model.head
        feats = []
        h = head.register_forward_hook(lambda _m, i, _o: feats.append(i[0].detach()))
        _reset(model)
        model(x)
        _reset(model)
        h.remove()
        f = feats[0]
        ms = float((f.float() ** 2).mean())
        std = 1.0 / np.sqrt(head.in_features * max(ms, 1e-6))
        head.weight.normal_(0.0, std, generator=g)
        if head.bias is not None:
            head.bias.zero_()
            logits = torch.nn.functional.linear(f, head.weight)
            head.bias.copy_(-logits.reshape(-1, logits.shape[-1]).mean(0))
    _, rate, per = firing(model, x)
    return {
        "method": f"BatchNorm stats from 32 N(0,1) images, affine gain {gain}; head re-drawn "
        "(unit logit spread) and re-centred on the batch mean",
        "bn_layers": len(bns),
        "neurons": len(per),
        "calib_firing_rate": round(rate, 4),
        "silent_neurons": sum(1 for p in per if p == 0.0),
    }


def _sj_zoo():
    from spikingjelly.activation_based import model as zoo

    return zoo


def build_spikformer_fmnist_raw() -> Built:
    cfg = dict(
        T=4,
        in_channels=1,
        img_size_h=28,
        img_size_w=28,
        patch_size=4,
        num_classes=10,
        embed_dims=64,
        num_heads=4,
        depths=2,
    )
    m = _sj_zoo().Spikformer(**cfg)
    cal = calibrate_spiking(m, (1, 28, 28))
    return Built(
        m,
        (1, 28, 28),
        "spikingjelly",
        layout="[T,B,classes]",
        spiking=True,
        config={"spikingjelly": "Spikformer", **cfg, "wrapper": None},
        calibration=cal,
    )


def build_spikformer_fmnist() -> Built:
    b = build_spikformer_fmnist_raw()
    return Built(
        TimeMean(b.model).eval(),
        b.input_shape,
        b.source,
        spiking=True,
        config={**b.config, "wrapper": "mean(0)"},
        calibration=b.calibration,
    )


def build_spikformer_cifar() -> Built:
    cfg = dict(
        T=4,
        in_channels=3,
        img_size_h=32,
        img_size_w=32,
        patch_size=4,
        num_classes=10,
        embed_dims=64,
        num_heads=2,
        mlp_ratio=4.0,
        depths=2,
    )
    m = _sj_zoo().Spikformer(**cfg)
    cal = calibrate_spiking(m, (3, 32, 32))
    return Built(
        TimeMean(m).eval(),
        (3, 32, 32),
        "spikingjelly",
        spiking=True,
        config={"spikingjelly": "Spikformer (spikformer_cifar10 layout, reduced)", **cfg, "wrapper": "mean(0)"},
        calibration=cal,
    )


def build_sdt() -> Built:
    cfg = dict(T=4, in_channels=1, num_classes=10, embed_dims=64, num_heads=4, depths=2)
    m = _sj_zoo().SpikeDrivenTransformer(**cfg)
    cal = calibrate_spiking(m, (1, 28, 28))
    return Built(
        m,
        (1, 28, 28),
        "spikingjelly",
        spiking=True,
        config={"spikingjelly": "SpikeDrivenTransformer", **cfg},
        calibration=cal,
    )


def build_qkformer() -> Built:
    cfg = dict(T=4, in_channels=1, num_classes=10, embed_dims=64, num_heads=(1, 2, 2), depths=(1, 1, 1))
    m = _sj_zoo().QKFormer(**cfg)
    cal = calibrate_spiking(m, (1, 28, 28))
    return Built(
        m, (1, 28, 28), "spikingjelly", spiking=True, config={"spikingjelly": "QKFormer", **cfg}, calibration=cal
    )


def build_maxformer() -> Built:
    cfg = dict(T=4, in_channels=1, num_classes=10, embed_dims=48, depths=(1, 1, 1), cifar=True)
    m = _sj_zoo().MaxFormer(**cfg)
    cal = calibrate_spiking(m, (1, 28, 28))
    return Built(
        m, (1, 28, 28), "spikingjelly", spiking=True, config={"spikingjelly": "MaxFormer", **cfg}, calibration=cal
    )


FAMILIES: dict[str, Callable[[], Built]] = {
    "vit_tiny": build_vit_tiny,
    "vit_tiny_nofused": build_vit_tiny_nofused,
    "deit_distilled": build_deit_distilled,
    "pvt_v2_b0": build_pvt_v2,
    "mobilevit_xxs": build_mobilevit,
    "levit": build_levit,
    "efficientformer_l1": build_efficientformer,
    "poolformer": build_poolformer,
    "convnext_atto": build_convnext,
    "swin": build_swin,
    "spikformer_fmnist_raw": build_spikformer_fmnist_raw,
    "spikformer_fmnist": build_spikformer_fmnist,
    "spikformer_cifar": build_spikformer_cifar,
    "sdt": build_sdt,
    "qkformer": build_qkformer,
    "maxformer": build_maxformer,
}

# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class Variant:
    family: str
    exporter: str  # classic | dynamo
    opset: int
    batch: object  # "dynamic" or int (what was asked)
    example_batch: int | None = None  # example input batch for a dynamic export (default 2)

    @property
    def name(self) -> str:
        if self.batch == "dynamic":
            tag = "dyn" if self.example_batch in (None, 2) else f"dynex{self.example_batch}"
        else:
            tag = f"b{self.batch}"
        return f"{self.family}__{self.exporter}{self.opset}_{tag}"


def plan() -> list[Variant]:
    v: list[Variant] = []
    timm_fams = [
        "vit_tiny",
        "deit_distilled",
        "pvt_v2_b0",
        "mobilevit_xxs",
        "levit",
        "efficientformer_l1",
        "poolformer",
        "convnext_atto",
        "swin",
    ]
    for f in timm_fams:
        v.append(Variant(f, "classic", 17, "dynamic"))
        v.append(Variant(f, "dynamo", 18, "dynamic"))
    v += [
        Variant("vit_tiny_nofused", "classic", 17, "dynamic"),
        Variant("vit_tiny", "classic", 17, 1),
        Variant("vit_tiny", "dynamo", 20, "dynamic"),
        Variant("vit_tiny", "dynamo", 20, 1),
        Variant("vit_tiny", "dynamo", 18, "dynamic", example_batch=1),
        Variant("deit_distilled", "dynamo", 20, 2),
        Variant("pvt_v2_b0", "dynamo", 20, 1),
        Variant("mobilevit_xxs", "dynamo", 18, 1),
        Variant("levit", "classic", 17, 1),
        Variant("efficientformer_l1", "dynamo", 20, 1),
        Variant("poolformer", "classic", 17, 1),
        Variant("convnext_atto", "dynamo", 20, 1),
        Variant("swin", "classic", 17, 1),
        Variant("swin", "dynamo", 18, 2),
        # spiking zoo
        Variant("spikformer_fmnist_raw", "dynamo", 18, "dynamic"),
        Variant("spikformer_fmnist", "classic", 17, "dynamic"),  # expected to fail (sj_lif::forward)
        Variant("spikformer_fmnist", "dynamo", 18, "dynamic"),
        Variant("spikformer_fmnist", "dynamo", 20, 1),
        Variant("spikformer_cifar", "dynamo", 20, "dynamic"),
        Variant("spikformer_cifar", "dynamo", 18, 1),
        Variant("sdt", "dynamo", 18, "dynamic"),
        Variant("sdt", "dynamo", 20, 1),
        Variant("qkformer", "dynamo", 18, "dynamic"),
        Variant("qkformer", "dynamo", 20, 1),
        Variant("qkformer", "dynamo", 18, 2),
        Variant("maxformer", "dynamo", 20, "dynamic"),
        Variant("maxformer", "dynamo", 18, 1),
    ]
    return v


# --------------------------------------------------------------------------- export


def strip(m: onnx.ModelProto) -> None:
    """Drop doc strings, metadata_props and value_info (exporter bookkeeping, not the model)."""

    def graph(g: onnx.GraphProto):
        g.doc_string = ""
        del g.value_info[:]
        for t in g.initializer:
            t.doc_string = ""
        for vi in list(g.input) + list(g.output):
            vi.doc_string = ""
        for n in g.node:
            n.doc_string = ""
            del n.metadata_props[:]
            for a in n.attribute:
                a.doc_string = ""
                if a.HasField("g"):
                    graph(a.g)
                for sg in a.graphs:
                    graph(sg)
        if hasattr(g, "metadata_props"):
            del g.metadata_props[:]

    m.doc_string = ""
    del m.metadata_props[:]
    graph(m.graph)
    for f in m.functions:
        f.doc_string = ""
        if hasattr(f, "metadata_props"):
            del f.metadata_props[:]
        if hasattr(f, "value_info"):
            del f.value_info[:]
        for n in f.node:
            n.doc_string = ""
            del n.metadata_props[:]


def _dims(vi: onnx.ValueInfoProto) -> list:
    out = []
    for d in vi.type.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            out.append(d.dim_param)
        else:
            out.append("?")
    return out


def export(model: nn.Module, x: torch.Tensor, path: Path, var: Variant, out_batch_axis: int) -> str:
    """Export as users do; return the exporter's captured console output."""
    buf = io.StringIO()
    dynamic = var.batch == "dynamic"
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        warnings.simplefilter("ignore")
        if var.exporter == "classic":
            kw = dict(dynamo=False, opset_version=var.opset, input_names=["input"], output_names=["logits"])
            if dynamic:
                kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {out_batch_axis: "batch"}}
            torch.onnx.export(model, (x,), str(path), **kw)
        else:
            kw = dict(dynamo=True, opset_version=var.opset)
            if dynamic:
                kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
            torch.onnx.export(model, (x,), str(path), **kw)
    return buf.getvalue()


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def torch_run(b: Built, x: np.ndarray):
    xt = torch.from_numpy(x)
    if b.spiking:
        y, rate, per = firing(b.model, xt)
        return y.numpy(), rate, per
    with torch.no_grad():
        return b.model(xt).numpy(), None, None


def ref_input(shape, batch: int, seed: int = REF_SEED) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *shape), generator=g).numpy().astype(np.float32)


def make_one(var: Variant, b: Built, out: Path) -> dict:
    name = var.name
    dynamic = var.batch == "dynamic"
    ex_batch = (var.example_batch or 2) if dynamic else int(var.batch)
    out_batch_axis = 1 if b.layout == "[T,B,classes]" else 0
    x_ex = torch.from_numpy(ref_input(b.input_shape, ex_batch, seed=REF_SEED + 7))
    if b.spiking:
        _reset(b.model)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as td:
        raw = Path(td) / "model.onnx"
        log = export(b.model, x_ex, raw, var, out_batch_axis)
        if b.spiking:
            _reset(b.model)
        export_s = time.time() - t0
        raw_bytes = sum(p.stat().st_size for p in Path(td).iterdir())
        m = onnx.load(str(raw), load_external_data=True)
    strip(m)
    dst = out / f"{name}.onnx"
    onnx.save(m, str(dst))
    size = dst.stat().st_size
    onnx.checker.check_model(str(dst))
    in_dims = _dims(m.graph.input[0])
    out_dims = _dims(m.graph.output[0])
    real_batch = in_dims[0] if isinstance(in_dims[0], int) else "dynamic"
    ref_batch = real_batch if isinstance(real_batch, int) else 2
    x = ref_input(b.input_shape, ref_batch)
    y_t, rate, per = torch_run(b, x)
    rec = {
        "name": name,
        "file": f"{name}.onnx",
        "ref": f"{name}.ref.npz",
        "family": var.family,
        "source": b.source,
        "exporter": var.exporter,
        "opset": var.opset,
        "opset_in_file": next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None),
        "batch_requested": var.batch,
        "batch": real_batch,
        "example_batch": ex_batch,
        "input_name": m.graph.input[0].name,
        "input_shape": in_dims,
        "output_shape": out_dims,
        "layout": b.layout,
        "transformer_like": b.transformer_like,
        "spiking": b.spiking,
        "params": int(sum(p.numel() for p in b.model.parameters())),
        "initializer_elements": int(sum(int(np.prod(t.dims)) for t in m.graph.initializer)),
        "nodes": len(m.graph.node),
        "file_bytes": size,
        "raw_export_bytes": raw_bytes,
        "export_seconds": round(export_s, 1),
        "config": b.config,
    }
    rec["y_std"] = float(np.std(y_t))
    rec["y_absmax"] = float(np.max(np.abs(y_t)))
    rec["calibration"] = b.calibration
    if b.spiking:
        rec["firing_rate"] = round(float(rate), 4)
        rec["silent_neurons"] = int(sum(1 for p in per if p == 0.0))
        rec["neuron_modules"] = len(per)
    if var.batch == "dynamic" and real_batch != "dynamic":
        rec["note"] = f"dynamic batch asked, exporter fixed it at {real_batch}"
    # ORT against torch
    try:
        y_o = ort_run(dst, x)
        diff = float(np.max(np.abs(y_o.astype(np.float64) - y_t))) if y_o.shape == y_t.shape else None
        rec["ort_max_abs_diff"] = diff
        rec["ort_matches_torch"] = bool(diff is not None and diff <= ATOL)
        if y_o.shape != y_t.shape:
            rec["ort_mismatch"] = f"shape ORT {list(y_o.shape)} vs torch {list(y_t.shape)}"
        elif diff > ATOL:
            rec["ort_mismatch"] = f"max |ORT - torch| = {diff:.3g} > {ATOL}"
    except Exception as e:  # noqa: BLE001
        rec["ort_matches_torch"] = False
        rec["ort_mismatch"] = f"ORT failed: {type(e).__name__}: {str(e)[:300]}"
    if real_batch == "dynamic":
        try:
            x3 = ref_input(b.input_shape, 3, seed=REF_SEED + 3)
            y3t, _, _ = torch_run(b, x3)
            y3o = ort_run(dst, x3)
            rec["batch3_max_abs_diff"] = float(np.max(np.abs(y3o - y3t))) if y3o.shape == y3t.shape else None
            rec["batch3_runs"] = True
        except Exception as e:  # noqa: BLE001
            rec["batch3_runs"] = False
            rec["batch3_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    np.savez_compressed(out / f"{name}.ref.npz", x=x, y=y_t.astype(np.float32))
    rec["ref_bytes"] = (out / f"{name}.ref.npz").stat().st_size
    if size > MAX_BYTES:
        rec["warning"] = f"file is {size} bytes, above the {MAX_BYTES} cap"
    del log
    return rec


def _short(e: BaseException, log: str = "") -> str:
    msg = f"{type(e).__name__}: {e}".strip()
    lines = [ln for ln in msg.splitlines() if ln.strip()]
    return " | ".join(lines[:4])[:600]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="build only graphs whose name contains one of these comma-separated substrings")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--list", action="store_true", help="print the plan and exit")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    subs = [x for x in (a.only or "").split(",") if x]
    variants = [v for v in plan() if not subs or any(x in v.name for x in subs)]
    if a.list:
        for v in variants:
            print(v.name)
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Built | Exception] = {}
    records, failures = [], []
    for i, v in enumerate(variants, 1):
        t0 = time.time()
        if v.family not in built:
            torch.manual_seed(SEED)
            np.random.seed(SEED)
            try:
                built[v.family] = FAMILIES[v.family]()
                built[v.family].model.eval()
            except Exception as e:  # noqa: BLE001
                built[v.family] = e
        b = built[v.family]
        if isinstance(b, Exception):
            failures.append(
                {
                    "name": v.name,
                    "family": v.family,
                    "exporter": v.exporter,
                    "opset": v.opset,
                    "batch_requested": v.batch,
                    "stage": "build",
                    "error": _short(b),
                }
            )
            print(f"[{i}/{len(variants)}] {v.name}: BUILD FAILED {_short(b)}", flush=True)
            continue
        try:
            if b.source == "timm" and not b.calibration:
                b.calibration = liven_timm(b.model, b.input_shape)
            rec = make_one(v, b, a.out)
            records.append(rec)
            extra = f" firing {rec['firing_rate']:.3f}" if "firing_rate" in rec else ""
            print(
                f"[{i}/{len(variants)}] {v.name}: {rec['file_bytes']} B, batch {rec['batch']}, "
                f"{rec['nodes']} nodes, ORT diff {rec.get('ort_max_abs_diff')}{extra} "
                f"({time.time() - t0:.0f}s)",
                flush=True,
            )
        except Exception as e:  # noqa: BLE001
            for p in (a.out / f"{v.name}.onnx", a.out / f"{v.name}.ref.npz"):
                p.unlink(missing_ok=True)
            failures.append(
                {
                    "name": v.name,
                    "family": v.family,
                    "exporter": v.exporter,
                    "opset": v.opset,
                    "batch_requested": v.batch,
                    "stage": "export",
                    "error": _short(e),
                    "traceback_tail": traceback.format_exc().strip().splitlines()[-3:],
                }
            )
            print(f"[{i}/{len(variants)}] {v.name}: EXPORT FAILED {_short(e)}", flush=True)

    index = a.out / "corpus.json"
    old = json.loads(index.read_text()) if index.exists() and a.only else {}
    names = {v.name for v in variants}
    order = {v.name: k for k, v in enumerate(plan())}
    keep = lambda r: r["name"] not in names and r["name"] in order  # noqa: E731
    graphs = [r for r in old.get("graphs", []) if keep(r)] + records
    fails = [r for r in old.get("failed", []) if keep(r)] + failures
    graphs.sort(key=lambda r: order.get(r["name"], 1e9))
    fails.sort(key=lambda r: order.get(r["name"], 1e9))
    from importlib.metadata import version

    import onnxscript
    import spikingjelly  # noqa: F401
    import timm

    doc = {
        "generated_by": "tools/make_corpus.py (run with /work/corpus-venv/bin/python; see its docstring)",
        "versions": {
            "torch": torch.__version__,
            "timm": timm.__version__,
            "onnx": onnx.__version__,
            "onnxscript": onnxscript.__version__,
            "onnxruntime": ort.__version__,
            "spikingjelly": version("spikingjelly"),
            "numpy": np.__version__,
        },
        "seeds": {"weights": SEED, "reference_input": REF_SEED},
        "ref_npz": "x: N(0,1) input at the graph's batch (2 when dynamic); y: torch output on x",
        "graphs": graphs,
        "failed": fails,
    }
    index.write_text(json.dumps(doc, indent=1) + "\n")

    total = sum(r["file_bytes"] + r["ref_bytes"] for r in graphs)
    print(
        f"\nbuilt {len(records)} of {len(variants)} this run; corpus: {len(graphs)} graphs, "
        f"{total / 1e6:.2f} MB with references, {len(fails)} failed exports"
    )
    for r in records:
        flags = []
        if not r.get("ort_matches_torch", False):
            flags.append(r.get("ort_mismatch", "ORT mismatch"))
        if r.get("note"):
            flags.append(r["note"])
        if r.get("batch3_runs") is False:
            flags.append("does not run at batch 3: " + r["batch3_error"][:120])
        print(f"  {r['name']:48s} {r['file_bytes']:>9d} B  batch {str(r['batch']):8s} {' ; '.join(flags)}")
    for f in failures:
        print(f"  FAILED {f['name']}: {f['error'][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
