"""Membrane-potential drift: a cheap proxy for how much a weight change hurts a spiking model.

A full accuracy evaluation runs thousands of images; the drift runs a small calibration
batch through the candidate with every neuron's membrane exposed and compares it with the
original's. A spike flips only where a membrane moves across its threshold, so membranes
that barely move predict an unchanged accuracy. The readout (the model's first output, the
logits) counts as one more membrane: it is the non-spiking integrator a classifier ends in,
and without it a change to the last layer would be invisible to the proxy.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.runtime import make_session, predict
from svtprune.spiking.neurons import find_neurons, with_taps


class DriftProbe:
    """Drift of a candidate model relative to the reference it was made from."""

    def __init__(self, reference: onnx.ModelProto, images: np.ndarray) -> None:
        self.neurons = find_neurons(reference)
        if not self.neurons:
            raise UserError("no spiking neuron found in the model: the drift proxy needs membrane potentials")
        self.images = images
        readout = reference.graph.output[0].name
        self.groups = [list(n.membranes) for n in self.neurons] + [[readout]]
        self.names = [m for group in self.groups for m in group]
        self.reference = self._membranes(reference)
        self.calls = 0

    def _membranes(self, model: onnx.ModelProto) -> dict[str, np.ndarray]:
        session = make_session(with_taps(model, self.neurons))
        return predict(session, self.images, batch=len(self.images), outputs=self.names)

    def drift(self, candidate: onnx.ModelProto) -> float:
        """Mean over neurons (and the readout) of ||v' - v|| / ||v||, norms over every time step and image."""
        self.calls += 1
        values = self._membranes(candidate)
        per_neuron = []
        for group in self.groups:
            moved = sum(float(np.sum((values[m] - self.reference[m]) ** 2)) for m in group)
            size = sum(float(np.sum(self.reference[m] ** 2)) for m in group)
            per_neuron.append(np.sqrt(moved / max(size, 1e-12)))
        return float(np.mean(per_neuron))
