"""Follow the time axis through a graph, op by op, tagging every tensor and noting where T lives.

The tags and sites are in ``time_tags``. Where a tag cannot be carried through an op,
``NotFollowable`` says which op and why. Ops are told apart by type and numbers (shapes,
constants), never by names, so any exporter's graph works. The sites are what a surgery to T'
steps (or the exact rewrite that computes the image's copies once) must change, and what
``analyze`` reports.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.io import attribute
from svtprune.spiking.tensor_shapes import Shapes
from svtprune.spiking.time_tags import META, Edit, Flow, NotFollowable, Sites, Step, Tag, Timed, key

ELEMENTWISE = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Mean", "Sum", "Where", "Equal", "Greater", "GreaterOrEqual",
    "Less", "LessOrEqual", "And", "Or", "Xor", "Mod", "PRelu", "BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor",
}  # fmt: skip
UNARY = {
    "Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Log", "Abs", "Neg", "Sqrt", "Reciprocal", "Cast", "CastLike",
    "Identity", "Floor", "Ceil", "Round", "Sign", "Not", "Clip", "Dropout", "Gelu", "HardSigmoid", "HardSwish",
    "LeakyRelu", "Elu", "Selu", "Celu", "Softplus", "Softsign", "Mish", "IsNaN", "IsInf", "Sin", "Cos",
    "ThresholdedRelu", "QuantizeLinear", "DequantizeLinear", "BitwiseNot",
}  # fmt: skip
# these read axis 0 as the batch: time must sit there, folded into it
PER_SAMPLE = {
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "BatchNormalization", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool", "InstanceNormalization", "LRN", "DepthToSpace",
    "SpaceToDepth", "GroupNormalization",
}  # fmt: skip
RESHAPES = {"Reshape", "Flatten", "Squeeze", "Unsqueeze"}
AXIS_KEEPING = {"Softmax", "LogSoftmax", "Hardmax", "CumSum", "TopK", "ArgMax", "ArgMin"}
REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
          "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}  # fmt: skip


def reduced_axes(node: onnx.NodeProto, rank: int, consts: dict[str, np.ndarray]) -> list[int]:
    """The axes a Reduce* node reduces (its attribute, or its constant second input; none given: all)."""
    axes = attribute(node, "axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = consts.get(node.input[1])
        if axes is None:
            raise NotFollowable("reduces over axes computed at run time")
    return sorted({int(a) % rank for a in (range(rank) if axes is None or len(axes) == 0 else axes)})


class Follower:
    """Walks the nodes in order (ONNX graphs are topologically sorted), tagging their outputs."""

    def __init__(self, model: onnx.ModelProto, steps: int, shapes: Shapes, consts: dict[str, np.ndarray]) -> None:
        self.model, self.T, self.shapes, self.consts = model, steps, shapes, consts
        self.tags: dict[str, Tag] = {}
        self.from_input: set[str] = {model.graph.input[0].name}
        self.sites = Sites()
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def run(self) -> Flow:
        for node in self.model.graph.node:
            tags = [self.tags.get(name) for name in node.input]
            if any(name in self.from_input for name in node.input):
                self.from_input.update(node.output)
            try:
                outputs = self.node(node, tags)
            except NotFollowable as exc:
                raise NotFollowable(f"{node.op_type} {node.name or key(node)!r}: {exc}") from None
            except KeyError as exc:  # a tensor without a known shape or constant where a rule needs one
                raise NotFollowable(f"{node.op_type} {node.name or key(node)!r}: nothing known of {exc}") from None
            for name, tag in zip(node.output, outputs, strict=False):
                self.tags[name] = tag
        for value in self.model.graph.output:
            tag = self.tags.get(value.name)
            if isinstance(tag, Step):
                raise NotFollowable(f"the output {value.name!r} is one time step, not the whole run")
            if isinstance(tag, Timed):
                self.sites.outputs[value.name] = tag.axis
        return Flow(self.T, self.tags, self.sites, self.shapes)

    # ---- dispatch ---------------------------------------------------------------------------
    def node(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        count = len(node.output)
        if not any(isinstance(t, Timed) for t in tags):
            if any(isinstance(t, Step) for t in tags):
                return self.steps_only(node, tags)
            if any(t == META for t in tags):
                return [META] * count
            return [self.repeat(node)] * count
        if node.op_type == "Shape" or node.op_type == "Size":
            return [META]
        if any(isinstance(t, Step) for t in tags):
            raise NotFollowable("one time step meets the whole time axis")
        op = node.op_type
        if op in ELEMENTWISE:
            return [self.elementwise(node, tags)]
        if op in UNARY:
            return [self.first_only(tags, "its parameters")]
        if op in PER_SAMPLE:
            tag = self.first_only(tags, "its weights")
            if tag.axis != 0:
                raise NotFollowable(f"reads axis 0 as the batch, but time is on axis {tag.axis}")
            return [tag] * count
        handler = getattr(self, f"op_{op}", None)
        if op in RESHAPES:
            return [self.reshape(node, tags)]
        if op in REDUCE:
            return [self.reduce(node, tags)]
        if op in AXIS_KEEPING:
            return [self.axis_keeping(node, tags)] * count
        if handler is None:
            raise NotFollowable("no rule carries the time axis through this op")
        return handler(node, tags)

    # ---- without a timed input --------------------------------------------------------------
    def repeat(self, node: onnx.NodeProto) -> Timed | None:
        """The image's T copies are made here when an image tensor gets an axis T times longer."""
        if node.op_type not in ("Tile", "Expand", "Concat") or not any(n in self.from_input for n in node.input):
            return None
        out = self.shapes.get(key(node))
        if out is None:
            return None
        if node.op_type == "Concat":
            axis = int(attribute(node, "axis")) % len(out)
            if len(node.input) == self.T and len(set(node.input)) == 1:
                self.sites.repeats.append(key(node))
                return Timed(axis, replicated=True)
            return None
        source = self.shapes.get(node.input[0])
        if source is None:
            return None
        source = (1,) * (len(out) - len(source)) + tuple(source)
        for axis, (before, after) in enumerate(zip(source, out, strict=True)):
            if after == self.T * before:
                self.sites.repeats.append(key(node))
                self.edit(node, 1, axis, len(out), after if node.op_type == "Expand" else self.T)
                return Timed(axis, replicated=True)
        return None

    def steps_only(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        """Per-step arithmetic stays in its step; a Concat of the T steps in order is a time axis again."""
        steps = [t.t for t in tags if isinstance(t, Step)]
        if node.op_type == "Concat" and len(set(steps)) > 1:
            if steps != list(range(self.T)) or len(steps) != len(tags):
                raise NotFollowable(f"concatenates time steps {steps}, not 0..{self.T - 1} in order")
            self.sites.stacks.append(key(node))
            return [Timed(int(attribute(node, "axis")) % len(self.shapes[key(node)]))]
        return [Step(max(steps))] * len(node.output)

    # ---- with a timed input -----------------------------------------------------------------
    def first_only(self, tags: list[Tag], what: str) -> Timed:
        if any(isinstance(t, Timed) for t in tags[1:]):
            raise NotFollowable(f"{what} vary over time")
        assert isinstance(tags[0], Timed)
        return tags[0]

    def out_axis(self, name: str, tag: Timed, rank: int) -> int:
        return tag.axis + rank - len(self.shapes[name])

    def elementwise(self, node: onnx.NodeProto, tags: list[Tag]) -> Timed:
        out = self.shapes[key(node)]
        axes = {self.out_axis(n, t, len(out)) for n, t in zip(node.input, tags, strict=True) if isinstance(t, Timed)}
        if len(axes) != 1:
            raise NotFollowable(f"its inputs hold time on different axes {sorted(axes)}")
        axis = axes.pop()
        replicated = all(t.replicated for t in tags if isinstance(t, Timed))
        for index, (name, tag) in enumerate(zip(node.input, tags, strict=True)):
            if isinstance(tag, Timed) or not name:
                continue
            shape = self.shapes[name]
            at = axis - (len(out) - len(shape))
            if at >= 0 and shape[at] > 1:  # an operand with a T-long axis of its own
                if name not in self.consts:
                    raise NotFollowable(f"{name!r} has a time axis of its own, computed from no step")
                self.sites.constants.append((key(node), index, at))
                replicated = False
        return Timed(axis, replicated)

    def reshape(self, node: onnx.NodeProto, tags: list[Tag]) -> Timed:
        """Reshapes keep element order, so time stays the outer factor of the axis where its block starts."""
        tag = self.first_only(tags, "its shape")
        source, out = self.shapes[node.input[0]], self.shapes[key(node)]
        outer = int(np.prod(source[: tag.axis], dtype=np.int64))
        block = int(np.prod(source[tag.axis :], dtype=np.int64))
        for axis in range(len(out)):
            before, rest = int(np.prod(out[:axis], dtype=np.int64)), int(np.prod(out[axis + 1 :], dtype=np.int64))
            if before == outer and out[axis] % self.T == 0 and out[axis] > 1 and (block // self.T) % rest == 0:
                if node.op_type == "Reshape":
                    self.reshape_target(node, axis, out)
                if out[axis] // self.T != source[tag.axis] // self.T:
                    self.sites.folds.append(key(node))
                return Timed(axis, tag.replicated)
        raise NotFollowable(f"splits the time axis: {tuple(source)} -> {tuple(out)}")

    def reshape_target(self, node: onnx.NodeProto, axis: int, out: tuple[int, ...]) -> None:
        target = self.consts.get(node.input[1])
        if target is None:
            return  # computed from shapes at run time: it follows T by itself (the surgery checks the shapes)
        value = int(target[axis])
        if value == 0 and not attribute(node, "allowzero", 0):
            if self.shapes[node.input[0]][axis] != out[axis]:
                raise NotFollowable("copies an input dim (0) into the time axis from elsewhere")
        elif value != -1:
            self.edit(node, 1, axis, len(out), value)

    def edit(self, node: onnx.NodeProto, index: int, position: int, rank: int, value: int) -> None:
        """Note a constant input that spells T at ``position`` (right-aligned to ``rank`` for Expand shapes)."""
        target = self.consts.get(node.input[index])
        if target is None:
            raise NotFollowable("spells the time axis in a shape computed at run time")
        flat = position - (rank - target.size)
        if flat < 0 or int(target.reshape(-1)[flat]) != value:
            raise NotFollowable("its time axis is not the constant it should be")
        self.sites.edits.append(Edit(key(node), index, flat, value))

    def reduce(self, node: onnx.NodeProto, tags: list[Tag]) -> Tag:
        tag = self.first_only(tags, "its axes")
        axes = reduced_axes(node, len(self.shapes[node.input[0]]), self.consts)
        if tag.axis not in axes:
            kept = attribute(node, "keepdims", 1)
            return Timed(tag.axis - (0 if kept else sum(a < tag.axis for a in axes)), tag.replicated)
        if self.shapes[node.input[0]][tag.axis] != self.T:
            raise NotFollowable("reduces over the time axis while it is folded with the batch")
        if node.op_type == "ReduceMean":
            self.sites.means.append(key(node))
            return None
        if node.op_type == "ReduceSum":
            self.sites.sums.append((key(node), self.scale_after(node)))
            return None
        raise NotFollowable("reduces over the time axis by something other than a mean")

    def scale_after(self, node: onnx.NodeProto) -> str:
        """The Div by T (or Mul by 1/T) that makes a ReduceSum over time a mean."""
        for user in self.consumers.get(key(node), []):
            other = [n for n in user.input if n != key(node)]
            value = self.consts.get(other[0]) if len(other) == 1 else None
            if value is None or value.size != 1:
                continue
            value = float(value.reshape(-1)[0])
            if (user.op_type == "Div" and value == self.T) or (user.op_type == "Mul" and np.isclose(value, 1 / self.T)):
                return key(user)
        raise NotFollowable("sums over the time axis without dividing by T")

    def axis_keeping(self, node: onnx.NodeProto, tags: list[Tag]) -> Timed:
        tag = self.first_only(tags, "its parameters")
        rank = len(self.shapes[node.input[0]])
        default = -1 if node.op_type in ("Softmax", "LogSoftmax", "Hardmax", "TopK") else 0
        if node.op_type == "CumSum":
            axis = int(self.consts[node.input[1]].reshape(-1)[0]) % rank
        else:
            axis = int(attribute(node, "axis", default)) % rank
        opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        coerced = node.op_type in ("Softmax", "LogSoftmax", "Hardmax") and opset < 13
        if axis == tag.axis or (coerced and tag.axis >= axis):
            raise NotFollowable("works along the time axis")
        if node.op_type in ("ArgMax", "ArgMin") and not attribute(node, "keepdims", 1) and axis < tag.axis:
            return Timed(tag.axis - 1, tag.replicated)
        return tag

    # ---- ops with their own rule (op_<type>) ------------------------------------------------
    def op_LayerNormalization(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its scale")
        axis = int(attribute(node, "axis", -1)) % len(self.shapes[node.input[0]])
        if tag.axis >= axis:
            raise NotFollowable("normalises over the time axis")
        return [tag] * len(node.output)

    def op_Transpose(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "")
        rank = len(self.shapes[node.input[0]])
        perm = list(attribute(node, "perm", list(range(rank))[::-1]))
        return [Timed(perm.index(tag.axis), tag.replicated)]

    def op_MatMul(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        out = self.shapes[key(node)]
        found = []
        for index, (name, tag) in enumerate(zip(node.input, tags, strict=True)):
            if not isinstance(tag, Timed):
                continue
            rank = len(self.shapes[name])
            contracted = rank - 1 if index == 0 else rank - 2
            if rank == 1 or tag.axis == contracted:
                raise NotFollowable("sums over the time axis (it is the contracted dimension)")
            found.append((self.out_axis(name, tag, len(out)), tag.replicated))
        if len({axis for axis, _ in found}) != 1:
            raise NotFollowable("its inputs hold time on different axes")
        return [Timed(found[0][0], all(r for _, r in found))]

    def op_Gemm(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its weights")
        if attribute(node, "transA", 0):
            raise NotFollowable("sums over the time axis (transposed A)")
        return [tag]

    def op_Slice(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its bounds")
        rank = len(self.shapes[node.input[0]])
        axes = self.slice_argument(node, 3, "axes")
        if axes is None:  # every axis from 0, as many as the starts
            count = len(attribute(node, "starts")) if len(node.input) == 1 else self.shapes[node.input[1]][0]
            axes = np.arange(count)
        if tag.axis not in [int(a) % rank for a in axes]:
            return [tag]
        axes = [int(a) % rank for a in axes]
        starts, ends = self.slice_argument(node, 1, "starts"), self.slice_argument(node, 2, "ends")
        steps = self.slice_argument(node, 4, "steps")
        at = axes.index(tag.axis)
        size = self.shapes[node.input[0]][tag.axis]
        start, stop = int(starts[at]), int(ends[at])
        start, stop = start + size if start < 0 else start, min(stop + size if stop < 0 else stop, size)
        if size != self.T or stop - start != 1 or (steps is not None and int(steps[at]) != 1):
            raise NotFollowable(f"slices the time axis [{start}:{stop}] of {size}, not one step of {self.T}")
        self.sites.steps[key(node)] = start
        return [Step(start)]

    def slice_argument(self, node: onnx.NodeProto, index: int, name: str) -> np.ndarray | None:
        if len(node.input) == 1:  # opset < 10: attributes
            value = attribute(node, name)
            return None if value is None else np.asarray(value)
        if index >= len(node.input) or not node.input[index]:
            return None
        value = self.consts.get(node.input[index])
        if value is None:
            raise NotFollowable(f"its {name} are computed at run time")
        return value.reshape(-1)

    def op_Gather(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its indices")
        rank = len(self.shapes[node.input[0]])
        axis = int(attribute(node, "axis", 0)) % rank
        indices = self.shapes[node.input[1]]
        if axis != tag.axis:
            shift = len(indices) - 1 if axis < tag.axis else 0
            return [Timed(tag.axis + shift, tag.replicated)]
        index = self.consts.get(node.input[1])
        if index is None or index.size != 1 or len(indices) or self.shapes[node.input[0]][axis] != self.T:
            raise NotFollowable("gathers along the time axis other than one step")
        step = int(index) % self.T
        self.sites.steps[key(node)] = step
        return [Step(step)]

    def op_Split(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its sizes")
        rank = len(self.shapes[node.input[0]])
        axis = int(attribute(node, "axis", 0)) % rank
        if axis != tag.axis:
            return [tag] * len(node.output)
        sizes = {self.shapes[name][axis] for name in node.output}
        if len(node.output) != self.T or len(sizes) != 1:
            raise NotFollowable(f"splits the time axis into {len(node.output)} parts, not the {self.T} steps")
        self.sites.splits.append(key(node))
        return [Step(t) for t in range(self.T)]

    def op_Concat(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        out = self.shapes[key(node)]
        axis = int(attribute(node, "axis")) % len(out)
        timed = [t for t in tags if isinstance(t, Timed)]
        if len(timed) != len(tags) or len({t.axis for t in timed}) != 1:
            raise NotFollowable("joins a timed tensor with one that has no time axis")
        if axis == timed[0].axis:
            raise NotFollowable("concatenates along the time axis")
        return [Timed(axis=timed[0].axis, replicated=all(t.replicated for t in timed))]

    def op_Expand(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its shape")
        out = self.shapes[key(node)]
        axis = self.out_axis(node.input[0], tag, len(out))
        target = self.consts.get(node.input[1])
        if target is not None:
            flat = axis - (len(out) - target.size)
            if flat >= 0 and int(target[flat]) == out[axis]:
                self.edit(node, 1, axis, len(out), out[axis])
        return [Timed(axis, tag.replicated)]

    def op_Tile(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its repeats")
        repeats = self.consts.get(node.input[1])
        if repeats is None or int(repeats[tag.axis]) != 1:
            raise NotFollowable("repeats along the time axis")
        return [tag]

    def op_Pad(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its pads")
        if self.shapes[node.input[0]][tag.axis] != self.shapes[key(node)][tag.axis]:
            raise NotFollowable("pads the time axis")
        return [tag]

    def op_Resize(self, node: onnx.NodeProto, tags: list[Tag]) -> list[Tag]:
        tag = self.first_only(tags, "its scales")
        if self.shapes[node.input[0]][tag.axis] != self.shapes[key(node)][tag.axis]:
            raise NotFollowable("resizes the time axis")
        return [tag]
