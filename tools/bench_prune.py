"""The papers' table on our reference model: uniform vs PSViT vs PrimeSVT at given accuracy budgets.

    python tools/bench_prune.py models/reference/spikformer_fmnist.onnx --drops 1.0 3.0
Prints one markdown row per (method, budget) and saves every report under --keep (optional).
Evaluations are counted as full (whole search split) + screens (the screening subset); CPU
seconds (all threads) are printed beside wall seconds because the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.errors import ConstraintError  # noqa: E402
from svtprune.jobs.compress import compress  # noqa: E402

VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--drops", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--methods", nargs="+", default=["uniform", "psvit", "primesvt"])
    parser.add_argument("--no-reconstruct", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="folder to keep the reports in")
    parser.add_argument("--data", type=Path, default=VAL)
    args = parser.parse_args()
    print(
        "| model | method | max drop | memory saved | accuracy (held-out) | without recovery | drop | "
        "evaluations (full + screen) | wall s | CPU s | load avg | ORT b1 ms | ORT b64 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for drop in args.drops:
        for method in args.methods:
            load = os.getloadavg()[0]
            cpu = time.process_time()
            with tempfile.TemporaryDirectory() as folder:
                out = Path(folder) / f"{method}_{drop}.onnx"
                try:
                    report = compress(
                        args.model,
                        args.data,
                        out,
                        max_accuracy_drop=drop,
                        method=method,
                        reconstruct=not args.no_reconstruct,
                    )
                except ConstraintError as exc:
                    report = exc.report or {}
            cpu = time.process_time() - cpu
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                name = f"{args.model.stem}_{method}_{drop}.report.json"
                (args.keep / name).write_text(json.dumps(report, indent=1))
            o, c = report["original"], report["compressed"]
            full_size = report["data"]["search_images"]
            screens = sum(1 for e in report["evaluations"] if e.get("images", full_size) < full_size)
            print(
                f"| {args.model.stem} | {method} | {drop} | {report['memory_saving']:.1%} | "
                f"{o['accuracy']:.2f} -> {c['accuracy']:.2f} | "
                f"{c.get('accuracy_without_reconstruction', c['accuracy']):.2f} | {report['accuracy_drop']:.2f} | "
                f"{len(report['evaluations']) - screens} + {screens} | {report['wall_seconds']:.0f} | {cpu:.0f} | "
                f"{load:.1f} | "
                f"{o['latency_ms_b1']:.2f} -> {c['latency_ms_b1']:.2f} | "
                f"{o['latency_ms_b64']:.1f} -> {c['latency_ms_b64']:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
