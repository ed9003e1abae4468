"""Deployment formats beside ``out.onnx``: ONNX Runtime's own ``.ort`` file and its operator list.

``--format ort`` also writes ``out.ort`` (the flatbuffer format ONNX Runtime mobile and minimal
builds load) and ``out.required_operators.config`` (the operators a minimal build must include,
``./build.sh --minimal_build --include_ops_by_config out.required_operators.config``). Both come
from ONNX Runtime's converter (``onnxruntime.tools.convert_onnx_models_to_ort``), run on the very
bytes written as ``out.onnx``, in a temporary folder: the caller hands the files to the same
``OutputSet.write`` as the model, so all land together or none does.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from svtprune.errors import UserError

FORMATS = ("onnx", "ort")
ORT_SUFFIX = ".ort"
CONFIG_SUFFIX = ".required_operators.config"  # the converter's name for it (Fixed style, all optimisations)
DEFAULT_DOMAIN = "ai.onnx"


def check_format(format: str) -> None:
    if format not in FORMATS:
        raise UserError(f"unknown value {format!r}; choose one of {', '.join(FORMATS)}", option="format")


def deploy_paths(out: Path, format: str) -> tuple[Path, ...]:
    """The files ``format`` adds beside ``out`` (none for plain ONNX), to claim with the job's own."""
    check_format(format)
    return () if format == "onnx" else (out.with_suffix(ORT_SUFFIX), out.with_suffix(CONFIG_SUFFIX))


@dataclass(frozen=True)
class Deployment:
    """The deployment files of one model, written beside ``out``."""

    out: Path
    files: dict[str, bytes]  # suffix -> bytes

    def contents(self) -> dict[Path, bytes]:
        return {self.out.with_suffix(suffix): data for suffix, data in self.files.items()}

    def section(self) -> dict:
        """The report's ``deployment`` entry."""
        return {
            "format": "ort",
            "ort_file": str(self.out.with_suffix(ORT_SUFFIX)),
            "ort_bytes": len(self.files[ORT_SUFFIX]),
            "operators_config": str(self.out.with_suffix(CONFIG_SUFFIX)),
            "operators": operators(self.files[CONFIG_SUFFIX].decode()),
        }


def deployment(model_bytes: bytes, out: Path, format: str) -> Deployment | None:
    """The extra files ``format`` asks for (None for plain ONNX), made from the bytes written as ``out``."""
    check_format(format)
    if format == "onnx":
        return None
    return Deployment(out, ort_files(model_bytes, out.stem))


def ort_files(model: bytes, name: str = "model") -> dict[str, bytes]:
    """``.ort`` and ``.required_operators.config`` of a serialized ONNX model, by ONNX Runtime's converter.

    The converter's 'Fixed' style (optimisations applied before saving, the one its help advises
    unless a compiling provider such as NNAPI or CoreML runs the model) with no target platform,
    so the x86-only NCHWc layout stays out and the file runs on ARM too. ``name`` names the files
    inside the config's header comment (the converter writes its own paths there).
    """
    with tempfile.TemporaryDirectory(prefix="svtprune-ort-") as folder:
        source, target = Path(folder) / f"{name}.onnx", Path(folder) / "out"
        source.write_bytes(model)
        try:
            _convert(source, target)
        except Exception as exc:  # the converter raises ORT's own failure types
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UserError(f"ONNX Runtime cannot convert the model to its ORT format: {reason}") from exc
        ort_bytes = (target / f"{name}{ORT_SUFFIX}").read_bytes()
        config = (target / f"{name}{CONFIG_SUFFIX}").read_text().replace(f"{target.resolve()}/", "")
    return {ORT_SUFFIX: ort_bytes, CONFIG_SUFFIX: config.encode()}


def _convert(source: Path, target: Path) -> None:
    """Run the converter quietly: its progress prints would break ``--json``'s one object on stdout.

    Importing it calls ``logging.basicConfig`` (a root handler on stderr, which would repeat every
    svtprune note after it): the root's handlers are put back as they were.
    """
    root = logging.getLogger()
    handlers = list(root.handlers)
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    root.handlers[:] = handlers
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        convert_onnx_models_to_ort(source, output_dir=target, optimization_styles=[OptimizationStyle.Fixed])


def operators(config: str) -> list[str]:
    """The operators a required-operators config lists (``domain;opset;Op,Op``), domain-qualified outside ai.onnx."""
    names = []
    for line in config.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        domain, _opset, ops = line.split(";", 2)
        prefix = "" if domain == DEFAULT_DOMAIN else f"{domain}."
        names.extend(f"{prefix}{op}" for op in ops.split(",") if op)
    return sorted(set(names))
