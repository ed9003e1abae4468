"""The concrete shape of every tensor of a graph at one batch size, for following the time axis.

Where T sits in a reshape's target is read from numbers (which output axis holds the input's
time axis), so every tensor needs a concrete shape. onnx's shape inference gives them for
free on dynamo exports; TorchScript exports compute their shapes at run time
(``Shape -> Gather -> Concat``, ``ConstantOfShape``), so whatever inference leaves open is
measured by one ONNX Runtime run with every tensor as an output.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import shape_inference

from svtprune.graph.io import with_batch
from svtprune.graph.taps import with_outputs
from svtprune.runtime import make_session

Shapes = dict[str, tuple[int, ...]]


def probe_batch(model: onnx.ModelProto, avoid: int) -> int:
    """The batch to probe at: the input's fixed batch, else 2 (3 when T is 2, so B and T differ)."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
        return dims[0].dim_value
    return 3 if avoid == 2 else 2


def tensor_shapes(model: onnx.ModelProto, batch: int) -> Shapes:
    """Every tensor's shape (inputs, initializers, node outputs) with the input batch set to ``batch``."""
    fixed = with_batch(model, batch)
    shapes = _inferred(fixed)
    wanted = [out for node in model.graph.node for out in node.output if out]
    missing = [name for name in wanted if name not in shapes]
    if missing:
        shapes.update(_measured(fixed, missing, batch))
    return shapes


def _inferred(model: onnx.ModelProto) -> Shapes:
    try:
        inferred = shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # an unusual graph: measure everything instead
        return {}
    shapes: Shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    for value in values:
        kind = value.type.tensor_type
        if kind.HasField("shape") and all(d.HasField("dim_value") for d in kind.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in kind.shape.dim)
    return shapes


def _measured(model: onnx.ModelProto, names: list[str], batch: int) -> Shapes:
    """One run of ``model`` on random images with ``names`` as extra outputs (no graph optimisation)."""
    tapped = with_outputs(model, names, elem_type=None)
    session = make_session(tapped, threads=1, optimize=False, arena=False)
    value = session.get_inputs()[0]
    shape = [batch if not isinstance(d, int) else d for d in value.shape]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    outputs = [o.name for o in session.get_outputs()]
    values = session.run(outputs, {value.name: x})
    return {name: tuple(array.shape) for name, array in zip(outputs, values, strict=True)}
