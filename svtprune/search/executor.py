"""The two calls every search policy makes: build a candidate, and measure the model it gives.

Policies never edit graphs themselves: they hand candidates (pruning ratios or bit settings)
to an executor and read back a ``Measurement``. Every measurement is recorded for the report.
"""

from __future__ import annotations

from typing import Protocol

import onnx

from svtprune.search.records import Measurement

Candidate = dict  # group -> ratio removed (pruning), or layer -> weight bits (quantization)


class Executor(Protocol):
    records: list[Measurement]
    original_bytes: int

    def build(self, candidate: Candidate) -> onnx.ModelProto:
        """The model the candidate describes (dense, runnable by ONNX Runtime)."""

    def measure(self, candidate: Candidate, label: str) -> Measurement:
        """The candidate's accuracy on the search split, recorded."""

    def saving(self, record: Measurement) -> float:
        """Fraction of the original parameter bytes the record's model saves."""
