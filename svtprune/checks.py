"""The user's model and data checked against each other once, at job entry, before any search or eval.

A model svtprune cannot run (several image inputs, a non-float32 input) and data it would
score wrongly (images of another size, labels outside the model's classes, which would only
count as wrong answers) fail in one line naming the file, before minutes of work. Internal
models (taps, probes) never come here: only what the user gave.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from svtprune.data import Dataset
from svtprune.data_folder import Preprocess
from svtprune.data_sources import load_data
from svtprune.errors import UserError
from svtprune.graph.io import load_model
from svtprune.runtime import check_shape, logits_of, make_session


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (initializers listed as inputs, as older exporters do, are not)."""
    constants = {t.name for t in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in constants]


def check_model(model: onnx.ModelProto, path: str | Path) -> None:
    """Refuse, with the reason, a model that svtprune cannot feed: it runs one float32 image input."""
    inputs = graph_inputs(model)
    if len(inputs) != 1:
        names = ", ".join(repr(v.name) for v in inputs) or "none"
        raise UserError(f"{path}: svtprune runs models with exactly one (image) input; this one has {names}")
    value = inputs[0]
    kind = value.type.tensor_type.elem_type
    if not value.type.HasField("tensor_type") or kind != onnx.TensorProto.FLOAT:
        name = onnx.TensorProto.DataType.Name(kind).lower() if value.type.HasField("tensor_type") else "not a tensor"
        raise UserError(f"{path}: input {value.name!r} is {name}; svtprune runs models with a float32 image input")


def load_checked_model(path: str | Path) -> onnx.ModelProto:
    """``load_model`` and ``check_model``: the user's model file, refused up front when svtprune cannot run it."""
    model = load_model(path)
    check_model(model, path)
    return model


def input_dims(model: onnx.ModelProto) -> list[int | None] | None:
    """The image input's dims (symbolic ones, the batch, as None); None when the graph gives no shape."""
    value = graph_inputs(model)[0].type.tensor_type
    if not value.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in value.shape.dim]


def classes_of(model: onnx.ModelProto, x: np.ndarray) -> int:
    """The size of the class axis (last dim of the first output): declared, else inferred, else run on one image."""
    for graph in (model.graph, _inferred(model)):
        dims = graph.output[0].type.tensor_type.shape.dim if graph is not None else []
        if dims and dims[-1].HasField("dim_value") and dims[-1].dim_value > 0:
            return int(dims[-1].dim_value)
    return int(logits_of(make_session(model), x[:1]).shape[-1])


def check_labels(data: Dataset, classes: int, path: str | Path) -> None:
    """Every label must name one of the model's classes (0..classes-1): say how many do not, and the first."""
    if data.y is None:
        return
    bad = (data.y < 0) | (data.y >= classes)
    if bad.any():
        first = int(np.argmax(bad))
        raise UserError(
            f"{path}: {int(bad.sum())} labels lie outside the model's {classes} classes (0..{classes - 1}), "
            f"the first at index {first} (label {int(data.y[first])})"
        )


def check_dataset(model: onnx.ModelProto, data: Dataset, path: str | Path) -> None:
    """``data`` must fit the model's input and, when labelled, its classes."""
    dims = input_dims(model)
    if dims is not None:
        try:
            check_shape(dims, data.x)
        except UserError as exc:
            raise UserError(f"{path}: {exc.problem}") from exc
    check_labels(data, classes_of(model, data.x), path)


def load_checked_data(
    path: str | Path, model: onnx.ModelProto, preprocess: str | Path | Preprocess | None = None
) -> Dataset:
    """``load_data`` and ``check_dataset``: the user's data (file or image folder), checked against its model."""
    data = load_data(path, preprocess)
    check_dataset(model, data, path)
    return data


def _inferred(model: onnx.ModelProto) -> onnx.GraphProto | None:
    try:
        return onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 -- inference is a shortcut; running one image is the answer
        return None
