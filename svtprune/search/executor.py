"""The two calls every search policy makes: apply a plan, and measure the model it gives.

Policies never edit graphs themselves; they hand plans to ``Executor.measure`` and read
back accuracy and bytes. Every measurement is recorded for the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from svtprune.data import Dataset
from svtprune.evaluate import logits_of, make_session, top1
from svtprune.graph.analysis import Analysis
from svtprune.graph.io import param_bytes
from svtprune.graph.plan import Plan, keep_mask, kept_for_ratio
from svtprune.graph.surgery import prune
from svtprune.reconstruct import reconstruct


@dataclass
class Measurement:
    label: str
    ratios: dict[str, float]
    accuracy: float
    param_bytes: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "ratios": self.ratios,
            "accuracy": round(self.accuracy, 3),
            "param_bytes": self.param_bytes,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Executor:
    """Applies ratio plans to one analysed model and scores them on the search split."""

    analysis: Analysis
    scores: dict[str, np.ndarray]
    data: Dataset
    target: np.ndarray  # labels, or the original model's predictions when the data has none
    original_bytes: int
    records: list[Measurement] = field(default_factory=list)
    calibration: np.ndarray | None = None  # images for least-squares recovery; None turns it off

    def plan_for(self, ratios: dict[str, float]) -> Plan:
        plan = Plan(meta={"ratios": {k: v for k, v in ratios.items() if v > 0}})
        for group in self.analysis.prunable_groups:
            ratio = ratios.get(group.name, 0.0)
            plan.kept[group.name] = kept_for_ratio(self.analysis, group, ratio, self.scores[group.name])
        return plan

    def build(self, ratios: dict[str, float]) -> onnx.ModelProto:
        plan = self.plan_for(ratios)
        model = prune(self.analysis, plan, check=False)
        if self.calibration is None:
            return model
        atom_keep = keep_mask(self.analysis, plan)
        layers: dict[str, np.ndarray | None] = {}
        for member in self.analysis.members:
            if member.role == "sink" and not atom_keep[member.ids].all():
                layers.setdefault(member.node, None)
        for member in self.analysis.members:
            if member.role == "source" and member.node in layers:
                layers[member.node] = atom_keep[member.ids]
        return reconstruct(self.analysis.model, model, layers, self.calibration)

    def measure(self, ratios: dict[str, float], label: str) -> Measurement:
        started = time.perf_counter()
        model = self.build(ratios)
        accuracy = top1(logits_of(make_session(model), self.data.x), self.target)
        record = Measurement(label, dict(ratios), accuracy, param_bytes(model), time.perf_counter() - started)
        self.records.append(record)
        return record

    def saving(self, record: Measurement) -> float:
        return 1.0 - record.param_bytes / self.original_bytes
