"""The papers' table on our reference model: uniform vs PSViT vs PrimeSVT at given accuracy budgets.

    python tools/bench_prune.py models/reference/spikformer_fmnist.onnx --drops 1.0 3.0
Prints one markdown row per (method, budget) and saves every report under --keep (optional).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.errors import ConstraintError  # noqa: E402
from svtprune.search.compress import compress  # noqa: E402

VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--drops", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--methods", nargs="+", default=["uniform", "psvit", "primesvt"])
    parser.add_argument("--no-reconstruct", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the reports in")
    args = parser.parse_args()
    print(
        "| method | max drop | memory saved | accuracy (held-out) | without recovery | drop | evaluations | "
        "wall s | ORT b1 ms | ORT b64 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for drop in args.drops:
        for method in args.methods:
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder) / f"{method}_{drop}.onnx"
                try:
                    report = compress(
                        args.model, VAL, out, max_accuracy_drop=drop, method=method, reconstruct=not args.no_reconstruct
                    )
                except ConstraintError as exc:
                    report = exc.report or {}
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    (args.keep / f"{method}_{drop}.report.json").write_text(json.dumps(report, indent=1))
            o, c = report["original"], report["compressed"]
            print(
                f"| {method} | {drop} | {report['memory_saving']:.1%} | {o['accuracy']:.2f} -> {c['accuracy']:.2f} | "
                f"{c.get('accuracy_without_reconstruction', c['accuracy']):.2f} | {report['accuracy_drop']:.2f} | "
                f"{len(report['evaluations'])} | {report['wall_seconds']:.0f} | "
                f"{o['latency_ms_b1']:.2f} -> {c['latency_ms_b1']:.2f} | "
                f"{o['latency_ms_b64']:.1f} -> {c['latency_ms_b64']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
