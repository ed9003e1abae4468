"""Follow the token axis of a spiking transformer's blocks, op by op, noting every constant that spells N.

After the patch stem, the blocks see the H x W grid flattened into N = H*W tokens (a Reshape or
Flatten that merges the last two axes). From there on, a token can be left out without retraining
only if nothing reads the grid as a grid: every op must work token by token (elementwise, 1x1
convolutions, norms over channels, reshapes that keep the token axis whole), or sum over the tokens
(the spiking attention's products, a Softmax, the final mean), which then sums over those kept.
Anything else (a 3x3 convolution, a pooling, a per-token constant such as a position table added
after the merge, a sum that is not a mean) stops the follower with the op and the reason. Ops are
told apart by type and numbers, never by names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from svtprune.graph.io import attribute
from svtprune.spiking.tensor_shapes import Shapes
from svtprune.spiking.time_flow import ELEMENTWISE, RESHAPES, UNARY, reduced_axes
from svtprune.spiking.time_tags import NotFollowable, key

META = "meta"  # a value computed from a token tensor's shape: it follows N by itself
PER_POSITION = {"Conv", "BatchNormalization", "InstanceNormalization"}  # token axis must be spatial
ALONG_AXIS = {"Slice", "Gather", "Split", "Concat", "Softmax", "LogSoftmax"}


@dataclass
class TokenSites:
    """Where N lives after the merge: constants to respell, and where the tokens are summed."""

    edits: list[tuple[str, int, int]] = field(default_factory=list)  # (node, input, flat position) holding N
    sums: list[str] = field(default_factory=list)  # MatMuls contracting the tokens, Softmaxes over them
    means: list[str] = field(default_factory=list)  # ReduceMean over the tokens
    layers: int = 0  # weighted layers that run once per token: what leaving a token out saves
    # (node, input, axis): a constant operand with the same values for every token, to be cut to N' tokens
    # (fixed-shape exports fold a neuron's starting membrane into such a constant)
    uniform: list[tuple[str, int, int]] = field(default_factory=list)


class TokenFollower:
    """Tags each tensor after the merge with its token axis (an int), META, or None."""

    def __init__(self, model: onnx.ModelProto, shapes: Shapes, consts: dict[str, np.ndarray]) -> None:
        self.model, self.shapes, self.consts = model, shapes, consts
        self.tags: dict[str, int | str | None] = {}
        self.sites = TokenSites()

    def run(self, merge: onnx.NodeProto, count: int) -> TokenSites:
        self.count = count
        rank = len(self.shapes[key(merge)])
        self.tags[key(merge)] = rank - 1
        started = False
        for node in self.model.graph.node:
            if node is merge:
                started = True
                continue
            if not started:
                continue
            tags = [self.tags.get(name) for name in node.input]
            if all(t is None for t in tags):
                continue
            try:
                outputs = self.node(node, tags)
            except KeyError as exc:
                raise NotFollowable(f"{node.op_type} {node.name or key(node)!r}: nothing known of {exc}") from None
            except NotFollowable as exc:
                raise NotFollowable(f"{node.op_type} {node.name or key(node)!r}: {exc}") from None
            for name, tag in zip(node.output, outputs, strict=False):
                self.tags[name] = tag
        for value in self.model.graph.output:
            if isinstance(self.tags.get(value.name), int):
                raise NotFollowable(f"the output {value.name!r} keeps one value per token")
        return self.sites

    def node(self, node: onnx.NodeProto, tags: list) -> list:
        op, count = node.op_type, len(node.output)
        axes = [t for t in tags if isinstance(t, int)]
        if not axes:  # shape values only: the result follows N at run time
            return [META] * count
        if op in ("Shape", "Size"):
            return [META]
        if op in ELEMENTWISE or op in UNARY:
            return [self.elementwise(node, tags)] * count
        if op in PER_POSITION:
            return [self.per_position(node, tags)] * count
        if op in RESHAPES:
            return [self.reshape(node, tags)]
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise NotFollowable("no rule carries the token axis through this op")
        return handler(node, tags)

    def axes_in(self, node: onnx.NodeProto, tags: list, rank: int) -> set[int]:
        """The token axis of each token input, right-aligned to ``rank`` as broadcasting aligns it."""
        pairs = zip(node.input, tags, strict=True)
        return {t + rank - len(self.shapes[name]) for name, t in pairs if isinstance(t, int)}

    def only_first(self, tags: list, what: str) -> int:
        if any(isinstance(t, int) for t in tags[1:]):
            raise NotFollowable(f"{what} vary per token")
        assert isinstance(tags[0], int)
        return tags[0]

    def elementwise(self, node: onnx.NodeProto, tags: list) -> int:
        out = self.shapes[key(node)]
        found = {
            t + len(out) - len(self.shapes[n]) for n, t in zip(node.input, tags, strict=True) if isinstance(t, int)
        }
        if len(found) != 1:
            raise NotFollowable(f"its inputs hold tokens on different axes {sorted(found)}")
        axis = found.pop()
        for index, (name, tag) in enumerate(zip(node.input, tags, strict=True)):
            if tag is not None or not name:
                continue
            shape = self.shapes[name]
            at = axis - (len(out) - len(shape))
            if at >= 0 and shape[at] > 1:
                value = self.consts.get(name)
                if value is None or not np.array_equal(value, np.broadcast_to(value.take([0], axis=at), value.shape)):
                    raise NotFollowable(f"{name!r} holds a value per token that no kept token selects")
                self.sites.uniform.append((key(node), index, at))
        return axis

    def per_position(self, node: onnx.NodeProto, tags: list) -> int:
        axis = self.only_first(tags, "its weights")
        if axis < 2:
            raise NotFollowable(f"reads axis {axis} (the tokens) as the batch or the channels")
        if node.op_type == "Conv":
            flat = [
                *attribute(node, "kernel_shape", []),
                *attribute(node, "strides", []),
                *attribute(node, "dilations", []),
            ]
            if any(v != 1 for v in flat) or any(attribute(node, "pads", [])):
                raise NotFollowable("a convolution wider than one token reads the grid")
            self.sites.layers += 1
        return axis

    def reshape(self, node: onnx.NodeProto, tags: list) -> int:
        """The token axis must come out whole: the same elements before it, and N where it was."""
        axis = self.only_first(tags, "its shape")
        source, out = self.shapes[node.input[0]], self.shapes[key(node)]
        outer = int(np.prod(source[:axis], dtype=np.int64))
        for at in range(len(out)):
            if int(np.prod(out[:at], dtype=np.int64)) == outer and out[at] == self.count:
                if node.op_type == "Reshape":
                    self.respell(node, 1, at, len(out), tags[1])
                return at
        raise NotFollowable(f"splits or merges the token axis: {tuple(source)} -> {tuple(out)}")

    def respell(self, node: onnx.NodeProto, index: int, at: int, rank: int, tag: object) -> None:
        """A constant shape input that spells N at ``at`` is noted for the surgery; a run-time one must follow N."""
        value = self.consts.get(node.input[index])
        if value is None:
            if tag != META:
                raise NotFollowable("spells the token count in a shape computed from something else")
            return
        flat = at - (rank - value.size)
        if flat < 0:
            return
        number = int(value.reshape(-1)[flat])
        if number == self.count:
            self.sites.edits.append((key(node), index, flat))
        elif number not in (-1, 1) and not (number == 0 and node.op_type == "Reshape"):
            raise NotFollowable(f"its shape holds {number} where the {self.count} tokens are")

    def op_Transpose(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "")
        perm = list(attribute(node, "perm", list(range(len(self.shapes[node.input[0]])))[::-1]))
        return [perm.index(axis)]

    def op_MatMul(self, node: onnx.NodeProto, tags: list) -> list:
        """Tokens as rows or columns pass through; contracted (the attention's sums) they are summed away."""
        out = self.shapes[key(node)]
        found, summed = set(), 0
        for index, (name, tag) in enumerate(zip(node.input, tags, strict=True)):
            if not isinstance(tag, int):
                continue
            rank = len(self.shapes[name])
            contracted = rank - 1 if index == 0 else rank - 2
            if rank < 2 or tag < rank - 2:
                raise NotFollowable("holds the tokens on a batch axis of the product")
            if tag == contracted:
                summed += 1
            else:
                found.add(tag + len(out) - rank)
                self.sites.layers += node.input[1 - index] in self.consts
        if summed:
            if summed != 2 or found:
                raise NotFollowable("sums over the tokens of one side only")
            self.sites.sums.append(key(node))
            return [None]
        if len(found) != 1:
            raise NotFollowable("both sides hold tokens on different axes")
        return [found.pop()]

    def op_ReduceMean(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "its axes")
        axes = reduced_axes(node, len(self.shapes[node.input[0]]), self.consts)
        if axis in axes:
            self.sites.means.append(key(node))
            return [None]
        kept = attribute(node, "keepdims", 1)
        return [axis - (0 if kept else sum(a < axis for a in axes))]

    def op_Softmax(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "")
        if int(attribute(node, "axis", -1)) % len(self.shapes[node.input[0]]) == axis:
            self.sites.sums.append(key(node))
        return [axis]

    def op_Slice(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "its bounds")
        axes = self.consts.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        if axes is None:
            raise NotFollowable("slices axes that are not constant")
        rank = len(self.shapes[node.input[0]])
        if axis in [int(a) % rank for a in axes.reshape(-1)]:
            raise NotFollowable("slices the token axis")
        return [axis]

    def op_Gather(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "its indices")
        at = int(attribute(node, "axis", 0)) % len(self.shapes[node.input[0]])
        if at == axis:
            raise NotFollowable("gathers along the token axis")
        return [axis + (len(self.shapes[node.input[1]]) - 1 if at < axis else 0)]

    def op_Split(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "its sizes")
        if int(attribute(node, "axis", 0)) % len(self.shapes[node.input[0]]) == axis:
            raise NotFollowable("splits the token axis")
        return [axis] * len(node.output)

    def op_Concat(self, node: onnx.NodeProto, tags: list) -> list:
        found = self.axes_in(node, tags, len(self.shapes[key(node)]))
        if len(found) != 1 or any(t is None for t in tags):
            raise NotFollowable("joins token tensors with something else")
        axis = found.pop()
        if int(attribute(node, "axis")) % len(self.shapes[key(node)]) == axis:
            raise NotFollowable("concatenates along the token axis")
        return [axis]

    def op_Expand(self, node: onnx.NodeProto, tags: list) -> list:
        axis = self.only_first(tags, "its shape")
        out = self.shapes[key(node)]
        axis += len(out) - len(self.shapes[node.input[0]])
        self.respell(node, 1, axis, len(out), tags[1])
        return [axis]
