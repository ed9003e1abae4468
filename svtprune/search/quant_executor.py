"""The quantization executor: builds bit settings on one model and scores them, with a drift probe.

``drift`` is the cheap call (a calibration batch, membranes compared), ``measure`` the
expensive one (accuracy on the search split, with the paired standard error of the change from
the starting model, which the budget charges).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from svtprune.data import Dataset
from svtprune.graph.io import param_bytes
from svtprune.quantization import FP32, Quantizer
from svtprune.runtime import logits_of, make_session
from svtprune.search.drift import DriftProbe
from svtprune.search.records import Measurement

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
    records: list[Measurement] = field(default_factory=list)
    gated: int = 0  # candidates the proxy kept from a full evaluation
    drift_seconds: float = 0.0
    drifts: dict = field(default_factory=dict)  # setting key -> drift (every proxy evaluation)
    _measured: dict = field(default_factory=dict)
    _start: np.ndarray | None = None  # the starting model's per-image hits, for paired standard errors

    @property
    def original_bytes(self) -> int:
        return param_bytes(self.quantizer.model)

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
        correct = self._correct(model)
        if self._start is None:
            self._start = self._correct(self.quantizer.model)
        change = correct - self._start
        stderr = 100.0 * float(change.std() / np.sqrt(len(change)))
        record = Measurement(
            label, 100.0 * float(correct.mean()), param_bytes(model), time.perf_counter() - started,
            bits=dict(setting), images=len(change), stderr=stderr, drift=drift,
        )  # fmt: skip
        self.records.append(record)
        self._measured[key] = record
        return record

    def _correct(self, model: onnx.ModelProto) -> np.ndarray:
        return (logits_of(make_session(model), self.data.x).argmax(axis=1) == self.target).astype(np.float64)
