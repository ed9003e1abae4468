"""Elementwise operators: channels line up by broadcasting; constants spanning them are sliced."""

from __future__ import annotations

import onnx

from svtprune.graph.labels import Label, Member, PropagationState
from svtprune.graph.ops.registry import add_label, handles, labels_of

ELEMENTWISE = (
    "Add Sub Mul Div Pow Max Min Mean Sum Where Equal Greater GreaterOrEqual Less LessOrEqual And Or "
    "Xor Not Cast CastLike Relu LeakyRelu PRelu Sigmoid HardSigmoid Tanh Neg Abs Sign Floor Ceil Round "
    "Clip Sqrt Reciprocal Exp Log Erf Identity Dropout Softplus Gelu Elu Selu HardSwish Mish BitShift Mod"
).split()


ACTIVATION_CONSTANT = (
    "a constant shaped like an activation, which no rule follows (a fixed-batch export stores run-time "
    "values so: an export with a dynamic batch may let svtprune follow it)"
)


@handles(*ELEMENTWISE)
def elementwise(state: PropagationState, node: onnx.NodeProto) -> None:
    out_name = node.output[0]
    out_rank = state.rank(out_name)
    inputs = [n for n in node.input[: (1 if node.op_type in ("Clip", "Dropout") else None)] if n]
    if out_rank is None:
        state.refuse_inputs(inputs, f"{node.op_type} {node.name}: unknown output shape")
        return
    out: list[Label] = []
    for name in inputs:
        offset = out_rank - (state.rank(name) or 0)
        for label in labels_of(state, name):
            add_label(out, state, Label(label.ids, tuple(a + offset for a in label.axes)), node.name)
    for index, name in enumerate(node.input):
        if name and not labels_of(state, name):
            _check_unlabelled_operand(state, node, index, out, out_rank)
    state.labels[out_name] = out
    if not _keeps_zero(state, node, out, out_rank):
        for label in out:
            state.nonzero.update(label.ids.ravel().tolist())
    if inputs and all(n in state.shape_only or n in state.constants for n in inputs):
        state.shape_only.add(out_name)


ZERO_KEEPING = set(
    "Add Sub Mul Div Neg Abs Sign Relu LeakyRelu PRelu Gelu Erf Tanh Sqrt Identity Dropout Cast CastLike "
    "HardSwish Mish Elu Selu Floor Ceil Round Clip".split()
)


def _keeps_zero(state: PropagationState, node: onnx.NodeProto, out: list[Label], out_rank: int) -> bool:
    """Whether a channel zeroed on the way in (the oracle's removed slice) is still zero on the way out.

    A LayerNorm over channels counts the removed channels' values; surgery accounts for them as zeros
    (``reductions.layer_norm``), which holds only while every op on the way keeps zero at zero.
    """
    if node.op_type not in ZERO_KEEPING or not out:
        return node.op_type in ZERO_KEEPING
    if node.op_type not in ("Add", "Sub", "Clip"):
        return True  # products, quotients and odd activations of zero are zero
    for name in node.input[:2]:
        if not name or labels_of(state, name):
            continue
        shape = state.shapes.get(name)
        if name not in state.constants or shape is None:
            return False  # an activation no rule follows adds something to the removed channels
        offset = out_rank - len(shape)
        for label in out:
            if any(a - offset < 0 or shape[a - offset] == 1 for a in label.axes):
                return False  # a broadcast constant is not sliced, so it is added to removed channels too
    return True


def _check_unlabelled_operand(
    state: PropagationState, node: onnx.NodeProto, index: int, out: list[Label], out_rank: int
) -> None:
    """A constant spanning channels is sliced with them; an unfollowed activation pins them."""
    name = node.input[index]
    shape = state.shapes.get(name)
    if shape is None:
        for label in out:
            state.refuse(label.ids, f"{node.op_type} {node.name}: operand {name} has unknown shape")
        return
    offset = out_rank - len(shape)
    for label in out:
        spanned = [a - offset for a in label.axes if a - offset >= 0 and shape[a - offset] != 1]
        if not spanned:
            continue
        if name in state.shape_only:
            continue  # its values come from shapes only, so it follows any new width at run time
        if name in state.constants and len(label.axes) == 1:
            state.members.append(Member(node.name, index, name, spanned[0], label.ids, "param"))
        elif name in state.normalised:
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels meet {state.normalised[name]}")
        elif name in state.constants and state.constants[name].ndim >= 3:
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels meet {name}, {ACTIVATION_CONSTANT}")
        else:
            state.refuse(label.ids, f"{node.op_type} {node.name}: channels meet {name}, which no rule follows")
