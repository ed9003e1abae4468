"""Trained weights back into the ONNX graph, and a check of the result with ONNX Runtime.

The converter keeps one parameter per initializer of the user's own graph, so writing back
is replacing initializer values by name: node list, neuron form (Cast/Where), opset and the
dynamic batch axis are untouched, and nothing new can break in ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from svtprune.evaluate import logits_of, make_session
from svtprune.finetune.convert import OnnxModule


def write_back(model: onnx.ModelProto, module: OnnxModule) -> onnx.ModelProto:
    """A copy of ``model`` whose trainable initializers hold the module's current values."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    trained = set(module.trainable)
    for index, tensor in enumerate(out.graph.initializer):
        if tensor.name not in trained:
            continue
        value = module.parameter_of(tensor.name).detach().cpu().numpy()
        dtype = numpy_helper.to_array(tensor).dtype
        out.graph.initializer[index].CopyFrom(numpy_helper.from_array(value.astype(dtype), tensor.name))
    return out


def torch_logits(module: OnnxModule, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The module's first output for every row of ``x``, without gradients."""
    chunks = []
    with torch.no_grad():
        for start in range(0, len(x), batch):
            chunks.append(module(torch.from_numpy(x[start : start + batch])).numpy())
    return np.concatenate(chunks)


def check_export(model: onnx.ModelProto, module: OnnxModule, x: np.ndarray) -> float:
    """Largest |ORT - torch| logit difference of the exported model over ``x`` (one batch each)."""
    session = make_session(model)
    return float(np.abs(logits_of(session, x) - torch_logits(module, x)).max())
