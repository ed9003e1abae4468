"""The demo job: compress the shipped reference Spikformer within one accuracy point."""

from __future__ import annotations

from pathlib import Path

from svtprune.errors import UserError
from svtprune.progress import Say

REPO = Path(__file__).resolve().parents[2]
REFERENCE_MODEL = REPO / "models" / "reference" / "spikformer_fmnist.onnx"
REFERENCE_DATA = REPO / "models" / "data" / "fashion_mnist_val.npz"
DEMO_MODEL_NAME = "spikformer_small.onnx"
DEMO_MAX_ACCURACY_DROP = 1.0


def shipped_files() -> tuple[Path, Path]:
    """The reference model and data the demo runs on; a UserError when the clone lacks them."""
    for path in (REFERENCE_MODEL, REFERENCE_DATA):
        if not path.is_file():
            raise UserError(f"shipped file missing: {path} (run from a clone of the repository)")
    return REFERENCE_MODEL, REFERENCE_DATA


def demo_output(out_dir: str | Path) -> Path:
    """Where the demo writes its compressed model (its reports go beside it)."""
    return Path(out_dir) / DEMO_MODEL_NAME


def run_demo(out_dir: str | Path, calib: int = 400, progress: Say | None = None) -> dict:
    """PrimeSVT on the shipped model and data, scored on ``calib`` images; returns the compress report.

    It overwrites an earlier demo's files, so running it twice just works.
    """
    from svtprune.jobs.compress import compress

    model, data = shipped_files()
    return compress(
        model_path=model,
        data_path=data,
        out=demo_output(out_dir),
        max_accuracy_drop=DEMO_MAX_ACCURACY_DROP,
        min_memory_saving=None,
        method="primesvt",
        calib=calib,
        seed=0,
        importance="l2",
        force=True,
        progress=progress,
    )
