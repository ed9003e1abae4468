"""Neuron state that a fixed-batch export stores as constants.

Exported at a fixed batch, a neuron's initial membrane (``torch.full_like(x, v_reset)``) becomes an
initializer of the activation's whole shape ``[B, C, ...]`` holding one value. It is not a weight:
it is counted apart from the parameter bytes, and normalisation turns it into a scalar, which
broadcasts to the same values at any width, so it never blocks a channel group.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from svtprune.graph.ops.elementwise import ELEMENTWISE

STATE_CONSUMERS = set(ELEMENTWISE) - {"Where"}  # a Where's condition selects; it is not state arithmetic


def uniform_value(tensor: onnx.TensorProto) -> np.ndarray | None:
    """The one value a tensor of rank >= 2 repeats everywhere, as a 0-d array (None otherwise)."""
    if len(tensor.dims) < 2 or int(np.prod(tensor.dims)) < 2:
        return None
    if tensor.raw_data:  # compare bytes first: a weight differs within its first elements
        size = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
        raw = tensor.raw_data
        if raw[: size * 8] != raw[:size] * min(8, len(raw) // size) or raw != raw[:size] * (len(raw) // size):
            return None
    value = numpy_helper.to_array(tensor)
    if value.dtype.kind not in "fiub" or not np.all(value == value.flat[0]):
        return None
    return np.array(value.flat[0], dtype=value.dtype)


def state_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Initializers that hold neuron state: uniform, of rank >= 2, read only by elementwise arithmetic."""
    consumers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, set()).add(node.op_type)
    outputs = {o.name for o in model.graph.output}
    found = {}
    for tensor in model.graph.initializer:
        ops = consumers.get(tensor.name)
        if not ops or not ops <= STATE_CONSUMERS or tensor.name in outputs:
            continue
        value = uniform_value(tensor)
        if value is not None:
            found[tensor.name] = value
    return found
