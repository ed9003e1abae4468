"""A folder of image files as a dataset: class subfolders (labels) or a flat folder (unlabelled), decoded lazily.

Layout as torchvision's ImageFolder: one subfolder per class, the class index is the subfolder's
place among the sorted subfolder names, images anywhere below it, in sorted path order. A folder
whose images lie directly in it has no labels. Each image is decoded with Pillow when its row is
read, then: converted to ``channels`` (1 grayscale, 3 RGB; default from the first image), its
shorter side resized to ``resize`` (bilinear), centre-cropped to ``crop`` x ``crop``, scaled to
[0, 1] and normalised ``(v - mean) / std`` per channel, in float32, so uint8 pixels written from
an ``.npz`` come back bit for bit (tools/make_image_folder.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from svtprune.data_lazy import CHECK_BATCH, LazyImages
from svtprune.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SPEC_KEYS = ("resize", "crop", "mean", "std", "channels")


@dataclass(frozen=True)
class Preprocess:
    """How a folder's images become model input (see the module docstring for the order)."""

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    channels: int | None = None  # None: 1 when the first image is grayscale, else 3

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UserError(f"{name} must be a whole number >= 1, got {value!r}", option="preprocess")
        if self.channels not in (None, 1, 3):
            raise UserError(f"channels must be 1 or 3, got {self.channels!r}", option="preprocess")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if not values or not all(isinstance(v, int | float) and np.isfinite(v) for v in values):
                raise UserError(f"{name} must be finite numbers, got {values!r}", option="preprocess")
        if any(v <= 0 for v in self.std):
            raise UserError(f"std must be > 0, got {self.std!r}", option="preprocess")

    def statistics(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """mean and std as float32 C x 1 x 1 (one value serves every channel)."""
        stats = []
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, channels):
                raise UserError(f"{name} has {len(values)} values for {channels} channels", option="preprocess")
            stats.append(np.broadcast_to(np.asarray(values, np.float32), (channels,)).reshape(channels, 1, 1))
        return stats[0], stats[1]


def parse_preprocess(spec: str | Path | Preprocess | None) -> Preprocess | None:
    """``resize=36,crop=32,mean=0.49,0.48,0.45,std=0.25,0.24,0.26,channels=3``, or a JSON file of the same keys.

    In the string, a value without ``key=`` continues the list of the key before it (mean and std
    take one value, or one per channel).
    """
    if spec is None or isinstance(spec, Preprocess):
        return spec
    text = str(spec).strip()
    if text.endswith(".json") or Path(text).is_file():
        return _from_json(Path(text))
    fields: dict[str, list[str]] = {}
    key = None
    for token in (t.strip() for t in text.split(",")):
        if "=" in token:
            key, token = (part.strip() for part in token.split("=", 1))
            if key not in SPEC_KEYS or key in fields:
                raise UserError(f"unknown or repeated key {key!r}; keys: {', '.join(SPEC_KEYS)}", option="preprocess")
            fields[key] = []
        if key is None or not token:
            raise UserError(f"write key=value pairs such as resize=36,crop=32, not {text!r}", option="preprocess")
        fields[key].append(token)
    return _spec(fields, text)


def _from_json(path: Path) -> Preprocess:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc.__class__.__name__})", option="preprocess") from exc
    if not isinstance(raw, dict) or set(raw) - set(SPEC_KEYS):
        raise UserError(f"{path}: a JSON object with keys from {', '.join(SPEC_KEYS)}", option="preprocess")
    fields = {k: [str(v) for v in (raw[k] if isinstance(raw[k], list) else [raw[k]])] for k in raw}
    return _spec(fields, str(path))


def _spec(fields: dict[str, list[str]], text: str) -> Preprocess:
    try:
        whole = {k: int(v[0]) for k, v in fields.items() if k in ("resize", "crop", "channels") and len(v) == 1}
        lists = {k: tuple(float(t) for t in v) for k, v in fields.items() if k in ("mean", "std")}
    except ValueError:
        raise UserError(f"values must be numbers: {text!r}", option="preprocess") from None
    if len(whole) + len(lists) != len(fields):
        raise UserError(f"resize, crop and channels take one whole number each: {text!r}", option="preprocess")
    return Preprocess(**whole, **lists)


class FolderImages(LazyImages):
    """Image files decoded with ``spec`` when their rows are read."""

    def __init__(self, files: list[Path], spec: Preprocess, image_shape: tuple[int, int, int], rows=None) -> None:  # noqa: ANN001
        super().__init__(image_shape, np.arange(len(files)) if rows is None else rows)
        self.files, self.spec = files, spec
        self.mean, self.std = spec.statistics(image_shape[0])

    def read(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.decode(int(r)) for r in rows])

    def decode(self, row: int) -> np.ndarray:
        pixels = decode_file(self.files[row], self.spec, self.image_shape[0])
        if pixels.shape != self.image_shape:
            first = "x".join(map(str, self.image_shape[1:]))
            raise UserError(
                f"{self.files[row]}: image is {pixels.shape[1]}x{pixels.shape[2]} where {self.files[0].name} is "
                f"{first}; give a preprocessing resize and crop to make them one size"
            )
        return (pixels.astype(np.float32) / np.float32(255.0) - self.mean) / self.std

    def with_rows(self, rows: np.ndarray) -> FolderImages:
        return FolderImages(self.files, self.spec, self.image_shape, rows)


def decode_file(path: Path, spec: Preprocess, channels: int) -> np.ndarray:
    """The file's pixels as uint8 C x H x W after the mode, resize and crop of ``spec``."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for a bad or truncated file
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc
    if spec.resize is not None:
        width, height = image.size
        short = min(width, height)
        size = (spec.resize, int(spec.resize * height / width)) if width == short else (
            int(spec.resize * width / height), spec.resize)  # fmt: skip
        image = image.resize(size, Image.Resampling.BILINEAR)
    if spec.crop is not None:
        width, height = image.size
        if spec.crop > min(width, height):
            raise UserError(f"{path}: image is {width}x{height}, smaller than the preprocessing crop={spec.crop}")
        left, top = int(round((width - spec.crop) / 2.0)), int(round((height - spec.crop) / 2.0))
        image = image.crop((left, top, left + spec.crop, top + spec.crop))
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_folder(path: Path, spec: Preprocess | None) -> tuple[FolderImages, np.ndarray | None]:
    """The folder's images (checked: every file decodes to one size) and labels (None for a flat folder)."""
    files, labels = _listing(path)
    spec = spec or Preprocess()
    channels = spec.channels or _channels_of(files[0])
    first = decode_file(files[0], spec, channels)
    images = FolderImages(files, spec, first.shape)
    for start in range(0, len(images), CHECK_BATCH):  # every file decodes, to one size: fail now, not mid-search
        images[start : start + CHECK_BATCH]
    return images, labels


def _listing(path: Path) -> tuple[list[Path], np.ndarray | None]:
    def images_in(folder: Path, deep: bool) -> list[Path]:
        found = folder.rglob("*") if deep else folder.iterdir()
        return sorted(f for f in found if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)

    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    loose = images_in(path, deep=False)
    if classes and loose:
        raise UserError(f"{path}: has both class subfolders and images outside them (such as {loose[0].name})")
    if not classes:
        if not loose:
            raise UserError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return loose, None
    per_class = [images_in(folder, deep=True) for folder in classes]
    files = [f for found in per_class for f in found]
    if not files:
        raise UserError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in its {len(classes)} class subfolders")
    labels = np.concatenate([np.full(len(found), index, np.int64) for index, found in enumerate(per_class)])
    return files, labels


def _channels_of(path: Path) -> int:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return 1 if image.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc
