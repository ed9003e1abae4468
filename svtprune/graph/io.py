"""Reading and writing ONNX files: clear errors on bad input, atomic writes, size accounting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from svtprune.errors import UserError
from svtprune.outputs import OutputSet


def attribute(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """The value of ``node``'s attribute ``name`` (ints, floats, tensors as onnx gives them), else ``default``."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def load_model(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file with its external data; every failure is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"{path}: not a readable ONNX model ({exc.__class__.__name__})") from exc
    if not model.graph.node:
        raise UserError(f"{path}: not an ONNX model (the graph has no nodes)")
    return model


def save_model(model: onnx.ModelProto, path: str | Path, force: bool = False) -> Path:
    """Write one model file atomically (``svtprune.outputs``: checked, locked, temp file + rename).

    Intermediate shapes (``value_info``) are left out: ONNX Runtime and shape inference recompute
    them, and on a 2-bit model they were 22% of the file (31.8 k of 141.4 k bytes).
    """
    path = Path(path)
    with OutputSet.claim([path], force=force) as outputs:
        outputs.write({path: model_bytes(model)})
    return path


def model_bytes(model: onnx.ModelProto) -> bytes:
    """The bytes ``save_model`` writes for ``model``."""
    return as_written(model).SerializeToString()


def as_written(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model as ``save_model`` writes it (a copy without ``value_info``, or the model itself)."""
    if not len(model.graph.value_info):
        return model
    lean = onnx.ModelProto()
    lean.CopyFrom(model)
    del lean.graph.value_info[:]
    return lean


def written_bytes(model: onnx.ModelProto) -> int:
    """The size of the file ``save_model`` writes for ``model``."""
    return as_written(model).ByteSize()


def param_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every weight as the file stores it (initializers and Constant nodes).

    Low-bit types (int4/uint4/int2) are counted packed, the way the file stores them. Neuron state a
    fixed-batch export stores as constants is not a weight (``state_bytes``).
    """
    from svtprune.graph.state import state_constants

    state = state_constants(model)
    total = 0
    for tensor in model.graph.initializer:
        total += 0 if tensor.name in state else tensor_bytes(tensor)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    total += tensor_bytes(attr.t)
    return total


def state_bytes(model: onnx.ModelProto) -> int:
    """Bytes of neuron state stored as constants (a fixed-batch export's initial membranes)."""
    from svtprune.graph.state import state_constants

    state = state_constants(model)
    return sum(tensor_bytes(t) for t in model.graph.initializer if t.name in state)


def param_count(model: onnx.ModelProto) -> int:
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))


_PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}
for _name, _bits in (("INT2", 2), ("UINT2", 2), ("FLOAT4E2M1", 4)):
    if hasattr(onnx.TensorProto, _name):
        _PACKED_BITS[getattr(onnx.TensorProto, _name)] = _bits


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    count = int(np.prod(tensor.dims)) if tensor.dims else 1
    bits = _PACKED_BITS.get(tensor.data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    return count * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose symbolic input batch is ``batch`` (output shapes cleared for inference to fill in)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    del fixed.graph.value_info[:]
    for value in fixed.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    for value in fixed.graph.output:  # declared output shapes may name the batch; inference fills them in
        value.type.tensor_type.ClearField("shape")
    return fixed
