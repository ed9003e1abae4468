"""Datasets in the project's format: an ``.npz`` with ``x`` (float32 N×C×H×W) and optional ``y``.

Numpy only, so the ONNX-side tools load data without torch.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svtprune.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


@dataclass
class Dataset:
    """Images already normalised the way the model expects, labels when known."""

    x: np.ndarray
    y: np.ndarray | None

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: np.ndarray | slice) -> Dataset:
        return Dataset(self.x[indices], None if self.y is None else self.y[indices])


def load_npz(path: str | Path) -> Dataset:
    """Load and validate a dataset file; every problem becomes one readable UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise UserError(f"{path}: no array named 'x' (found: {', '.join(archive.files)})")
            x = archive["x"]
            y = archive["y"] if "y" in archive.files else None
    except UserError:
        raise
    except Exception as exc:  # numpy raises many types for a corrupt archive
        raise UserError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from exc
    if x.ndim != 4:
        raise UserError(f"{path}: 'x' must be N x C x H x W, got shape {tuple(x.shape)}")
    if len(x) == 0:
        raise UserError(f"{path}: 'x' holds no images")
    if y is not None:
        if y.shape != (x.shape[0],):
            raise UserError(f"{path}: 'y' must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        y = y.astype(np.int64)
    return Dataset(np.ascontiguousarray(x, dtype=np.float32), y)


def save_npz(path: str | Path, data: Dataset) -> None:
    arrays = {"x": data.x.astype(np.float32)}
    if data.y is not None:
        arrays["y"] = data.y.astype(np.int64)
    np.savez_compressed(path, **arrays)


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_fashion_mnist(split: str, root: Path = FASHION_MNIST_DIR) -> Dataset:
    """Read Debian's ``dataset-fashion-mnist`` files, normalised with the reference statistics."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images = root / f"{prefix}-images-idx3-ubyte.gz"
    if not images.is_file():
        raise UserError(f"{images} missing: install it with 'apt-get install dataset-fashion-mnist'")
    x = _read_idx(images).astype(np.float32)[:, None] / 255.0
    y = _read_idx(root / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return Dataset((x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD, y)
