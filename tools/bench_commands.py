"""Wall time and peak memory of svtprune's one-model commands on a model of a user's size.

    python tools/bench_commands.py big.onnx --data big500.npz --out /tmp/bench
    python tools/bench_commands.py big.onnx --make-data 500 --data big500.npz --out /tmp/bench

Runs ``analyze``, ``prune --ratio 0.3``, ``verify`` (of that prune, on every image) and ``eval``,
each as a fresh ``svtprune`` process, and prints one markdown row per command: exit code, wall
seconds, the child's own peak resident memory (``ru_maxrss``) and the JSON report's key figures.
The model's parameter count and file size head the table. ``--make-data N`` first writes N
random images (float32, the model's input shape) with the model's own predictions as labels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]


def timed(arguments: list[str], log: Path) -> tuple[int, float, float, dict]:
    """(exit code, wall seconds, peak RSS in GB, the JSON it printed) of one ``svtprune`` process."""
    command = [sys.executable, "-m", "svtprune.cli", *arguments, "--json"]
    started = time.perf_counter()
    with log.with_suffix(".stdout").open("w+") as stdout, log.with_suffix(".stderr").open("w") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env={**os.environ, "PYTHONPATH": str(ROOT)})
        _pid, status, usage = os.wait4(child.pid, 0)  # this child's own peak, not the largest so far
        stdout.seek(0)
        text = stdout.read()
    try:
        report = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        report = {}
    return os.waitstatus_to_exitcode(status), time.perf_counter() - started, usage.ru_maxrss / 1024**2, report


def figures(name: str, report: dict) -> str:
    """The few numbers of each report worth a column."""
    if name == "prune":
        return f"{report.get('original_param_bytes', '?'):,} -> {report.get('pruned_param_bytes', '?'):,} bytes"
    if name == "verify":
        return f"passed {report.get('passed')}: {report.get('exact')} exact, {report.get('threshold_ties')} ties"
    if name == "eval":
        return (
            f"batch 1 {report.get('latency_ms_b1', 0):.1f} ms, batch 64 {report.get('latency_ms_b64', 0):.0f} ms, "
            f"1 thread batch 1 {report.get('latency_ms_b1_1thread', 0):.1f} ms, "
            f"inference peak {report.get('peak_rss_mb', '?')} MB"
        )
    if name == "analyze":
        return f"{len(report.get('groups', []))} groups"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for the pruned model and the logs")
    parser.add_argument("--make-data", type=int, default=None)
    args = parser.parse_args()
    missing = [str(p) for p in (args.model, None if args.make_data else args.data) if p is not None and not p.exists()]
    if missing:
        parser.error(f"not found: {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.make_data:
        sys.path.insert(0, str(ROOT / "tools"))
        from bench_seeds import make_data

        make_data(args.model, args.make_data, args.data)
    proto = onnx.load(str(args.model))
    params = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    images = len(np.load(args.data)["x"])
    print(f"model {args.model}: {params:,} parameters, {args.model.stat().st_size:,} bytes; {images} images")
    pruned = args.out / "pruned.onnx"
    steps = [
        ("analyze", ["analyze", str(args.model)]),
        ("prune", ["prune", str(args.model), "--ratio", "0.3", "-o", str(pruned), "--force"]),
        (
            "verify",
            [
                "verify",
                str(args.model),
                str(pruned),
                "--plan",
                str(pruned.with_suffix(".plan.json")),
                "--data",
                str(args.data),
                "--samples",
                str(images),
            ],
        ),
        ("eval", ["eval", str(args.model), "--data", str(args.data)]),
    ]
    print("| command | exit | wall s | peak RSS GB | figures |")
    print("|---|---|---|---|---|")
    for name, arguments in steps:
        code, wall, peak, report = timed(arguments, args.out / name)
        print(f"| {name} | {code} | {wall:.0f} | {peak:.2f} | {figures(name, report)} |", flush=True)


if __name__ == "__main__":
    main()
