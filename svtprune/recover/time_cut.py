"""Label-free recovery of a model cut to fewer time steps: its head re-fitted to the original's logits.

The cut to T' steps (``timesteps.shorten``) is exact on every step it keeps: every neuron spikes as
before. What changes is only the head's average: the original averages T steps, the cut T', and the
first steps carry little (on the reference Spikformer the first step's logits alone score 45%, steps
2-4 alone 88%). Changing the dynamics to fire more over fewer steps was measured and refused
(docs/benchmark-log.md, "Recovering a time cut"): thresholds re-fitted to the original's firing rates
moved held-out accuracy by -1.7 to +0.4 points and always lowered agreement with the original, and
membranes started charged cost up to 60 points: both change the kept steps, which were exact.
So only the head moves, which keeps every spike exact (``verify`` still checks them):

- the head's weight and bias are re-fitted by ridge least squares so that the cut's logits, a linear
  function of the head's time-averaged input, match the original's logits on calibration images
  (ridge towards the original head: a strong ridge gives the plain cut back);
- optionally, the last neuron's membrane at the last kept step (averaged over positions) joins the
  features through a small added branch (``time_recovery/...``, a MatMul added to the logits): it says
  how close each channel is to firing in the steps that were cut.

Which of these (and which ridge) is kept is decided by cross-validated agreement with the original's
predictions on the calibration images (label-free); none is kept where none agrees better than the cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from svtprune.graph.analysis import constants_of
from svtprune.graph.taps import with_outputs
from svtprune.recover.reconstruct import REFIT_WEIGHT, least_squares
from svtprune.runtime import logits_of, make_session
from svtprune.runtime_layout import as_logits, fixed_batch, padded
from svtprune.spiking.neurons import find_neurons
from svtprune.spiking.time_axis import TimeAxis, find_time_axis
from svtprune.spiking.time_tags import Timed

BRANCH = "time_recovery/"  # prefix of the added nodes and tensors (``verify`` leaves them out of its structure check)
RIDGES = (1e-4, 1e-3, 0.01, 0.1, 1.0)  # relative to the mean energy of the features and the bias column
FOLDS = 4
CHUNK = 128  # calibration images run at once
LINEAR = {"ReduceMean", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Add"}  # between head and output
TOLERANCE = 1e-3  # the cut's logits against the head's linear map of its features (relative)


@dataclass
class Head:
    """The classifier the re-fit replaces: its node, weight (in x out), bias and where the bias lives."""

    node: onnx.NodeProto
    weight: np.ndarray
    bias: np.ndarray
    bias_node: onnx.NodeProto | None  # the Gemm itself or the Add after a MatMul; None: no bias to re-fit


@dataclass
class Features:
    """What the re-fit regresses on, per calibration image: the head's time-mean input, the last membrane."""

    head: np.ndarray
    membrane: np.ndarray | None
    logits: np.ndarray  # the cut's
    membrane_rank: int = 0  # of the membrane tensor as the graph holds it


@dataclass
class TimeRecovery:
    """The recovered model, what was done (the report's ``recovery``) and the cross-validated agreements."""

    model: onnx.ModelProto
    what: str
    agreement: dict = field(default_factory=dict)


def refit_time_cut(
    original: onnx.ModelProto,
    cut: onnx.ModelProto,
    x: np.ndarray,
    original_logits: np.ndarray | None = None,
    membrane: bool = True,
    axis: TimeAxis | None = None,
) -> TimeRecovery:
    """``cut`` (the original at fewer time steps) with its head re-fitted to the original's logits on ``x``
    where that agrees better with the original, cross-validated (else ``cut``), and what was done.

    ``original_logits``: the original's on ``x`` (computed when None); ``axis``: the time axis of the
    model ``cut`` was cut from (found in ``original`` when None). Without ``membrane`` the graph keeps
    its nodes: only the head's weight and bias change."""
    head = find_head(cut)
    if isinstance(head, str):
        return TimeRecovery(cut, f"none: {head}")
    axis = axis or find_time_axis(original)
    if isinstance(axis, str):
        return TimeRecovery(cut, f"none: {axis}")
    neurons = find_neurons(cut)
    if not neurons:
        return TimeRecovery(cut, "none: the cut has no neurons")
    steps, name = neurons[0].time_steps, head.node.input[0]
    time = (axis.flow.tags.get(name), axis.flow.inner(name) if isinstance(axis.flow.tags.get(name), Timed) else 1)
    tap = neurons[-1].membranes[steps - 1] if membrane else None
    features = gather(cut, head, x, time, steps, tap)
    if isinstance(features, str):
        return TimeRecovery(cut, f"none: {features}")
    target = logits_of(make_session(original), x) if original_logits is None else original_logits
    intercept = head.bias_node is not None or membrane
    choice, agreement = choose(features, target.astype(np.float64), intercept)
    if choice is None:
        return TimeRecovery(cut, "none: no re-fit agreed better with the original (cross-validated)", agreement)
    kind, ridge = choice
    delta, shift = least_squares(stack(features, kind), target - features.logits, ridge, intercept)
    used = (tap, features.membrane_rank) if kind == "membrane" and tap else None
    model = install(cut, head, delta.T, shift, used)
    what = "head re-fit" + f" with the last membrane ({neurons[-1].name})" * (used is not None)
    return TimeRecovery(model, f"{what}: ridge {ridge}, {len(x)} calibration images", agreement)


def find_head(model: onnx.ModelProto) -> Head | str:
    """The last MatMul/Gemm with a constant 2-D weight before the first output, through linear ops only."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    values = constants_of(model)
    node = producer.get(model.graph.output[0].name)
    while node is not None and node.op_type in LINEAR:
        inputs = [i for i in node.input if i and i not in values]
        node = producer.get(inputs[0]) if len(inputs) == 1 else None
    if node is None or node.op_type not in ("MatMul", "Gemm") or node.input[1] not in values:
        return "no classifier (MatMul/Gemm on a constant weight) reaches the output through linear ops"
    weight = values[node.input[1]]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if weight.ndim != 2 or attrs.get("transA", 0) or not node.name:
        return "the classifier's weight is not a named 2-D [in, out] matrix"
    weight = weight.T if attrs.get("transB", 0) else weight
    return _with_bias(node, weight, values, consumers)


def _with_bias(node: onnx.NodeProto, weight: np.ndarray, values: dict, consumers: dict) -> Head:
    """The head with its bias: a Gemm's third input, or the constant of the one Add after a MatMul (input 1)."""
    zero = np.zeros(weight.shape[1], weight.dtype)
    if node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            return Head(node, weight, zero, None)
        bias = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else zero
        return Head(node, weight, np.broadcast_to(bias, zero.shape).astype(weight.dtype), node)
    readers = consumers.get(node.output[0], [])
    if len(readers) == 1 and readers[0].op_type == "Add" and readers[0].name and len(readers[0].input) == 2:
        add = readers[0]
        bias = values.get(add.input[1])
        if add.input[0] == node.output[0] and bias is not None and bias.shape == zero.shape:
            return Head(node, weight, bias, add)
    return Head(node, weight, zero, None)


def gather(
    cut: onnx.ModelProto, head: Head, x: np.ndarray, time: tuple, steps: int, membrane: str | None
) -> Features | str:
    """The features of every calibration image, from one pass of the cut; or why they cannot be had.

    ``time``: the head input's tag in the original's time axis and what its time axis folds beside T."""
    names = [head.node.input[0]] + ([membrane] if membrane else [])
    session = make_session(with_outputs(cut, names, elem_type=None), arena=False)
    output, fixed = session.get_outputs()[0].name, fixed_batch(session)
    parts: dict[str, list] = {"head": [], "membrane": [], "logits": []}
    rank = 0
    for start in range(0, len(x), fixed or CHUNK):
        part = x[start : start + (fixed or CHUNK)]
        feed = padded(part, fixed) if fixed else part
        values = session.run([output, *names], {session.get_inputs()[0].name: feed})
        parts["logits"].append(as_logits(session, values[0])[: len(part)].astype(np.float64))
        parts["head"].append(_real(_per_image(values[1], time, steps, len(feed), flat=True), len(part)))
        if membrane:
            rank = values[2].ndim
            parts["membrane"].append(_real(_per_image(values[2], (None, 1), steps, len(feed), False), len(part)))
    if any(p is None for group in parts.values() for p in group):
        return "the classifier's input or the last membrane is not one vector per image"
    joined = {k: np.concatenate(v) if v else None for k, v in parts.items()}
    features = Features(joined["head"], joined["membrane"], joined["logits"], rank)
    if features.head.shape[1] != len(head.weight):
        return "the classifier's input is not one feature vector per image"
    predicted = features.head @ head.weight + head.bias
    scale = max(float(np.abs(features.logits).max(initial=0.0)), 1.0)
    if np.abs(predicted - features.logits).max(initial=0.0) > TOLERANCE * scale:
        return "the logits are not the classifier applied to its time-averaged input"
    return features


def _real(value: np.ndarray | None, count: int) -> np.ndarray | None:
    return None if value is None else value[:count]


def _per_image(value: np.ndarray, time: tuple, steps: int, rows: int, flat: bool) -> np.ndarray | None:
    """``value`` as [images, channels]: averaged over its time axis (a ``Timed`` tag) and, unless ``flat``
    (where it must be [images, channels] already), over the positions after the channel axis."""
    tag, inner = time
    if isinstance(tag, Timed):
        at, shape = tag.axis, value.shape
        value = value.reshape(*shape[:at], steps, shape[at] // steps, *shape[at + 1 :]).mean(axis=at)
        if inner == 1:  # [T, B, ...]: the time axis goes; [T*B, ...] leaves B where it was
            value = value.reshape(*shape[:at], *shape[at + 1 :])
    if value.ndim < 2 or value.shape[0] != rows or (flat and value.ndim != 2):
        return None
    return value.reshape(rows, value.shape[1], -1).mean(axis=2).astype(np.float64)


def stack(features: Features, kind: str) -> np.ndarray:
    """The design matrix of one kind of re-fit."""
    if kind == "membrane" and features.membrane is not None:
        return np.hstack([features.head, features.membrane])
    return features.head


def choose(features: Features, target: np.ndarray, intercept: bool) -> tuple[tuple[str, float] | None, dict]:
    """The (features, ridge) whose re-fit agrees best with the original's predictions on held-back folds of the
    calibration images (ties: the smaller squared error), if it agrees better than the cut; and the agreements."""
    wanted = target.argmax(axis=1)
    plain = float((features.logits.argmax(axis=1) == wanted).mean())
    scores = {}
    for kind in ["head"] + ["membrane"] * (features.membrane is not None):
        design = stack(features, kind)
        for ridge in RIDGES:
            predicted = cross_validated(design, features.logits, target, ridge, intercept)
            agree = float((predicted.argmax(axis=1) == wanted).mean())
            scores[(kind, ridge)] = (agree, -float(((predicted - target) ** 2).mean()))
    agreement = {"cut": round(plain, 4), **{f"{k} {r}": round(s[0], 4) for (k, r), s in scores.items()}}
    best = max(scores, key=lambda key: scores[key], default=None)
    if best is None or scores[best][0] <= plain:
        return None, agreement
    return best, agreement


def cross_validated(
    design: np.ndarray, logits: np.ndarray, target: np.ndarray, ridge: float, intercept: bool
) -> np.ndarray:
    """Each image's re-fitted logits from a fit on the other folds (contiguous, so deterministic)."""
    predicted = np.empty(target.shape, dtype=np.float64)
    for fold in np.array_split(np.arange(len(design)), FOLDS):
        rest = np.setdiff1d(np.arange(len(design)), fold)
        delta, shift = least_squares(design[rest], target[rest] - logits[rest], ridge, intercept)
        predicted[fold] = logits[fold] + design[fold] @ delta.T + (0.0 if shift is None else shift)
    return predicted


def install(
    cut: onnx.ModelProto, head: Head, delta: np.ndarray, shift: np.ndarray | None, membrane: tuple[str, int] | None
) -> onnx.ModelProto:
    """A copy of ``cut`` with the head's weight (and bias) moved by the fit; the membrane's part as a branch."""
    model = onnx.ModelProto()
    model.CopyFrom(cut)
    nodes = {n.name: n for n in model.graph.node}
    width = len(head.weight)
    weight = (head.weight + delta[:width]).astype(head.weight.dtype)
    node = nodes[head.node.name]
    stored = weight.T if any(a.name == "transB" and a.i for a in node.attribute) else weight
    _put(model, node, 1, stored, f"{node.name}{REFIT_WEIGHT}")
    extra = shift
    if head.bias_node is not None and shift is not None:
        bias_node = nodes[head.bias_node.name]
        index = 2 if bias_node.op_type == "Gemm" else 1
        while len(bias_node.input) <= index:
            bias_node.input.append("")
        _put(
            model,
            bias_node,
            index,
            (head.bias + shift).astype(weight.dtype),
            f"{bias_node.name}{REFIT_WEIGHT if index == 1 else '_refit_b'}",
        )
        extra = None
    if membrane is not None or extra is not None:
        branch(model, membrane, delta[width:] if membrane else None, extra)
    return model


def _put(model: onnx.ModelProto, node: onnx.NodeProto, index: int, value: np.ndarray, name: str) -> None:
    """Input ``index`` of ``node`` reads a fresh initializer ``name`` (a weight shared elsewhere stays as it was)."""
    old = node.input[index]
    node.input[index] = name
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
    if old and not any(old in n.input for n in model.graph.node):
        kept = [t for t in model.graph.initializer if t.name != old]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)


def branch(
    model: onnx.ModelProto, membrane: tuple[str, int] | None, weight: np.ndarray | None, shift: np.ndarray | None
) -> None:
    """Adds ``mean(membrane) @ weight`` and ``shift`` to the first output, through nodes named ``time_recovery/...``.

    ``membrane``: the tensor and its rank (``[N, C, ...]``, averaged over the axes after C)."""
    output = model.graph.output[0].name
    inner = BRANCH + "logits"
    for node in model.graph.node:
        node.output[:] = [inner if o == output else o for o in node.output]
        node.input[:] = [inner if i == output else i for i in node.input]
    added: list[onnx.NodeProto] = []
    terms = []
    if membrane is not None and weight is not None:
        mean = _mean_over_positions(model, *membrane, added)
        model.graph.initializer.append(numpy_helper.from_array(weight.astype(np.float32), BRANCH + "weight"))
        added.append(helper.make_node("MatMul", [mean, BRANCH + "weight"], [BRANCH + "term"], name=BRANCH + "matmul"))
        terms.append(BRANCH + "term")
    if shift is not None:
        model.graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), BRANCH + "shift"))
        terms.append(BRANCH + "shift")
    current = inner
    for index, term in enumerate(terms):
        result = output if index == len(terms) - 1 else f"{BRANCH}sum{index}"
        added.append(helper.make_node("Add", [current, term], [result], name=f"{BRANCH}add{index}"))
        current = result
    model.graph.node.extend(added)


def _mean_over_positions(model: onnx.ModelProto, tensor: str, rank: int, added: list[onnx.NodeProto]) -> str:
    """``tensor`` ([N, C, ...] of ``rank`` axes) averaged over every axis after C."""
    if rank <= 2:
        return tensor
    axes, name = list(range(2, rank)), BRANCH + "membrane_mean"
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if opset >= 18:
        model.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), BRANCH + "axes"))
        node = helper.make_node("ReduceMean", [tensor, BRANCH + "axes"], [name], keepdims=0, name=name)
    else:
        node = helper.make_node("ReduceMean", [tensor], [name], axes=axes, keepdims=0, name=name)
    added.append(node)
    return name


def without_branch(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` without the nodes ``branch`` added (the first output read where the branch read it): what the
    plain cut's structure is compared with by ``verify``."""
    if not any(n.name.startswith(BRANCH) for n in model.graph.node):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [n for n in out.graph.node if not n.name.startswith(BRANCH)]
    del out.graph.node[:]
    out.graph.node.extend(kept)
    inner, output = BRANCH + "logits", out.graph.output[0].name
    for node in out.graph.node:
        node.output[:] = [output if o == inner else o for o in node.output]
        node.input[:] = [output if i == inner else i for i in node.input]
    initializers = [t for t in out.graph.initializer if not t.name.startswith(BRANCH)]
    del out.graph.initializer[:]
    out.graph.initializer.extend(initializers)
    return out


def as_recovered(model: onnx.ModelProto, meta: dict) -> tuple[onnx.ModelProto, list[str]]:
    """For ``verify``: a file whose plan records a recovery (``time_recovery`` in its meta), without the branch
    it added, and the layers whose weights it re-fitted (checked as re-fitted ones: all else stays exact)."""
    record = meta.get("time_recovery") or {}
    layers = list(record.get("layers", []))
    return (without_branch(model) if record else model), layers


def changed_layers(before: onnx.ModelProto, after: onnx.ModelProto) -> list[str]:
    """The nodes of ``after`` that read another tensor than in ``before`` (the re-fitted head and its bias)."""
    inputs = {n.name: list(n.input) for n in before.graph.node}
    return sorted(n.name for n in after.graph.node if n.name in inputs and list(n.input) != inputs[n.name])
