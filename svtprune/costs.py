"""What a job's work cost: wall time, and images forwarded through ONNX Runtime.

Images forwarded is the unit a search's cost grows in with the data and the number of
candidates, on any machine; seconds depend on the machine and its neighbours. Data images
(evaluations, taps, calibration) are counted apart from the random images timing runs use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Forwarded:
    """Running totals for this process (``svtprune.runtime`` adds to them on every run)."""

    data: int = 0
    timing: int = 0


FORWARDED = Forwarded()


def count_data(images: int) -> None:
    FORWARDED.data += images


def count_timing(images: int) -> None:
    FORWARDED.timing += images


@dataclass(frozen=True)
class Started:
    """When a job started and what had been forwarded by then, so its report states its own cost."""

    at: float = field(default_factory=time.perf_counter)
    data: int = field(default_factory=lambda: FORWARDED.data)
    timing: int = field(default_factory=lambda: FORWARDED.timing)

    def seconds(self) -> float:
        return time.perf_counter() - self.at

    def images_forwarded(self) -> int:
        return FORWARDED.data - self.data

    def cost(self) -> dict:
        """The report keys: ``wall_seconds``, ``images_forwarded`` (data), ``images_forwarded_timing``."""
        return {
            "wall_seconds": round(self.seconds(), 2),
            "images_forwarded": self.images_forwarded(),
            "images_forwarded_timing": FORWARDED.timing - self.timing,
        }
