"""A cut to fewer time steps, checked where it runs: the first T' steps of every neuron spike as before.

The surgery follows the time axis by rules; a graph that bends one of them (a shape computed in a
way the rules do not see) would still load and run. Running both models once on seeded random
images and comparing every neuron's spikes for the kept steps catches that before a file is written.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.graph.taps import with_outputs
from svtprune.runtime import make_session
from svtprune.spiking.neurons import Neuron, find_neurons

CHECK_BATCH = 2


def spikes_differ(original: onnx.ModelProto, cut: onnx.ModelProto, steps: int) -> str | None:
    """None when every neuron of ``cut`` spikes as ``original``'s does in its first ``steps`` steps; else where not."""
    before, after = find_neurons(original), find_neurons(cut)
    if len(before) != len(after) or any(n.time_steps != steps for n in after):
        return f"the cut model has {len(after)} neurons of {sorted({n.time_steps for n in after})} steps"
    x = _images(original)
    old, new = _spikes(original, before, x, steps), _spikes(cut, after, x, steps)
    for neuron, a, b in zip(before, old, new, strict=True):
        for step, (s, t) in enumerate(zip(a, b, strict=True)):
            if not np.array_equal(s, t):
                return f"{neuron.name} spikes differently at step {step}"
    return None


def _images(model: onnx.ModelProto) -> np.ndarray:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else CHECK_BATCH for d in dims]
    return np.random.default_rng(0).standard_normal(shape).astype(np.float32)


def _spikes(model: onnx.ModelProto, neurons: list[Neuron], x: np.ndarray, steps: int) -> list[list[np.ndarray]]:
    names = [n.spikes[:steps] for n in neurons]
    session = make_session(with_outputs(model, [s for group in names for s in group], elem_type=None), arena=False)
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(outputs, {session.get_inputs()[0].name: x}), strict=True))
    return [[values[s] for s in group] for group in names]
