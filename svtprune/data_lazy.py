"""Images read on access: an N x C x H x W float32 array-like over a memory-mapped ``.npy`` or a folder of files.

The jobs use ``Dataset.x`` as an array (``len``, ``shape``, ``x[a:b]``, ``x[index_array]``), and
every model run goes through ``runtime.batches``, which slices; so a source that decodes only the
rows asked for keeps memory bounded by the batch, not the dataset. ``take_rows`` selects rows
without reading them (the search/held-out split stays lazy); ``np.asarray(x)`` reads everything,
for the few places (torch training) that need one array.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np

CHECK_BATCH = 256  # images read at a time when a whole source is checked at load


class LazyImages:
    """Rows ``rows`` of a source of C x H x W float32 images; subclasses say how to ``read`` rows."""

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, image_shape: tuple[int, int, int], rows: np.ndarray) -> None:
        self.image_shape = tuple(int(d) for d in image_shape)
        self.rows = np.asarray(rows, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), *self.image_shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: Any) -> np.ndarray:
        """What numpy's indexing of the same array would give (ints, slices, index or boolean arrays)."""
        rest: tuple = ()
        if isinstance(index, tuple):
            index, rest = (index[0], index[1:]) if index else (slice(None), ())
        picked = self.rows[index]
        if np.ndim(picked) == 0:
            return self.read(np.array([int(picked)]))[0][rest]
        values = self.read(picked) if len(picked) else np.empty((0, *self.image_shape), np.float32)
        return values[(slice(None), *rest)]

    def take_rows(self, index: Any) -> LazyImages:
        """The same source restricted to ``index`` (as ``self[index]`` would pick), nothing read."""
        picked = np.atleast_1d(self.rows[index])
        return self.with_rows(picked)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return np.asarray(self, dtype=dtype)

    def read(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def with_rows(self, rows: np.ndarray) -> LazyImages:
        raise NotImplementedError


class MappedImages(LazyImages):
    """A memory-mapped ``.npy`` of images in any real dtype, converted to float32 row by row."""

    def __init__(self, source: np.ndarray, rows: np.ndarray | None = None) -> None:
        super().__init__(source.shape[1:], np.arange(len(source)) if rows is None else rows)
        self.source = source

    def read(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows) and np.all(np.diff(rows) == 1):
            values = self.source[int(rows[0]) : int(rows[-1]) + 1]  # one contiguous read: no fancy-index copy
        else:
            values = self.source[rows]
        with np.errstate(over="ignore"):  # beyond float32 becomes Inf, refused at load by check_finite
            copy = np.array(values, dtype=np.float32, order="C")
        release(self.source)
        return copy

    def with_rows(self, rows: np.ndarray) -> MappedImages:
        return MappedImages(self.source, rows)


def release(source: np.ndarray) -> None:
    """Drop the file's pages from this process's resident set (the page cache keeps them): RSS stays a batch."""
    handle = getattr(source, "_mmap", None)  # np.memmap's own mapping; a plain array has none
    if handle is not None and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def open_npy(path: Path) -> np.ndarray:
    """The file memory-mapped read-only (nothing read yet); a file numpy cannot map is the user's error."""
    from svtprune.errors import UserError

    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 -- numpy raises many types for a bad file
        raise UserError(f"{path}: not a readable .npy file ({exc.__class__.__name__})") from exc
