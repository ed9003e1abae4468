"""Every data option's one loader: an ``.npz`` (in memory), an ``.npy`` (memory-mapped) or an image folder.

``.npz``: ``x`` (N x C x H x W) and optional ``y``, read whole, exactly as before. ``.npy``: the
images alone, memory-mapped; labels from ``NAME.labels.npy`` beside it when that file exists.
A folder: class subfolders or a flat folder of image files (``svtprune.data_folder``), decoded
with a preprocessing spec. The lazy sources are checked at load a batch at a time (non-finite
values, files that do not decode), so a bad file fails before the work, in bounded memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from svtprune.data import Dataset, check_finite, load_npz, whole_labels
from svtprune.data_folder import Preprocess, load_folder, parse_preprocess
from svtprune.data_lazy import CHECK_BATCH, MappedImages, open_npy
from svtprune.errors import UserError

log = logging.getLogger(__name__)


def load_data(path: str | Path, preprocess: str | Path | Preprocess | None = None) -> Dataset:
    """The dataset at ``path``, whichever of the three kinds it is; ``preprocess`` applies to folders only."""
    path = Path(path)
    if path.is_dir():
        x, y = load_folder(path, parse_preprocess(preprocess))
        return Dataset(x, y)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    if path.suffix.lower() == ".npy":
        return load_npy(path)
    return load_npz(path)


def labels_path(path: Path) -> Path:
    """``images.npy`` -> ``images.labels.npy``."""
    return path.with_name(path.stem + ".labels.npy")


def load_npy(path: Path) -> Dataset:
    """Images memory-mapped (read as they are used), labels from the sibling ``.labels.npy`` when there is one."""
    source = open_npy(path)
    if source.ndim != 4:
        raise UserError(f"{path}: images must be N x C x H x W, got shape {tuple(source.shape)}")
    if len(source) == 0:
        raise UserError(f"{path}: holds no images")
    if not np.issubdtype(source.dtype, np.number) or np.issubdtype(source.dtype, np.complexfloating):
        raise UserError(f"{path}: images must be real numbers (float32), got dtype {source.dtype}")
    converted_from = None if source.dtype == np.float32 else str(source.dtype)
    if converted_from is not None:
        log.info("%s: images converted from %s to float32 as they are read", path, converted_from)
    x = MappedImages(source)
    check_finite(path, x, CHECK_BATCH)
    labels_file = labels_path(path)
    y = None
    if labels_file.is_file():
        y = whole_labels(labels_file, np.asarray(open_npy(labels_file)), len(x))
    return Dataset(x, y, converted_from)


def check_preprocess_used(preprocess: str | Path | Preprocess | None, paths: Iterable[str | Path | None]) -> None:
    """A preprocessing spec must be valid and meet at least one image folder (an array file ignores it)."""
    if preprocess is None:
        return
    parse_preprocess(preprocess)
    if not any(p is not None and Path(p).is_dir() for p in paths):
        raise UserError("applies to image folders, and no data option names a folder", option="preprocess")
