"""An exact speed-up: each inference BatchNormalization folded into the convolution (or MatMul) before it.

ONNX Runtime folds ``Conv -> BatchNormalization`` only when the two are adjacent. Spiking exporters fold
the T time steps into the batch around each convolution, so a Reshape sits between them (the reference
SDT: all 17 BNs are ``Conv -> Reshape -> BatchNormalization``) and ORT runs every BN on its own, 15% of
the reference SDT's batch-1 time. A BN over channel c computes ``x * s[c] + (beta[c] - mean[c] * s[c])``
with ``s = gamma / sqrt(var + eps)``; when every element the BN reads at channel c is the layer's output
channel c (only shape ops that keep the channel axis whole lie between, and nothing else reads their
values), the same numbers come from the layer with its weights scaled by ``s`` per output channel and
its bias ``(b - mean) * s + beta``. Exact up to float32 rounding (the product is formed once, in float64,
instead of at run time). A MatMul has no bias: its BN becomes an Add of the folded bias.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from svtprune.graph.analysis import constants_of
from svtprune.graph.io import attribute

SHAPE_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity"}
SHAPE_READERS = {"Shape", "Size"}  # read a tensor's shape only, which folding leaves as it is
Dims = list[int | str | None]


@dataclass
class Folded:
    """The rewritten model, the BNs folded (node names) and why each other BN was left (name -> reason)."""

    model: onnx.ModelProto
    folded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """What the rewrite did, for a plan's meta and a report."""
        count = len(self.folded) + len(self.refused)
        return f"{len(self.folded)} of {count} BatchNormalizations folded into the layer before them"


@dataclass
class _Site:
    norm: onnx.NodeProto
    layer: onnx.NodeProto
    chain: list[onnx.NodeProto]  # the shape ops from the layer's output to the BN's input
    rank: int  # of the BN's input (an Add in its place broadcasts the bias over the axes after 1)


def fold_norms(model: onnx.ModelProto) -> Folded:
    """A copy of ``model`` with every BN that can be folded folded (``model`` itself when none can)."""
    norms = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    if not norms:
        return Folded(model)
    graph = _Graph(model)
    result = Folded(model)
    sites = []
    for norm in norms:
        site = graph.site(norm)
        if isinstance(site, str):
            result.refused[norm.name or norm.output[0]] = site
        else:
            sites.append(site)
    if not sites:
        return result
    out = onnx.ModelProto()
    out.CopyFrom(model)
    edits = _Edits(out, graph.constants)
    for site in sites:
        edits.fold(site)
        result.folded.append(site.norm.name or site.norm.output[0])
    edits.finish()
    result.model = out
    return result


class _Graph:
    """Readers, producers, constants and inferred shapes of a model, to decide where a BN folds."""

    def __init__(self, model: onnx.ModelProto) -> None:
        inputs = {value.name for value in model.graph.input}  # an initializer a caller may feed is no constant
        self.constants = {name: value for name, value in constants_of(model).items() if name not in inputs}
        self.producer = {o: node for node in model.graph.node for o in node.output}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in set(node.input):
                self.readers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in model.graph.output}
        self.shapes = _shapes(model)

    def site(self, norm: onnx.NodeProto) -> _Site | str:
        """Where ``norm`` folds, or why it cannot."""
        problem = self._norm_problem(norm)
        if problem:
            return problem
        chain: list[onnx.NodeProto] = []
        tensor = norm.input[0]
        while tensor in self.producer and self.producer[tensor].op_type in SHAPE_OPS:
            chain.insert(0, self.producer[tensor])
            tensor = chain[0].input[0]
        layer = self.producer.get(tensor)
        if layer is None or layer.op_type not in ("Conv", "MatMul"):
            return "no Conv or MatMul before it (through shape ops only)"
        problem = self._layer_problem(layer) or self._reader_problem([layer, *chain], norm)
        if problem:
            return problem
        axis = 1 if layer.op_type == "Conv" else self._rank(layer.output[0]) - 1
        for node in chain:
            axis = self._follow(node, axis)
            if axis is None:
                return f"{node.op_type} {node.name or node.output[0]} does not keep the channel axis whole"
        if axis != 1:
            return "the layer's channels are not the BN's axis 1"
        width = self.constants[layer.input[1]].shape[0 if layer.op_type == "Conv" else 1]
        if any(self.constants[name].shape != (width,) for name in norm.input[1:5]):
            return f"its statistics are not one per channel of the layer's {width}"
        return _Site(norm, layer, chain, self._rank(norm.input[0]))

    def _norm_problem(self, norm: onnx.NodeProto) -> str:
        if attribute(norm, "training_mode", 0) or attribute(norm, "is_test", 1) == 0:
            return "in training mode"
        if attribute(norm, "spatial", 1) == 0:
            return "spatial=0 (a statistic per activation, not per channel)"
        if any(o for o in norm.output[1:]):
            return "its running statistics are outputs"
        if any(self._floats(name) is None for name in norm.input[1:5]) or len(norm.input) < 5:
            return "its scale, bias, mean or variance is not a float32 constant"
        return ""

    def _layer_problem(self, layer: onnx.NodeProto) -> str:
        if len([o for o in layer.output if o]) != 1:
            return f"{layer.op_type} {layer.name} has more than one output"
        weight = self._floats(layer.input[1])
        if weight is None or layer.input[0] in self.constants:
            return f"the weight of {layer.op_type} {layer.name} is not a float32 constant"
        if layer.op_type == "MatMul" and weight.ndim != 2:
            return f"MatMul {layer.name} multiplies by a {weight.ndim}-D weight"
        if layer.op_type == "Conv" and len(layer.input) > 2 and layer.input[2] and self._floats(layer.input[2]) is None:
            return f"the bias of Conv {layer.name} is not a float32 constant"
        return ""

    def _reader_problem(self, nodes: list[onnx.NodeProto], norm: onnx.NodeProto) -> str:
        """Each tensor from the layer to the BN must be read only by the next node (and by Shape)."""
        for node, after in zip(nodes, [*nodes[1:], norm], strict=True):
            tensor = node.output[0]
            if tensor in self.outputs:
                return f"{tensor} is a graph output"
            for reader in self.readers.get(tensor, []):
                if reader is after and list(reader.input).count(tensor) == 1 and reader.input[0] == tensor:
                    continue
                if reader.op_type not in SHAPE_READERS:
                    return f"{tensor} is also read by {reader.op_type} {reader.name}"
        return ""

    def _follow(self, node: onnx.NodeProto, axis: int) -> int | None:
        """The axis of ``node``'s output that holds the channel at ``axis`` of its input, whole (else None)."""
        if node.op_type == "Identity":
            return axis
        if node.op_type == "Transpose":
            perm = list(attribute(node, "perm", None) or range(self._rank(node.input[0]) - 1, -1, -1))
            return perm.index(axis) if axis in perm else None
        return channel_axis_after(self.shapes.get(node.input[0]), self.shapes.get(node.output[0]), axis)

    def _rank(self, tensor: str) -> int:
        dims = self.shapes.get(tensor)
        return -1 if dims is None else len(dims)

    def _floats(self, name: str) -> np.ndarray | None:
        value = self.constants.get(name)
        return value if value is not None and value.dtype == np.float32 else None


def channel_axis_after(before: Dims | None, after: Dims | None, axis: int) -> int | None:
    """The axis of a row-major reshape's output holding the input's ``axis`` whole, or None.

    An element's channel is ``(flat index // S) % C``, with C the axis's size and S the product of the dims
    after it; an output axis of size C whose later dims multiply to S gives every element the same channel.
    Both C and S must be known numbers (a symbolic batch before the axis does not matter)."""
    if before is None or after is None or not 0 <= axis < len(before):
        return None
    size, inner = before[axis], _product(before[axis + 1 :])
    if not isinstance(size, int) or inner is None:
        return None
    for out_axis, dim in enumerate(after):
        if dim == size and _product(after[out_axis + 1 :]) == inner:
            return out_axis
    return None


def _product(dims: Dims) -> int | None:
    total = 1
    for dim in dims:
        if not isinstance(dim, int):
            return None
        total *= dim
    return total


def _shapes(model: onnx.ModelProto) -> dict[str, Dims]:
    """Inferred dims (ints, names of symbolic dims, None when unknown); none where inference fails."""
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # onnx raises InferenceError subclasses and RuntimeError: no reshape is then followed
        inferred = model
    shapes: dict[str, Dims] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        kind = value.type.tensor_type
        if kind.HasField("shape"):
            shapes[value.name] = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in kind.shape.dim
            ]
    return shapes


class _Edits:
    """The folds written into ``model``: new weights under fresh names, the BNs removed."""

    def __init__(self, model: onnx.ModelProto, constants: dict[str, np.ndarray]) -> None:
        self.model, self.constants = model, constants
        self.names = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
        self.names |= {i for n in model.graph.node for i in n.input}
        self.by_output = {n.output[0]: n for n in model.graph.node if n.output}
        self.dropped: set[str] = set()
        self.released: set[str] = set()  # constants the folded nodes read: dropped where nothing else reads them
        self.added: dict[str, onnx.NodeProto] = {}  # BN output -> the Add that replaces it (MatMul)

    def fold(self, site: _Site) -> None:
        """Scale the layer's weights, set its bias, and remove the BN (renaming its output onto the chain's end)."""
        norm, layer = self.by_output[site.norm.output[0]], self.by_output[site.layer.output[0]]
        gamma, beta, mean, var = (self.constants[n].astype(np.float64) for n in norm.input[1:5])
        scale = gamma / np.sqrt(var + float(attribute(norm, "epsilon", 1e-5)))
        weight = self.constants[layer.input[1]].astype(np.float64)
        base = layer.name or layer.output[0]
        self.released |= {*norm.input[1:5], *layer.input[1:3]}
        if layer.op_type == "Conv":
            has_bias = len(layer.input) > 2 and layer.input[2]
            bias = self.constants[layer.input[2]].astype(np.float64) if has_bias else np.zeros(len(scale))
            layer.input[1] = self._add(weight * scale.reshape(-1, *[1] * (weight.ndim - 1)), f"{base}_folded_weight")
            folded_bias = self._add((bias - mean) * scale + beta, f"{base}_folded_bias")
            layer.input.extend([""] * (3 - len(layer.input)))
            layer.input[2] = folded_bias
            self._remove(norm, site)
            return
        layer.input[1] = self._add(weight * scale[None, :], f"{base}_folded_weight")
        bias = self._add((beta - mean * scale).reshape(-1, *[1] * (site.rank - 2)), f"{base}_folded_bias")
        self.added[norm.output[0]] = helper.make_node(
            "Add", [norm.input[0], bias], [norm.output[0]], name=f"{norm.name or norm.output[0]}_folded"
        )
        self.dropped.add(norm.output[0])

    def _remove(self, norm: onnx.NodeProto, site: _Site) -> None:
        """The chain's last node writes the BN's output; Shape readers of its old output follow."""
        last = self.by_output[(site.chain[-1] if site.chain else site.layer).output[0]]
        old, new = last.output[0], norm.output[0]
        last.output[0] = new
        for node in self.model.graph.node:
            for i, name in enumerate(node.input):
                if name == old and node.op_type in SHAPE_READERS:
                    node.input[i] = new
        self.dropped.add(new)

    def _add(self, value: np.ndarray, base: str) -> str:
        name, count = base, 1
        while name in self.names:
            name, count = f"{base}_{count}", count + 1
        self.names.add(name)
        self.model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def finish(self) -> None:
        """Drop the folded BNs (an Add in place of a MatMul's), their constants and stale shapes."""
        kept = []
        for node in self.model.graph.node:
            if node.op_type == "BatchNormalization" and node.output[0] in self.dropped:
                if node.output[0] in self.added:
                    kept.append(self.added[node.output[0]])
                continue
            kept.append(node)
        del self.model.graph.node[:]
        self.model.graph.node.extend(kept)
        used = {i for n in self.model.graph.node for i in n.input} | {o.name for o in self.model.graph.output}
        initializers = [t for t in self.model.graph.initializer if t.name in used or t.name not in self.released]
        del self.model.graph.initializer[:]
        self.model.graph.initializer.extend(initializers)
        produced = {o for n in self.model.graph.node for o in n.output} | {i.name for i in self.model.graph.input}
        shapes = [v for v in self.model.graph.value_info if v.name in produced]
        del self.model.graph.value_info[:]
        self.model.graph.value_info.extend(shapes)
