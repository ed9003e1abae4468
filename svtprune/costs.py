"""What a job's work cost: wall time, and images forwarded through ONNX Runtime.

Images forwarded is the unit a search's cost grows in with the data and the number of
candidates, on any machine; seconds depend on the machine and its neighbours. Data images
(evaluations, taps, calibration) are counted apart from the random images timing runs use.
A pool's workers count theirs in their own process and send them back with each record
(``counting``); the job adds them here (``add_forwarded``), so the totals include them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class Forwarded:
    """Running totals for this process (``svtprune.runtime`` adds to them on every run)."""

    data: int = 0
    timing: int = 0
    phase: str = "evaluation"  # what the data images are being forwarded for (see ``phase``)
    by_phase: dict[str, int] = field(default_factory=dict)


FORWARDED = Forwarded()


def count_data(images: int) -> None:
    FORWARDED.data += images
    FORWARDED.by_phase[FORWARDED.phase] = FORWARDED.by_phase.get(FORWARDED.phase, 0) + images


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Count the data images forwarded inside under ``name`` (the re-fit, say), so a report can say where they went."""
    outer, FORWARDED.phase = FORWARDED.phase, name
    try:
        yield
    finally:
        FORWARDED.phase = outer


def count_timing(images: int) -> None:
    FORWARDED.timing += images


@dataclass(frozen=True)
class Started:
    """When a job started and what had been forwarded by then, so its report states its own cost."""

    at: float = field(default_factory=time.perf_counter)
    data: int = field(default_factory=lambda: FORWARDED.data)
    timing: int = field(default_factory=lambda: FORWARDED.timing)
    by_phase: dict[str, int] = field(default_factory=lambda: dict(FORWARDED.by_phase))

    def seconds(self) -> float:
        return time.perf_counter() - self.at

    def images_forwarded(self) -> int:
        return FORWARDED.data - self.data

    def cost(self) -> dict:
        """Report keys: ``wall_seconds``, ``images_forwarded`` (data, and per phase), ``images_forwarded_timing``."""
        phases = {name: count - self.by_phase.get(name, 0) for name, count in FORWARDED.by_phase.items()}
        return {
            "wall_seconds": round(self.seconds(), 2),
            "images_forwarded": self.images_forwarded(),
            "images_forwarded_by_phase": {name: count for name, count in sorted(phases.items()) if count},
            "images_forwarded_timing": FORWARDED.timing - self.timing,
        }


@contextlib.contextmanager
def counting() -> Iterator[Forwarded]:
    """The images forwarded inside, as totals of their own: what a pool's worker sends back with a record."""
    before, counts = Started(), Forwarded()
    try:
        yield counts
    finally:
        counts.data = FORWARDED.data - before.data
        counts.timing = FORWARDED.timing - before.timing
        for name, total in FORWARDED.by_phase.items():
            if total != before.by_phase.get(name, 0):
                counts.by_phase[name] = total - before.by_phase.get(name, 0)


def add_forwarded(counts: Forwarded) -> None:
    """Images another process forwarded for this job (a pool's worker), added to this process's totals."""
    FORWARDED.data += counts.data
    FORWARDED.timing += counts.timing
    for name, images in counts.by_phase.items():
        FORWARDED.by_phase[name] = FORWARDED.by_phase.get(name, 0) + images
