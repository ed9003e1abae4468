"""The original model's outputs at re-fitted layers, kept between candidates: in memory, then on disk.

A search re-fits the same layers for many candidates, and the original's outputs there never
change, so tapping them again costs a pass of the calibration images through the original for
nothing. On a 9.3M-parameter Spikformer every layer's targets take 1.95 GB; held in memory they
set the command's peak (3.20 GB at a 512 MiB cap, 2.88 GB at 192 MiB), and past the cap each
candidate tapped the original again: 128 of its 256 re-fit images. Past ``memory_bytes`` they
now go to files in a temporary folder, read back whole when a fit needs them (resident only
while that fit runs), up to ``disk_bytes``; only past both are they tapped again.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

MEMORY_BYTES = 192 * 2**20
DISK_BYTES = 4 * 2**30  # a 224-pixel model's every layer at 32,768 rows can need more: then it taps again


class TargetStore:
    """Arrays by tensor name: the first ``memory_bytes`` in memory, the next ``disk_bytes`` in files."""

    def __init__(self, memory_bytes: int = MEMORY_BYTES, disk_bytes: int = DISK_BYTES) -> None:
        self.memory_bytes, self.disk_bytes = memory_bytes, disk_bytes
        self._memory: dict[str, np.ndarray] = {}
        self._files: dict[str, Path] = {}
        self._on_disk = 0
        self._folder: tempfile.TemporaryDirectory | None = None  # removed when the store is collected

    def get(self, name: str) -> np.ndarray | None:
        if name in self._memory:
            return self._memory[name]
        if name in self._files:
            return np.load(self._files[name])
        return None

    def put(self, name: str, value: np.ndarray) -> None:
        """Keep ``value`` where it fits; where nothing fits, it is not kept (the caller taps it again next time)."""
        if name in self._memory or name in self._files:
            return
        if sum(v.nbytes for v in self._memory.values()) + value.nbytes <= self.memory_bytes:
            self._memory[name] = value
        elif self._on_disk + value.nbytes <= self.disk_bytes:
            self._folder = self._folder or tempfile.TemporaryDirectory(prefix="svtprune-targets-")
            path = Path(self._folder.name) / f"{len(self._files)}.npy"
            np.save(path, value)
            self._files[name] = path
            self._on_disk += value.nbytes

    def clear(self) -> None:
        self._memory.clear()
        self._files.clear()
        self._on_disk = 0
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __contains__(self, name: str) -> bool:
        return name in self._memory or name in self._files
