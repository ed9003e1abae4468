"""Convert Debian's Fashion-MNIST (apt-get install dataset-fashion-mnist) to the shipped splits.

    python tools/make_data.py
writes models/data/fashion_mnist_val.npz (test images 0..3999, labelled) and
models/data/fashion_mnist_train_4k.npz (training images 0..3999, for calibration/fine-tuning).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.data import read_fashion_mnist, save_npz  # noqa: E402


def main() -> None:
    out = ROOT / "models" / "data"
    out.mkdir(parents=True, exist_ok=True)
    save_npz(out / "fashion_mnist_val.npz", read_fashion_mnist("test").subset(slice(0, 4000)))
    save_npz(out / "fashion_mnist_train_4k.npz", read_fashion_mnist("train").subset(slice(0, 4000)))
    print(f"wrote {out}/fashion_mnist_val.npz and fashion_mnist_train_4k.npz")


if __name__ == "__main__":
    main()
