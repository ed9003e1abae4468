"""Integer kernels on spike inputs (issue 17): which ONNX Runtime CPU layout runs a spike-fed layer fastest.

    python tools/bench_integer.py                      # every layout, every layer shape, markdown table
    python tools/bench_integer.py --rounds 5 --json /tmp/integer.json
    python tools/bench_integer.py --model q8.onnx     # whole model: float original vs weight-only vs integer layout

One intra-op thread, batch 1 with the time steps folded into the batch (T=4) as the exported
model does. Shapes are read from models/reference/spikformer_fmnist.onnx (shape inference at
batch 1; the weighted layers whose input is a spike tensor) plus the two spike-fed 1x1 layers of a
9.3M spikformer_cifar10 block (embed 384, mlp 1536, 64 tokens). Inputs are random 0/1 spikes at
15% firing. Each layout is checked against a numpy float64 reference of its own quantized
weights (max abs difference of the output), so exactness on spikes is measured, not assumed.
Sessions of one layer are timed in alternating rounds, so load from other jobs hits all alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper, shape_inference

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "models" / "reference" / "spikformer_fmnist.onnx"
FIRING = 0.15
T = 4
FOLD = "session.disable_quant_qdq"  # "1": ORT's ConstantFolding no longer skips DequantizeLinear
CIFAR = [("cifar10 attn proj 1x1", 384, 384, (64,)), ("cifar10 mlp fc2 1x1", 1536, 384, (64,))]
SPIKE_FED = {"node_Conv_860", "node_Conv_871", "node_Conv_882", "node_Conv_893", "node_Conv_933", "node_Conv_955"}


@dataclass
class Layer:
    name: str
    cin: int
    cout: int
    spatial: tuple[int, ...]  # (tokens,) for a 1x1 Conv1d over tokens, (H, W) for a 3x3 Conv2d

    @property
    def pointwise(self) -> bool:
        return len(self.spatial) == 1


def reference_layers(path: Path) -> list[Layer]:
    """Spike-fed Conv layers of the reference model, shapes from onnx shape inference at batch 1.

    SPIKE_FED was found structurally (input reaches a neuron's Cast only through Reshape, Concat,
    MaxPool...): the stem convs after the first and, per block, attention proj and MLP fc2; the
    qkv and fc1 convs read the real-valued residual stream, the first conv the image."""
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = shape_inference.infer_shapes(model, data_prop=True)
    info = {v.name: v for v in model.graph.value_info}
    weights = {t.name: t.dims for t in model.graph.initializer}
    layers, seen = [], set()
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name not in SPIKE_FED:
            continue
        dims = [d.dim_value for d in info[node.input[0]].type.tensor_type.shape.dim]
        cout, cin = weights[node.input[1]][:2]
        key = (cin, cout, tuple(dims[2:]))
        if key not in seen:
            seen.add(key)
            kind = "1x1" if len(dims) == 3 else "3x3"
            layers.append(Layer(f"fmnist {node.name} {kind}", cin, cout, tuple(dims[2:])))
    return layers


@dataclass
class Weights:
    float_w: np.ndarray  # [cout, cin, *kernel]
    bias: np.ndarray
    q8: np.ndarray  # int8, symmetric per output channel
    s8: np.ndarray  # [cout]

    def dequantized(self) -> np.ndarray:
        return self.q8.astype(np.float64) * self.s8.reshape(-1, *[1] * (self.q8.ndim - 1))


def make_weights(layer: Layer, rng: np.random.Generator) -> Weights:
    kernel = (1,) if layer.pointwise else (3, 3)
    fan_in = layer.cin * int(np.prod(kernel))
    w = (rng.standard_normal((layer.cout, layer.cin, *kernel)) / np.sqrt(fan_in)).astype(np.float32)
    scale = (np.abs(w).reshape(layer.cout, -1).max(axis=1) / 127).astype(np.float32)
    q = np.clip(np.round(w / scale.reshape(-1, *[1] * (w.ndim - 1))), -127, 127).astype(np.int8)
    return Weights(w, (0.1 * rng.standard_normal(layer.cout)).astype(np.float32), q, scale)


def conv64(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Float64 Conv (stride 1, 'same' padding for 3x3) as im2col, the exact reference."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    if w.ndim == 3:
        return np.einsum("oc,tcn->ton", w[:, :, 0], x) + bias[None, :, None]
    t, c, h, wd = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([padded[:, :, i : i + h, j : j + wd] for i in range(3) for j in range(3)], axis=2)
    return np.einsum("ock,tckhw->tohw", w.reshape(w.shape[0], c, 9), cols) + bias[None, :, None, None]


def block_quantized(w2d: np.ndarray, bits: int, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MatMulNBits storage of [N, K] weights, symmetric per block: packed blob, scales, dequantized (float64)."""
    n, k = w2d.shape
    blocks = -(-k // block)
    padded = np.zeros((n, blocks * block), np.float32)
    padded[:, :k] = w2d
    top = 2 ** (bits - 1) - 1
    scale = np.abs(padded.reshape(n, blocks, block)).max(axis=2) / top
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    q = np.clip(np.round(padded / np.repeat(scale, block, axis=1)), -top - 1, top).astype(np.int16)
    stored = (q + 2 ** (bits - 1)).astype(np.uint8)  # default zero point 2^(bits-1)
    blob = stored if bits == 8 else stored[:, 0::2] | (stored[:, 1::2] << 4)
    deq = q.astype(np.float64) * np.repeat(scale, block, axis=1)
    return blob.reshape(n, blocks, -1), scale.ravel(), deq[:, :k]


def initializers(values: dict[str, np.ndarray]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(v, k) for k, v in values.items()]


def graph_model(layer: Layer, nodes: list, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    shape = [T, layer.cin, *layer.spatial]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "layer", [x], [y], initializers(values))
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def conv_attrs(layer: Layer) -> dict:
    return {"kernel_shape": [1]} if layer.pointwise else {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}


def column(values: np.ndarray, layer: Layer) -> np.ndarray:
    """A per-output-channel vector shaped to broadcast over [T, cout, *spatial]."""
    return values.reshape(-1, *[1] * len(layer.spatial)).astype(np.float32)


@dataclass
class Layout:
    """One way to run the layer: its graph, the weights it computes with (float64) and session config."""

    key: str
    nodes: list
    values: dict
    weights: np.ndarray
    config: dict | None = None


def float_conv(layer: Layer, w: Weights) -> Layout:
    node = helper.make_node("Conv", ["x", "W", "B"], ["y"], **conv_attrs(layer))
    return Layout("a float Conv", [node], {"W": w.float_w, "B": w.bias}, w.float_w.astype(np.float64))


def float_matmul(layer: Layer, w: Weights) -> Layout:
    nodes = [helper.make_node("MatMul", ["W", "x"], ["wx"]), helper.make_node("Add", ["wx", "B"], ["y"])]
    values = {"W": w.float_w[:, :, 0], "B": column(w.bias, layer)}
    return Layout("a' float MatMul(W, x)", nodes, values, w.float_w.astype(np.float64))


def dq_conv(layer: Layer, w: Weights, fold: bool = False) -> Layout:
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "Ws"], ["W"], axis=0),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], **conv_attrs(layer)),
    ]
    key = "f DQ+Conv, DQ folded at load" if fold else "b DQ(int8)+Conv (today)"
    values = {"Wq": w.q8, "Ws": w.s8, "B": w.bias}
    return Layout(key, nodes, values, w.dequantized(), {FOLD: "1"} if fold else None)


def qlinear_conv(layer: Layer, w: Weights, y_max: float) -> Layout:
    """uint8 spikes at scale 1 zero 0 (exact), output requantized to uint8 around zero point 128 (lossy)."""
    y_scale = np.float32(y_max / 127)
    bias32 = np.round(w.bias / w.s8).astype(np.int32)  # bias at x_scale * w_scale = w_scale
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "one", "zu"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "one", "zu", "Wq", "Ws", "Wz", "ys", "yz", "B32"], ["yq"], **conv_attrs(layer)
        ),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
    ]
    values = {"one": np.float32(1), "zu": np.uint8(0), "Wq": w.q8, "Ws": w.s8, "Wz": np.zeros(layer.cout, np.int8)}
    values.update({"ys": y_scale, "yz": np.uint8(128), "B32": bias32})
    return Layout("c QLinearConv (uint8 out, requantized)", nodes, values, w.dequantized())


def integer_tail(layer: Layer, w: Weights, acc: str) -> tuple[list, dict]:
    """int32 accumulator -> float, times the per-channel scale, plus the bias."""
    nodes = [
        helper.make_node("Cast", [acc], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["accf", "S"], ["scaled"]),
        helper.make_node("Add", ["scaled", "B"], ["y"]),
    ]
    return nodes, {"S": column(w.s8, layer), "B": column(w.bias, layer)}


def conv_integer(layer: Layer, w: Weights) -> Layout:
    head = [
        helper.make_node("Cast", ["x"], ["xq"], to=TensorProto.UINT8),
        helper.make_node("ConvInteger", ["xq", "Wq"], ["acc"], **conv_attrs(layer)),
    ]
    tail, values = integer_tail(layer, w, "acc")
    return Layout("c' ConvInteger+Cast+Mul", head + tail, {"Wq": w.q8, **values}, w.dequantized())


def matmul_integer(layer: Layer, w: Weights) -> Layout:
    """1x1 Conv as MatMulInteger(W int8 [cout, cin], spikes int8 [T, cin, N]): no transposes."""
    head = [
        helper.make_node("Cast", ["x"], ["xq"], to=TensorProto.INT8),
        helper.make_node("MatMulInteger", ["Wq", "xq"], ["acc"]),
    ]
    tail, values = integer_tail(layer, w, "acc")
    return Layout("d MatMulInteger(Wq, x)+Cast+Mul", head + tail, {"Wq": w.q8[:, :, 0], **values}, w.dequantized())


def matmul_integer_t(layer: Layer, w: Weights) -> Layout:
    """The same token-major: Transpose, MatMulInteger(spikes uint8 [T, N, cin], W^T int8), Transpose back."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("Cast", ["xt"], ["xq"], to=TensorProto.UINT8),
        helper.make_node("MatMulInteger", ["xq", "WqT"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["accf", "S"], ["scaled"]),
        helper.make_node("Add", ["scaled", "B"], ["yt"]),
        helper.make_node("Transpose", ["yt"], ["y"], perm=[0, 2, 1]),
    ]
    values = {"WqT": np.ascontiguousarray(w.q8[:, :, 0].T), "S": w.s8, "B": w.bias}
    return Layout("d' Transpose+MatMulInteger(x, WqT)", nodes, values, w.dequantized())


def matmul_integer_u8(layer: Layer, w: Weights) -> Layout:
    """MatMulInteger(W + 128 as uint8 with zero point 128, spikes uint8): ORT's u8 left operand, no transposes."""
    head = [
        helper.make_node("Cast", ["x"], ["xq"], to=TensorProto.UINT8),
        helper.make_node("MatMulInteger", ["Wu", "xq", "Wz"], ["acc"]),
    ]
    tail, values = integer_tail(layer, w, "acc")
    values.update({"Wu": (w.q8[:, :, 0].astype(np.int16) + 128).astype(np.uint8), "Wz": np.uint8(128)})
    return Layout("d2 MatMulInteger(Wq+128 u8, x)+Cast+Mul", head + tail, values, w.dequantized())


def integer_to_float(layer: Layer, w: Weights) -> Layout:
    """Token-major com.microsoft MatMulIntegerToFloat: the int32 product, scale and bias in one kernel."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("Cast", ["xt"], ["xq"], to=TensorProto.UINT8),
        helper.make_node(
            "MatMulIntegerToFloat", ["xq", "WqT", "one", "S", "", "", "B"], ["yt"], domain="com.microsoft"
        ),
        helper.make_node("Transpose", ["yt"], ["y"], perm=[0, 2, 1]),
    ]
    values = {"WqT": np.ascontiguousarray(w.q8[:, :, 0].T), "one": np.float32(1), "S": w.s8, "B": w.bias}
    return Layout("d3 Transpose+MatMulIntegerToFloat", nodes, values, w.dequantized())


def matmul_nbits(layer: Layer, w: Weights, bits: int, block: int, accuracy: int) -> Layout:
    """1x1 Conv as MatMulNBits on token-major float spikes; 8 bits reuse the per-channel int8 weights."""
    if bits == 8:
        blob, scale, deq = block_quantized(w.dequantized().astype(np.float32)[:, :, 0], 8, block)
    else:
        blob, scale, deq = block_quantized(w.float_w[:, :, 0], bits, block)
    attrs = {"K": layer.cin, "N": layer.cout, "bits": bits, "block_size": block, "accuracy_level": accuracy}
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
        helper.make_node("MatMulNBits", ["xt", "Bq", "Bs"], ["mm"], domain="com.microsoft", **attrs),
        helper.make_node("Add", ["mm", "B"], ["yt"]),
        helper.make_node("Transpose", ["yt"], ["y"], perm=[0, 2, 1]),
    ]
    key = f"e MatMulNBits {bits}b blk{block} acc{accuracy}"
    return Layout(key, nodes, {"Bq": blob, "Bs": scale, "B": w.bias}, deq[:, :, None])


def layouts(layer: Layer, w: Weights, y_max: float) -> list[Layout]:
    found = [float_conv(layer, w), dq_conv(layer, w), dq_conv(layer, w, fold=True), qlinear_conv(layer, w, y_max)]
    found.append(conv_integer(layer, w))
    if layer.pointwise:
        found += [float_matmul(layer, w), matmul_integer(layer, w), matmul_integer_t(layer, w)]
        found += [matmul_integer_u8(layer, w), integer_to_float(layer, w)]
        for bits in (4, 8):
            for block in (32, 128):
                found += [matmul_nbits(layer, w, bits, block, acc) for acc in (0, 4)]
    return found


def session(model: onnx.ModelProto, config: dict | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def folded(model: onnx.ModelProto, config: dict | None) -> bool:
    """Whether ORT's optimised graph of ``model`` still runs a DequantizeLinear (False: folded at load)."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        for key, value in (config or {}).items():
            options.add_session_config_entry(key, value)
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return all(n.op_type != "DequantizeLinear" for n in onnx.load(options.optimized_model_filepath).graph.node)


def timed(sessions: dict[str, ort.InferenceSession], x: np.ndarray, rounds: int, calls: int) -> dict[str, float]:
    """Median ms per call of each session, timed in alternating rounds of ``calls`` calls."""
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for s in sessions.values():
        s.run(None, {"x": x})
    for _ in range(rounds):
        for key, s in sessions.items():
            for _ in range(calls):
                start = time.perf_counter()
                s.run(None, {"x": x})
                times[key].append(1000 * (time.perf_counter() - start))
    return {key: statistics.median(v) for key, v in times.items()}


PROBE = """
import json, sys, numpy as np, onnxruntime as ort
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) / 1024
base = hwm()
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1; o.log_severity_level = 3
for kv in sys.argv[2:]:
    o.add_session_config_entry(*kv.split('='))
s = ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])
i = s.get_inputs()[0]
x = (np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in i.shape]) < 0.15).astype(np.float32)
s.run(None, {i.name: x})
print(json.dumps({'peak_mb': hwm(), 'runtime_only_mb': base}))
"""


def peak_rss(model: onnx.ModelProto | Path, config: dict | None) -> dict:
    """Peak resident MiB of a fresh process (numpy + onnxruntime only) that loads the model and runs batch 1."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        if isinstance(model, Path):
            path = model
        else:
            onnx.save(model, path)
        entries = [f"{k}={v}" for k, v in (config or {}).items()]
        out = subprocess.run([sys.executable, "-c", PROBE, str(path), *entries], capture_output=True, text=True)
        return json.loads(out.stdout)


def bench_layer(layer: Layer, rng: np.random.Generator, rounds: int, calls: int) -> list[dict]:
    w = make_weights(layer, rng)
    x = (rng.random((T, layer.cin, *layer.spatial)) < FIRING).astype(np.float32)
    y_max = float(np.abs(conv64(x, w.dequantized(), w.bias)).max())
    found = layouts(layer, w, y_max)
    sessions = {lay.key: session(graph_model(layer, lay.nodes, lay.values), lay.config) for lay in found}
    errors = {}
    for lay in found:
        out = sessions[lay.key].run(None, {"x": x})[0]
        errors[lay.key] = float(np.abs(out - conv64(x, lay.weights, w.bias)).max())
    ms = timed(sessions, x, rounds, calls)
    base, today = ms["a float Conv"], ms["b DQ(int8)+Conv (today)"]
    return [
        {
            "layer": layer.name,
            "shape": f"[{T},{layer.cin},{'x'.join(map(str, layer.spatial))}] -> {layer.cout}",
            "layout": lay.key,
            "ms": ms[lay.key],
            "vs_float": base / ms[lay.key],
            "vs_today": today / ms[lay.key],
            "max_abs_diff": errors[lay.key],
        }  # fmt: skip
        for lay in found
    ]


def rss_rows(layer: Layer, rng: np.random.Generator) -> list[dict]:
    """Peak RSS of a fresh process per layout, on one layer (the weights are its only tensors)."""
    w = make_weights(layer, rng)
    rows = []
    for lay in layouts(layer, w, 1.0):
        if lay.key.startswith(
            ("a ", "b ", "f ", "d' ", "d2 ", "d3 ", "e MatMulNBits 4b blk32 acc4", "e MatMulNBits 8b blk32 acc4")
        ):
            model = graph_model(layer, lay.nodes, lay.values)
            rows.append({"layout": lay.key, **peak_rss(model, lay.config), "dq_folded": folded(model, lay.config)})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| layer | shape | layout | median ms | speed vs (a) | speed vs (b) | max abs diff vs float64 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['layer']} | {r['shape']} | {r['layout']} | {r['ms']:.4f} | {r['vs_float']:.2f}x "
            f"| {r['vs_today']:.2f}x | {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)


def whole_model(original: Path, weight_only: Path, rounds: int, calls: int) -> None:
    """Batch-1 one-thread latency and peak RSS: float original, weight-only quantized, its integer layout."""
    sys.path.insert(0, str(ROOT))
    from svtprune.quantization.integer_layout import integer_layout

    layout = integer_layout(onnx.load(weight_only))
    print("rewritten:", ", ".join(layout.rewritten))
    print("kept:", "; ".join(f"{k}: {v}" for k, v in layout.refused.items()))
    with tempfile.TemporaryDirectory() as tmp:
        rewritten = Path(tmp) / "integer.onnx"
        onnx.save(layout.model, rewritten)
        cases = {"float original": (original, None), "weight-only (b)": (weight_only, None)}
        cases["weight-only, DQ folded (f)"] = (weight_only, {FOLD: "1"})
        cases["integer layout"] = (rewritten, None)
        cases["integer layout, DQ folded"] = (rewritten, {FOLD: "1"})
        sessions = {k: session(onnx.load(p), c) for k, (p, c) in cases.items()}
        images = np.load(ROOT / "models" / "data" / "fashion_mnist_val.npz")["x"][:256].astype(np.float32)
        name = sessions["float original"].get_inputs()[0].name
        logits = {k: np.concatenate([s.run(None, {name: images[i : i + 1]})[0] for i in range(256)]) for k, s in
                  sessions.items()}  # fmt: skip
        ms = timed_model(sessions, name, images[:1], rounds, calls)
        print("\n| model | batch-1 ms (1 thread) | speed vs float | peak RSS MiB | max logit diff vs (b), 256 images |")
        print("|---|---|---|---|---|")
        for key, (path, config) in cases.items():
            rss = peak_rss(Path(path), config)
            diff = float(np.abs(logits[key] - logits["weight-only (b)"]).max())
            print(
                f"| {key} | {ms[key]:.3f} | {ms['float original'] / ms[key]:.2f}x | {rss['peak_mb']:.1f} | {diff:.1e} |"
            )


def timed_model(sessions: dict, name: str, x: np.ndarray, rounds: int, calls: int) -> dict[str, float]:
    renamed = {k: _Renamed(s, name) for k, s in sessions.items()}
    return timed(renamed, x, rounds, calls)  # type: ignore[arg-type]


class _Renamed:
    """A session fed as {"x": ...} by ``timed``, whatever its input is called."""

    def __init__(self, s: ort.InferenceSession, name: str) -> None:
        self.s, self.name = s, name

    def run(self, outputs: None, feeds: dict) -> list:
        return self.s.run(outputs, {self.name: feeds["x"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--model", type=Path, help="a weight-only quantized model: time it whole instead")
    parser.add_argument("--original", type=Path, default=REFERENCE)
    args = parser.parse_args()
    if args.model:
        print(f"onnxruntime {ort.__version__}, 1 intra-op thread, batch 1")
        whole_model(args.original, args.model, args.rounds, args.calls)
        return
    rng = np.random.default_rng(0)
    layers = reference_layers(REFERENCE) + [Layer(*spec) for spec in CIFAR]
    rows = [row for layer in layers for row in bench_layer(layer, rng, args.rounds, args.calls)]
    print(f"onnxruntime {ort.__version__}, 1 intra-op thread, batch 1 (T={T} folded), firing {FIRING:.0%}\n")
    print(table(rows))
    rss = rss_rows(layers[-1], rng)
    print(f"\npeak RSS, fresh process, {layers[-1].name}:")
    for r in rss:
        print(f"| {r['layout']} | {r['peak_mb']:.1f} MiB | runtime only {r['runtime_only_mb']:.1f} | "
              f"DQ folded: {r['dq_folded']} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"ort": ort.__version__, "rows": rows, "rss": rss}, indent=1))


if __name__ == "__main__":
    main()
