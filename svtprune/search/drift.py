"""Membrane-potential drift: a cheap proxy for how much a weight change hurts a spiking model.

A full accuracy evaluation runs thousands of images; the drift runs a small calibration
batch through the candidate with every neuron's membrane exposed and compares it with the
original's. A spike flips only where a membrane moves across its threshold, so membranes
that barely move predict an unchanged accuracy. The readout (the model's first output, the
logits) counts as one more membrane: it is the non-spiking integrator a classifier ends in,
and without it a change to the last layer would be invisible to the proxy.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.runtime import batches, check_data, make_session
from svtprune.spiking.neurons import find_neurons, with_taps

# images per run: a 9.3M-parameter Spikformer at 32x32 exposes ~19 MB of membranes per image, and ORT's
# working set is several times that; 16 images in one run took a probe to 0.7 GB over the model itself
DRIFT_BATCH = 4


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
        self.reference = list(self._membranes(reference))  # per batch: the same slices every candidate runs
        self.sizes = {
            name: sum(float(np.sum(np.square(chunk[name], dtype=np.float64))) for chunk in self.reference)
            for name in self.names
        }
        self.calls = 0

    def _membranes(self, model: onnx.ModelProto) -> Iterator[dict[str, np.ndarray]]:
        session = make_session(with_taps(model, self.neurons))
        check_data(session, self.images)
        yield from batches(session, self.images, DRIFT_BATCH, self.names)

    def drift(self, candidate: onnx.ModelProto) -> float:
        """Mean over neurons (and the readout) of ||v' - v|| / ||v||, norms over every time step and image.

        The candidate runs a few images at a time against the stored reference, so only one batch of
        its membranes is ever held.
        """
        self.calls += 1
        moved = dict.fromkeys(self.names, 0.0)
        for reference, values in zip(self.reference, self._membranes(candidate), strict=True):
            for name in self.names:
                moved[name] += float(np.sum(np.square(values[name] - reference[name], dtype=np.float64)))
        per_neuron = [
            np.sqrt(sum(moved[m] for m in group) / max(sum(self.sizes[m] for m in group), 1e-12))
            for group in self.groups
        ]
        return float(np.mean(per_neuron))
