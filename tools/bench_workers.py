"""compress with --workers 1 and then N: the time of the search and of its sensitivity scan, and equal results.

    python tools/bench_workers.py models/reference/spikformer_fmnist.onnx --data models/data/fashion_mnist_val.npz

Each configuration is one in-process ``compress`` call (the library API, as the CLI makes it);
the phases are timed from the progress messages: the scan runs from the first ``sensitivity``
step to the next other step, the search from the first policy step to the held-out check. Only
the scan is spread over the workers (uniform and the prioritized steps depend on each other).
Prints a markdown row per configuration, then whether the evaluations (labels, accuracies,
bytes, images, verdicts) and the chosen groups are the same.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_compress(model: Path, data: Path, out: Path, workers: int, drop: float, executor: str) -> tuple:
    """(report, seconds of the search, seconds of the scan, wall seconds)."""
    from svtprune.jobs.compress import compress

    stamps: list[tuple[float, str]] = []
    started = time.perf_counter()
    report = compress(
        model, data, out, drop, workers=workers, executor=executor, force=True,
        progress=lambda message: stamps.append((time.perf_counter(), message)),
    )  # fmt: skip
    wall = time.perf_counter() - started
    policy = [i for i, (_, m) in enumerate(stamps) if m.split()[0] in ("sensitivity", "uniform", "prioritized")]
    scan = [i for i, (_, m) in enumerate(stamps) if m.startswith("sensitivity")]
    held = next(t for t, m in stamps if m.startswith("measuring the chosen model on the held-out"))
    scan_end = stamps[scan[-1] + 1][0] if scan and scan[-1] + 1 < len(stamps) else held
    scan_seconds = scan_end - stamps[scan[0]][0] if scan else 0.0
    return report, held - stamps[policy[0]][0], scan_seconds, wall


def evaluations(report: dict) -> list[tuple]:
    return [tuple(v for k, v in e.items() if k != "seconds") for e in report["evaluations"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor", default="process")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for workers in (1, args.workers):
            out = Path(folder) / f"w{workers}.onnx"
            rows.append(timed_compress(args.model, args.data, out, workers, args.max_accuracy_drop, args.executor))
    print("| workers | search s | scan s | wall s | evaluations | images forwarded | saving | held-out drop |")
    print("|---|---|---|---|---|---|---|---|")
    for workers, (report, search, scan, wall) in zip((1, args.workers), rows, strict=True):
        print(
            f"| {workers} | {search:.1f} | {scan:.1f} | {wall:.1f} | {len(report['evaluations'])} | "
            f"{report['images_forwarded']:,} | {100 * report['memory_saving']:.1f}% | {report['accuracy_drop']:.2f} |"
        )
    (serial, *_), (pooled, *_) = rows
    print("same evaluations:", evaluations(serial) == evaluations(pooled))
    print("same groups:", serial["groups"] == pooled["groups"])
    print(f"scan speed-up: {rows[0][2] / rows[1][2]:.2f}x, search speed-up: {rows[0][1] / rows[1][1]:.2f}x")


if __name__ == "__main__":
    main()
