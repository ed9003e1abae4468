"""svtprune: make Spiking Vision Transformers in ONNX smaller, measured.

The Python API mirrors the command line: ``svtprune.compress(...)`` and ``svtprune.quantize(...)``
take the same arguments as the commands and return the report dictionary. They load lazily so
``import svtprune`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compress", "quantize"]


def __getattr__(name: str) -> Any:
    if name == "compress":
        from svtprune.jobs.compress import compress

        return compress
    if name == "quantize":
        from svtprune.jobs.quantize import quantize

        return quantize
    raise AttributeError(f"module 'svtprune' has no attribute {name!r}")
