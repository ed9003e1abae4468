"""Torch implementations of the ONNX operators SViT exporters produce.

Each function takes the node, its evaluated inputs (``None`` for an omitted optional input)
and returns the list of outputs. Integer tensors (shape arithmetic) stay int64 tensors,
so run-time Shape -> Gather -> Concat -> Reshape chains follow the batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

Tensor = torch.Tensor
OpFn = Callable[[onnx.NodeProto, list], list]
OPS: dict[str, OpFn] = {}

DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def op(*names: str) -> Callable[[OpFn], OpFn]:
    def register(fn: OpFn) -> OpFn:
        for name in names:
            OPS[name] = fn
        return fn

    return register


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def ints(value: Tensor | None) -> list[int] | None:
    return None if value is None else [int(v) for v in value.reshape(-1).tolist()]


def to_torch(array: np.ndarray) -> Tensor:
    return torch.from_numpy(array.copy())


def _binary(fn: Callable[[Tensor, Tensor], Tensor]) -> OpFn:
    return lambda node, x: [fn(x[0], x[1])]


for _name, _fn in {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Pow": torch.pow,
    "Max": torch.maximum,
    "Min": torch.minimum,
    "Equal": torch.eq,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "MatMul": torch.matmul,
}.items():
    OPS[_name] = _binary(_fn)

for _name, _fn in {
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Sqrt": torch.sqrt,
    "Exp": torch.exp,
    "Log": torch.log,
    "Erf": torch.erf,
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Reciprocal": torch.reciprocal,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Not": torch.logical_not,
    "Identity": lambda t: t,
    "Dropout": lambda t: t,
}.items():
    OPS[_name] = (lambda f: lambda node, x: [f(x[0])])(_fn)


@op("Div")
def _div(node: onnx.NodeProto, x: list) -> list:
    a, b = x
    if not a.is_floating_point() and not b.is_floating_point():
        return [torch.div(a, b, rounding_mode="trunc")]  # ONNX integer Div truncates
    return [a / b]


@op("Constant")
def _constant(node: onnx.NodeProto, x: list) -> list:
    a = node.attribute[0]
    if a.name == "value":
        return [to_torch(numpy_helper.to_array(a.t))]
    value = helper.get_attribute_value(a)
    return [torch.tensor(value, dtype=torch.float32 if "float" in a.name else torch.int64)]


@op("ConstantOfShape")
def _constant_of_shape(node: onnx.NodeProto, x: list) -> list:
    value = attrs(node).get("value")
    fill = to_torch(numpy_helper.to_array(value)) if value is not None else torch.zeros(1)
    return [fill.reshape(-1)[0].expand(ints(x[0])).clone()]


@op("Cast")
def _cast(node: onnx.NodeProto, x: list) -> list:
    return [x[0].to(DTYPES[attrs(node)["to"]])]


@op("Where")
def _where(node: onnx.NodeProto, x: list) -> list:
    return [torch.where(x[0], x[1], x[2])]


@op("Clip")
def _clip(node: onnx.NodeProto, x: list) -> list:
    low, high = (x + [None, None])[1:3]
    out = x[0]
    out = out if low is None else torch.maximum(out, low)
    return [out if high is None else torch.minimum(out, high)]


@op("Shape")
def _shape(node: onnx.NodeProto, x: list) -> list:
    a = attrs(node)
    dims = list(x[0].shape)[a.get("start", 0) : a.get("end", None)]
    return [torch.tensor(dims, dtype=torch.int64)]


@op("Reshape")
def _reshape(node: onnx.NodeProto, x: list) -> list:
    target = ints(x[1])
    if not attrs(node).get("allowzero", 0):
        target = [x[0].shape[i] if d == 0 else d for i, d in enumerate(target)]
    return [x[0].reshape(target)]


@op("Flatten")
def _flatten(node: onnx.NodeProto, x: list) -> list:
    axis = attrs(node).get("axis", 1) % max(x[0].dim(), 1)
    return [x[0].reshape(int(torch.tensor(x[0].shape[:axis]).prod()), -1)]


@op("Transpose")
def _transpose(node: onnx.NodeProto, x: list) -> list:
    perm = attrs(node).get("perm") or list(reversed(range(x[0].dim())))
    return [x[0].permute(perm)]


def _axes(node: onnx.NodeProto, x: list, index: int) -> list[int] | None:
    if len(x) > index and x[index] is not None:
        return ints(x[index])
    return attrs(node).get("axes")


@op("Squeeze")
def _squeeze(node: onnx.NodeProto, x: list) -> list:
    axes = _axes(node, x, 1)
    if axes is None:
        return [x[0].squeeze()]
    return [x[0].squeeze(tuple(a % x[0].dim() for a in axes))]


@op("Unsqueeze")
def _unsqueeze(node: onnx.NodeProto, x: list) -> list:
    out = x[0]
    rank = out.dim() + len(_axes(node, x, 1))
    for axis in sorted(a % rank for a in _axes(node, x, 1)):
        out = out.unsqueeze(axis)
    return [out]


@op("Slice")
def _slice(node: onnx.NodeProto, x: list) -> list:
    data, starts, ends = x[0], ints(x[1]), ints(x[2])
    axes = ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
    steps = ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    index = [slice(None)] * data.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step < 1:
            raise NotImplementedError("Slice with a negative step")
        size = data.shape[axis]
        start = max(0, min(size, start + size if start < 0 else start))
        end = max(0, min(size, end + size if end < 0 else end))
        index[axis % data.dim()] = slice(start, end, step)
    return [data[tuple(index)]]


@op("Split")
def _split(node: onnx.NodeProto, x: list) -> list:
    a = attrs(node)
    axis = a.get("axis", 0)
    sizes = ints(x[1]) if len(x) > 1 and x[1] is not None else a.get("split")
    if sizes is None:
        parts = len(node.output)
        chunk = -(-x[0].shape[axis] // parts)
        sizes = [min(chunk, x[0].shape[axis] - i * chunk) for i in range(parts)]
    return list(torch.split(x[0], sizes, dim=axis))


@op("Concat")
def _concat(node: onnx.NodeProto, x: list) -> list:
    return [torch.cat([t for t in x if t is not None], dim=attrs(node)["axis"])]


@op("Gather")
def _gather(node: onnx.NodeProto, x: list) -> list:
    data, index = x
    axis = attrs(node).get("axis", 0) % data.dim()
    index = index.long() % data.shape[axis]
    picked = data.index_select(axis, index.reshape(-1))
    return [picked.reshape(data.shape[:axis] + index.shape + data.shape[axis + 1 :])]


@op("Expand")
def _expand(node: onnx.NodeProto, x: list) -> list:
    shape = torch.broadcast_shapes(x[0].shape, tuple(ints(x[1])))
    return [x[0].expand(shape)]


@op("Tile")
def _tile(node: onnx.NodeProto, x: list) -> list:
    return [x[0].repeat(ints(x[1]))]


@op("Range")
def _range(node: onnx.NodeProto, x: list) -> list:
    return [torch.arange(x[0].item(), x[1].item(), x[2].item(), dtype=x[0].dtype)]


def _reduce(fn: Callable) -> OpFn:
    def run(node: onnx.NodeProto, x: list) -> list:
        a = attrs(node)
        axes = _axes(node, x, 1)
        if not axes:
            if a.get("noop_with_empty_axes", 0):
                return [x[0]]
            axes = list(range(x[0].dim()))
        return [fn(x[0], dim=tuple(axes), keepdim=bool(a.get("keepdims", 1)))]

    return run


OPS["ReduceMean"] = _reduce(torch.mean)
OPS["ReduceSum"] = _reduce(torch.sum)
OPS["ReduceMax"] = _reduce(torch.amax)


@op("Softmax")
def _softmax(node: onnx.NodeProto, x: list) -> list:
    return [torch.softmax(x[0], dim=attrs(node).get("axis", -1))]


@op("LayerNormalization")
def _layer_norm(node: onnx.NodeProto, x: list) -> list:
    a = attrs(node)
    axis = a.get("axis", -1) % x[0].dim()
    bias = x[2] if len(x) > 2 else None
    return [F.layer_norm(x[0], x[0].shape[axis:], x[1], bias, a.get("epsilon", 1e-5))]


@op("Gelu")
def _gelu(node: onnx.NodeProto, x: list) -> list:
    return [F.gelu(x[0], approximate=attrs(node).get("approximate", "none"))]


@op("BatchNormalization")
def _batch_norm(node: onnx.NodeProto, x: list) -> list:
    # inference form: running statistics stay frozen, scale and bias train
    data, scale, bias, mean, var = x[:5]
    return [F.batch_norm(data, mean, var, scale, bias, False, 0.0, attrs(node).get("epsilon", 1e-5))]


def _pads(node: onnx.NodeProto, spatial: int) -> tuple[list[int], list[int]]:
    a = attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise NotImplementedError("auto_pad SAME_*")
    pads = a.get("pads") or [0] * (2 * spatial)
    return pads[:spatial], pads[spatial:]


def _pad_input(data: Tensor, begin: list[int], end: list[int], value: float) -> Tensor:
    flat = []
    for b, e in zip(reversed(begin), reversed(end), strict=True):
        flat += [b, e]
    return F.pad(data, flat, value=value)


@op("Conv")
def _conv(node: onnx.NodeProto, x: list) -> list:
    a = attrs(node)
    data, weight = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    spatial = weight.dim() - 2
    begin, end = _pads(node, spatial)
    padding: list[int] | int = begin
    if begin != end:
        data, padding = _pad_input(data, begin, end, 0.0), 0
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    strides = a.get("strides", [1] * spatial)
    dilations = a.get("dilations", [1] * spatial)
    return [conv(data, weight, bias, strides, padding, dilations, a.get("group", 1))]


@op("MaxPool", "AveragePool")
def _pool(node: onnx.NodeProto, x: list) -> list:
    a = attrs(node)
    kernel = a["kernel_shape"]
    spatial = len(kernel)
    begin, end = _pads(node, spatial)
    strides = a.get("strides", [1] * spatial)
    ceil = bool(a.get("ceil_mode", 0))
    data = x[0]
    if node.op_type == "MaxPool":
        padding: list[int] | int = begin
        if begin != end:
            data, padding = _pad_input(data, begin, end, float("-inf")), 0
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[spatial]
        dilations = a.get("dilations", [1] * spatial)
        return [pool(data, kernel, strides, padding, dilations, ceil_mode=ceil)]
    if begin != end:
        raise NotImplementedError("AveragePool with asymmetric pads")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[spatial]
    include = bool(a.get("count_include_pad", 0))
    return [pool(data, kernel, strides, begin, ceil, include)]


@op("GlobalAveragePool")
def _global_average_pool(node: onnx.NodeProto, x: list) -> list:
    return [x[0].mean(dim=tuple(range(2, x[0].dim())), keepdim=True)]


@op("Gemm")
def _gemm(node: onnx.NodeProto, x: list) -> list:
    a = attrs(node)
    left = x[0].t() if a.get("transA", 0) else x[0]
    right = x[1].t() if a.get("transB", 0) else x[1]
    out = left @ right
    alpha, beta = a.get("alpha", 1.0), a.get("beta", 1.0)
    if alpha != 1.0:
        out = out * alpha
    if len(x) > 2 and x[2] is not None:
        out = out + (x[2] if beta == 1.0 else beta * x[2])
    return [out]


@op("DequantizeLinear")
def _dequantize(node: onnx.NodeProto, x: list) -> list:
    data, scale = x[0], x[1]
    zero = x[2] if len(x) > 2 and x[2] is not None else None
    axis = attrs(node).get("axis", 1)
    if scale.dim() == 1 and data.dim() > 1:
        shape = [1] * data.dim()
        shape[axis % data.dim()] = -1
        scale = scale.reshape(shape)
        zero = None if zero is None else zero.reshape(shape)
    values = data.float() if zero is None else data.float() - zero.float()
    return [values * scale]
