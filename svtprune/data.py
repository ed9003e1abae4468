"""Datasets in the project's format: an ``.npz`` with ``x`` (float32 N×C×H×W) and optional ``y``.

Numpy only, so the ONNX-side tools load data without torch. What the file alone can get wrong
(shape, NaN or Inf pixels, labels that are not whole numbers) is refused here; what needs the
model too (image size, labels outside its classes) is ``svtprune.checks``. Other numeric ``x``
(float64, uint8) becomes float32 with a note on the ``svtprune`` logger (the CLI prints it on stderr).
The other sources (a memory-mapped ``.npy``, an image folder) are ``svtprune.data_sources``.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svtprune.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
log = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Images already normalised the way the model expects, labels when known."""

    x: np.ndarray  # or a data_lazy.LazyImages (an .npy or image folder read on access), indexed the same way
    y: np.ndarray | None
    converted_from: str | None = None  # the file's dtype of ``x`` when it was not float32

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: np.ndarray | slice) -> Dataset:
        """The chosen rows; a lazy ``x`` (a folder, a memory-mapped file) stays lazy (``take``)."""
        take = getattr(self.x, "take_rows", None)
        x = take(indices) if take is not None else self.x[indices]
        return Dataset(x, None if self.y is None else self.y[indices], self.converted_from)


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
    images, converted_from = _images(path, x)
    labels = None if y is None else whole_labels(path, y, len(x))
    return Dataset(images, labels, converted_from)


def _images(path: Path, x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """``x`` as float32 (and its former dtype, when it had another), every value finite."""
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"{path}: 'x' must hold real numbers (float32), got dtype {x.dtype}")
    converted_from = None if x.dtype == np.float32 else str(x.dtype)
    with np.errstate(over="ignore"):  # a value beyond float32 becomes Inf, refused below in one line
        images = np.ascontiguousarray(x, dtype=np.float32)
    if converted_from is not None:
        log.info("%s: 'x' converted from %s to float32", path, converted_from)
    check_finite(path, images)  # after the conversion: a float64 beyond float32's range is Inf too
    return images, converted_from


def check_finite(path: Path, x: np.ndarray, batch: int | None = None) -> None:
    """Every value finite, read ``batch`` images at a time (lazy sources: bounded memory); else one UserError."""
    step = batch or max(1, len(x))
    values = images = 0
    first = None
    for start in range(0, len(x), step):
        bad = ~np.isfinite(np.asarray(x[start : start + step]))
        per_image = bad.reshape(len(bad), -1).any(axis=1)
        if per_image.any() and first is None:
            first = start + int(np.argmax(per_image))
        values, images = values + int(bad.sum()), images + int(per_image.sum())
    if first is not None:
        raise UserError(
            f"{path}: 'x' has {values} non-finite values (NaN or Inf) in {images} images, the first in image {first}"
        )


def whole_labels(path: Path, y: np.ndarray, count: int) -> np.ndarray:
    """``y`` as int64: one whole number per image (float labels like 3.0 pass, 1.5 or NaN do not)."""
    if y.shape != (count,):
        raise UserError(f"{path}: 'y' must have shape ({count},), got {tuple(y.shape)}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_) or np.issubdtype(y.dtype, np.complexfloating):
        raise UserError(f"{path}: 'y' must hold integer class labels, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            first = int(np.argmax(bad))
            raise UserError(
                f"{path}: 'y' has {int(bad.sum())} labels that are not whole numbers, "
                f"the first at index {first} ({y[first]})"
            )
    return y.astype(np.int64)


def save_npz(path: str | Path, data: Dataset) -> None:
    arrays = {"x": np.asarray(data.x, dtype=np.float32)}
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
