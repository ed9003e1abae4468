"""The quantization executor: builds bit settings on one model and scores them, with a drift probe.

``drift`` is the cheap call (a calibration batch, membranes compared), ``measure`` the
expensive one: accuracy on the search split with the paired standard error of the change from
the starting model, which the budget charges; or, with a sequential ``test``, the change on
growing slices until the test decides (8-bit steps flip few predictions and are accepted on a
few hundred images, which matters where one pass over the split takes minutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from svtprune.data import Dataset
from svtprune.graph.io import param_bytes
from svtprune.quantization import FP32, Quantizer
from svtprune.runtime import logits_of, make_session, release_freed_memory
from svtprune.search.drift import DriftProbe
from svtprune.search.records import Measurement
from svtprune.search.sequential import SequentialTest, hits_on, judge

Setting = dict[str, int]


def key_of(setting: Setting) -> tuple[tuple[str, int], ...]:
    """A setting as a hashable key; layers left in float are not part of it."""
    return tuple(sorted((k, v) for k, v in setting.items() if v != FP32))


@dataclass
class QuantExecutor:
    quantizer: Quantizer
    data: Dataset
    target: np.ndarray
    probe: DriftProbe | None
    test: SequentialTest | None = None  # judge candidates on growing slices (drop allowed from the start)
    start: np.ndarray | None = None  # the starting model's per-image hits, when already known
    records: list[Measurement] = field(default_factory=list)
    gated: int = 0  # candidates the proxy kept from a full evaluation
    drift_seconds: float = 0.0
    drifts: dict = field(default_factory=dict)  # setting key -> drift (every proxy evaluation)
    _measured: dict = field(default_factory=dict)
    _order: np.ndarray | None = None

    @property
    def original_bytes(self) -> int:
        return param_bytes(self.quantizer.model)

    def release(self) -> None:
        """Once the search and its held-out check are done: drop what only they needed (the drift probe's
        stored membranes, the built weights), so the report's timing runs beside the chosen model rather
        than beside the search (at 9.3M parameters that timing was the command's peak, 3.0 GB)."""
        self.probe = None
        self.quantizer.release()
        release_freed_memory()

    def build(self, setting: Setting) -> onnx.ModelProto:
        return self.quantizer.apply(setting)

    def bytes_of(self, setting: Setting) -> int:
        return param_bytes(self.build(setting))

    def saving(self, record: Measurement) -> float:
        return 1.0 - record.param_bytes / self.original_bytes

    def drift(self, setting: Setting) -> float:
        key = key_of(setting)
        if not key:  # the unquantized model: no probe run, and not counted as a drift evaluation
            return 0.0
        if key not in self.drifts:
            started = time.perf_counter()
            self.drifts[key] = self.probe.drift(self.build(setting))
            self.drift_seconds += time.perf_counter() - started
        return self.drifts[key]

    def measure(self, setting: Setting, label: str, drift: float | None = None) -> Measurement:
        key = key_of(setting)
        if key in self._measured:
            return self._measured[key]
        started = time.perf_counter()
        model = self.build(setting)
        start = self.start_correct()
        verdict = None
        if self.test is None:
            change = self._correct(model) - start
            images, drop = len(change), -100.0 * float(change.mean())
            stderr = 100.0 * float(change.std() / np.sqrt(len(change)))
        else:
            hits, known = self._hits(make_session(model)), {}
            estimate, verdict = judge(lambda rows: hits_on(known, rows, hits), start, self.look_order(), self.test)
            images, drop, stderr = estimate.images, estimate.drop, estimate.stderr
        record = Measurement(
            label, 100.0 * float(start.mean()) - drop, param_bytes(model), time.perf_counter() - started,
            bits=dict(setting), images=images, stderr=stderr, drift=drift, verdict=verdict,
        )  # fmt: skip
        self.records.append(record)
        self._measured[key] = record
        release_freed_memory()
        return record

    def start_correct(self) -> np.ndarray:
        """Per search image: is the starting model right (the reference every change is paired with)."""
        if self.start is None:
            self.start = self._correct(self.quantizer.model)
        return self.start

    def look_order(self) -> np.ndarray:
        """The sequential test's image order: one seeded permutation, so every look extends the last."""
        if self._order is None:
            self._order = np.random.default_rng(0).permutation(len(self.data))
        return self._order

    def _hits(self, session: ort.InferenceSession) -> Callable[[np.ndarray], np.ndarray]:
        return lambda rows: logits_of(session, self.data.x[rows]).argmax(axis=1) == self.target[rows]

    def _correct(self, model: onnx.ModelProto) -> np.ndarray:
        return self._hits(make_session(model))(np.arange(len(self.data))).astype(np.float64)
