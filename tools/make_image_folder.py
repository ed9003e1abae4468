"""Write a dataset ``.npz`` as a folder of PNG files (one subfolder per class), or as ``.npy`` + ``.labels.npy``.

    python tools/make_image_folder.py models/data/fashion_mnist_val.npz /tmp/fmnist_png --mean 0.2860 --std 0.3530
    python tools/make_image_folder.py models/data/fashion_mnist_val.npz /tmp/fmnist.npy

The PNGs hold ``round((x * std + mean) * 255)`` as 8-bit grayscale (1 channel) or RGB (3), so
``--preprocess mean=...,std=...`` with the same numbers reads ``x`` back; for data that came from
8-bit images normalised in float32 (the shipped Fashion-MNIST splits) bit for bit. The script
says how far the round trip is from the file. A folder lists its images class by class, so its
row order is the npz's only when the npz is sorted by label (``--sorted-npz`` writes that npz).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.data import Dataset, load_npz, save_npz  # noqa: E402
from svtprune.data_folder import Preprocess  # noqa: E402
from svtprune.data_sources import labels_path, load_data  # noqa: E402


def write_folder(data: Dataset, out: Path, mean: tuple[float, ...], std: tuple[float, ...]) -> list[int]:
    """PNG files under ``out`` (class subfolders when labelled); returns the npz rows in the folder's order."""
    from PIL import Image

    channels = data.x.shape[1]
    if channels not in (1, 3):
        raise SystemExit(f"PNG needs 1 or 3 channels, the data has {channels}")
    scale = np.asarray(std, np.float32).reshape(-1, 1, 1), np.asarray(mean, np.float32).reshape(-1, 1, 1)
    labels = np.zeros(len(data), np.int64) if data.y is None else data.y
    width = len(str(max(int(labels.max()), 0)))
    digits = len(str(len(data)))
    for row in range(len(data)):
        pixels = np.clip(np.rint((data.x[row] * scale[0] + scale[1]) * 255), 0, 255).astype(np.uint8)
        folder = out if data.y is None else out / f"{int(labels[row]):0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels[0] if channels == 1 else pixels.transpose(1, 2, 0))
        image.save(folder / f"{row:0{digits}d}.png")
    return [int(r) for r in np.argsort(labels, kind="stable")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("npz", type=Path)
    parser.add_argument("out", type=Path, help="a folder to create, or a NAME.npy file")
    parser.add_argument("--mean", default="0", help="normalisation the npz used, per channel: 0.49,0.48,0.45")
    parser.add_argument("--std", default="1")
    parser.add_argument("--sorted-npz", type=Path, help="also write the npz in the folder's row order here")
    args = parser.parse_args()
    data = load_npz(args.npz)
    if args.out.suffix == ".npy":
        np.save(args.out, data.x)
        if data.y is not None:
            np.save(labels_path(args.out), data.y)
        print(f"wrote {args.out} ({len(data)} images)" + ("" if data.y is None else f" and {labels_path(args.out)}"))
        return
    if args.out.exists():
        raise SystemExit(f"{args.out} exists")
    mean, std = (tuple(float(v) for v in text.split(",")) for text in (args.mean, args.std))
    order = write_folder(data, args.out, mean, std)
    back = load_data(args.out, Preprocess(mean=mean, std=std, channels=data.x.shape[1]))
    again = np.asarray(back.x)
    gap = float(np.abs(again - data.x[order]).max())
    print(f"wrote {len(data)} PNGs under {args.out}; read back, the largest difference from the npz is {gap:g}")
    if args.sorted_npz:
        save_npz(args.sorted_npz, data.subset(np.asarray(order)))
        print(f"wrote {args.sorted_npz} (the npz in the folder's order)")


if __name__ == "__main__":
    main()
