"""What a search measures and what it settles on, in one vocabulary for pruning and quantization.

A candidate is a pruning plan (ratio per channel group) or a bit setting (width per layer);
both are scored the same way on the search split, so one record type serves every policy and
the report lists them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from svtprune.quantization import FP32  # a layer left in float: not listed in a bit setting


@dataclass
class Measurement:
    """One candidate scored on the search split (or, for a screen, on a seeded subset of it)."""

    label: str
    accuracy: float
    param_bytes: int
    seconds: float
    ratios: dict[str, float] = field(default_factory=dict)  # pruning candidate: group -> ratio removed
    bits: dict[str, int] | None = None  # quantization candidate: layer -> weight bits (None: a pruning record)
    images: int = 0  # how many images scored it (a screen uses fewer than the search split)
    stderr: float = 0.0  # points: standard error of the estimate, paired with the starting model per image
    drift: float | None = None  # membrane drift of the candidate (quantization's proxy)
    latency_ms: tuple[float, float] | None = None  # ORT CPU, batch 1 and 64 (objective latency only)
    energy_uj: float | None = None  # estimated per image from measured firing rates (objective energy only)
    measured: bool = True  # False: the search's time limit had passed, so the candidate was never scored
    verdict: str | None = None  # the sequential test's decision (search/sequential.py); None: a fixed slice
    reused: bool = False  # the same plan measured the same way earlier in the search: its numbers, no new images

    def to_dict(self) -> dict:
        if self.bits is not None:
            entry = {
                "label": self.label,
                "bits": {k: v for k, v in self.bits.items() if v != FP32},
                "accuracy": round(self.accuracy, 3),
                "param_bytes": self.param_bytes,
                "drift": None if self.drift is None else round(self.drift, 5),
                "seconds": round(self.seconds, 3),
                "images": self.images,
                "stderr": round(self.stderr, 3),
            }
            if self.verdict is not None:
                entry["verdict"] = self.verdict
            return entry
        entry = {
            "label": self.label,
            "ratios": self.ratios,
            "accuracy": round(self.accuracy, 3),
            "param_bytes": self.param_bytes,
            "seconds": round(self.seconds, 3),
            "images": self.images,
            "stderr": round(self.stderr, 3),
        }
        if self.latency_ms:
            entry.update(latency_ms_b1=round(self.latency_ms[0], 3), latency_ms_b64=round(self.latency_ms[1], 2))
        if self.verdict is not None:
            entry["verdict"] = self.verdict
        if self.reused:
            entry["reused"] = True
        if self.energy_uj is not None:
            entry["energy_uj"] = round(self.energy_uj, 3)
        return entry


@dataclass
class SearchResult:
    """What a policy settled on: ratios (pruning) or bits (quantization), the record, the curves it measured."""

    best: Measurement | None
    ratios: dict[str, float] = field(default_factory=dict)
    bits: dict[str, int] = field(default_factory=dict)
    sensitivity: dict[str, list[tuple]] = field(default_factory=dict)  # group/layer -> measured points
