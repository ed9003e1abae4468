"""SNN energy the way the field reports it: synaptic operations from measured spike rates.

A weighted op (Conv, MatMul, Gemm) whose input is binary (a spike tensor) only accumulates
where a spike arrives: SOPs = MACs x firing rate, each costing E_AC. A real-valued input (the
image in the first conv, a membrane or a BatchNorm output) costs full MACs at E_MAC. Constants
are the standard 45 nm figures (32-bit float): E_MAC = 4.6 pJ, E_AC = 0.9 pJ, from M. Horowitz,
"Computing's energy problem (and what we can do about it)", ISSCC 2014, as used by Spikformer,
Spike-driven Transformer and QKFormer. Whether an input is a spike tensor is *measured* (every
value in {0, 1} on the calibration data), so no neuron pattern or exporter naming is assumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from svtprune.graph.analysis import constants_of
from svtprune.graph.io import attribute
from svtprune.graph.taps import with_outputs
from svtprune.runtime import batch_for, batches, make_session

TAPPED_SHARE = 8  # a tapped run keeps every layer's input and output: this many times an ordinary run's values

E_MAC_PJ = 4.6  # 32-bit float multiply-accumulate, 45 nm (Horowitz, ISSCC 2014)
E_AC_PJ = 0.9  # 32-bit float add, 45 nm (Horowitz, ISSCC 2014)
SOURCE = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm, fp32)"
WEIGHTED = ("Conv", "MatMul", "Gemm")


@dataclass
class LayerEnergy:
    node: str
    op: str
    macs: float  # per image, dense
    spike_input: bool
    firing_rate: float  # fraction of non-zero input elements (1.0 reading for real inputs)
    ops: float  # per image: SOPs (spike input) or MACs (real input)
    energy_pj: float


@dataclass
class EnergyReport:
    layers: list[LayerEnergy]
    images: int

    @property
    def total_macs(self) -> float:
        return float(sum(layer.macs for layer in self.layers))

    @property
    def total_sops(self) -> float:
        return float(sum(layer.ops for layer in self.layers if layer.spike_input))

    @property
    def total_mac_ops(self) -> float:
        return float(sum(layer.ops for layer in self.layers if not layer.spike_input))

    @property
    def energy_uj(self) -> float:
        return float(sum(layer.energy_pj for layer in self.layers)) * 1e-6

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "constants": {"E_MAC_pJ": E_MAC_PJ, "E_AC_pJ": E_AC_PJ, "source": SOURCE},
            "total_dense_macs": self.total_macs,
            "total_sops": self.total_sops,
            "total_macs_real_input": self.total_mac_ops,
            "energy_uJ_per_image": self.energy_uj,
            "layers": [asdict(layer) for layer in self.layers],
        }


def _weighted_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in WEIGHTED]


def _macs(node: onnx.NodeProto, inputs: list[np.ndarray], out: np.ndarray) -> float:
    """Dense multiply-accumulates of one run of ``node`` (whole batch)."""
    if node.op_type == "Conv":
        weight = inputs[1]
        return float(out.size) * float(np.prod(weight.shape[1:]))
    if node.op_type == "Gemm":
        trans_a = bool(attribute(node, "transA", 0))
        k = inputs[0].shape[0] if trans_a else inputs[0].shape[-1]
        return float(out.size) * float(k)
    return float(out.size) * float(inputs[0].shape[-1])  # MatMul: [..., M, K] @ [..., K, N]


def _spike_side(node: onnx.NodeProto, inputs: list[np.ndarray], fixed: set[str]) -> np.ndarray | None:
    """The activation input that is binary, if any (for a MatMul of two activations, either).

    ``fixed`` holds constants and the graph inputs: the image is real-valued by definition
    (the encoding layer costs MACs), even when a test image happens to be binary."""
    candidates = [t for name, t in zip(node.input[:2], inputs[:2], strict=False) if name not in fixed]
    for tensor in candidates:
        if tensor.size and np.all((tensor == 0) | (tensor == 1)):
            return tensor
    return None


def computed_from_constants(model: onnx.ModelProto, consts: set[str]) -> set[str]:
    """Outputs of nodes that read constants only (a low-bit weight's DequantizeLinear, or its Cast, Sub and Mul
    once dequantized at load): weights all the same, never spikes, whatever form the file stores them in."""
    fixed = set(consts)
    for node in model.graph.node:
        if node.input and all(not name or name in fixed for name in node.input):
            fixed.update(node.output)
    return fixed - consts


def measure_energy(model: onnx.ModelProto, x: np.ndarray, batch: int = 64) -> EnergyReport:
    """Per-layer dense MACs, firing rates, SOPs and energy per image, averaged over ``x``.

    Every weighted layer's input and output is tapped at once, so a batch holds many times the
    activations an ordinary run keeps: batches are cut to a share of ``batch_for``'s (64 images of a
    9.3M-parameter Spikformer took 3.5 GB). The counts add up exactly whatever the batch."""
    batch = max(1, min(batch, batch_for(model) // TAPPED_SHARE))
    nodes = _weighted_nodes(model)
    consts = set(constants_of(model))
    stored = computed_from_constants(model, consts)
    wanted = [name for n in nodes for name in list(n.input[:2]) + [n.output[0]] if name not in consts]
    session = make_session(with_outputs(model, wanted, elem_type=None), threads=1, optimize=False, quiet=False)
    values = {c: v for c, v in constants_of(model).items()}
    input_name = session.get_inputs()[0].name
    sums = {n.name: np.zeros(3) for n in nodes}  # macs, nonzero inputs, input elements
    spiking = {n.name: True for n in nodes}
    for run in batches(session, x, batch, wanted):
        for node in nodes:
            inputs = [run.get(name, values.get(name)) for name in node.input[:2]]
            side = _spike_side(node, inputs, consts | stored | {input_name})
            spiking[node.name] &= side is not None
            probe = side if side is not None else inputs[0]
            sums[node.name] += (_macs(node, inputs, run[node.output[0]]), np.count_nonzero(probe), probe.size)
    layers = []
    for node in nodes:
        macs, nonzero, elements = sums[node.name]
        macs /= len(x)
        rate = float(nonzero / elements) if elements else 0.0
        spike = spiking[node.name]
        ops = macs * rate if spike else macs
        energy = float(ops * (E_AC_PJ if spike else E_MAC_PJ))
        layers.append(LayerEnergy(node.name, node.op_type, float(macs), spike, rate, float(ops), energy))
    return EnergyReport(layers, len(x))


def energy_section(original: onnx.ModelProto, compressed: onnx.ModelProto, x: np.ndarray) -> dict:
    """The report's ``energy`` entry: totals and per-layer firing rates, before and after."""
    section: dict = {"constants": {"E_MAC_pJ": E_MAC_PJ, "E_AC_pJ": E_AC_PJ, "source": SOURCE}}
    for name, model in (("original", original), ("compressed", compressed)):
        report = measure_energy(model, x).to_dict()
        report.pop("constants")
        section[name] = report
    return section
