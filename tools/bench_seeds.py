"""compress on several splits of one labelled set: is the result the split's luck, and what did it cost?

    python tools/bench_seeds.py models/reference/spikformer_fmnist.onnx --data val2k.npz --seeds 0 1 2
    python tools/bench_seeds.py big.onnx --data big2k.npz --seeds 0 --extra --time-limit 1800

Each run is a fresh ``svtprune compress`` process (``--max-accuracy-drop``, ``--seed``), so its
wall time and peak resident memory (the child's ``ru_maxrss``) are those a user sees. Prints one
markdown row per seed: saving, held-out drop, evaluations, images forwarded (and per phase),
wall seconds, peak RSS. ``--make-data N`` first writes N random images with the model's own
predictions as labels, 10% of them replaced at random (a user-sized model with random weights
has no dataset; its cost, not its accuracy, is what is measured then).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_data(model: Path, images: int, out: Path, seed: int = 0) -> None:
    """Random images labelled by the model itself, with 10% label noise."""
    sys.path.insert(0, str(ROOT))
    import onnx

    from svtprune.runtime import logits_of, make_session

    proto = onnx.load(str(model))
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim][1:]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((images, *dims)).astype(np.float32)
    logits = logits_of(make_session(proto), x)
    y = logits.argmax(axis=1)
    noisy = rng.random(images) < 0.1
    y[noisy] = rng.integers(0, logits.shape[1], int(noisy.sum()))
    np.savez(out, x=x, y=y.astype(np.int64))
    print(f"wrote {out}: {images} images {dims}, {len(set(y.tolist()))} classes predicted")


def run(model: Path, data: Path, seed: int, drop: float, extra: list[str], folder: Path) -> dict:
    out = folder / f"seed{seed}.onnx"
    command = [sys.executable, "-m", "svtprune.cli", "compress", str(model), "--data", str(data)]
    command += ["--max-accuracy-drop", str(drop), "--seed", str(seed), "-o", str(out), "--json", "--force", *extra]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (folder / f"seed{seed}.stdout").open("w+") as stdout, (folder / f"seed{seed}.stderr").open("w") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _pid, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (KB), not the largest so far
        child.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        text = stdout.read()
    wall = time.perf_counter() - started
    report = json.loads(text) if text.strip() else {}
    return {"seed": seed, "exit": child.returncode, "wall": wall, "peak_kb": usage.ru_maxrss, "report": report}


def row(result: dict) -> str:
    report = result["report"]
    phases = ", ".join(f"{k} {v:,}" for k, v in report.get("images_forwarded_by_phase", {}).items())
    test = (report.get("constraints") or {}).get("sequential_test") or {}
    return (
        f"| {result['seed']} | {result['exit']} | {report.get('memory_saving', 0):.1%} | "
        f"{report.get('original', {}).get('accuracy', float('nan')):.2f} -> "
        f"{report.get('compressed', {}).get('accuracy', float('nan')):.2f} | {report.get('accuracy_drop', 'n/a')} | "
        f"{len(report.get('evaluations', []))} | {test.get('mean_images_per_candidate', 'n/a')} | "
        f"{len(report.get('held_out_checks', []))} | {report.get('images_forwarded', 0):,} ({phases}) | "
        f"{result['wall']:.0f} | {result['peak_kb'] / 1024**2:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--drop", type=float, default=1.0)
    parser.add_argument("--make-data", type=int, default=None, help="first write this many random images to --data")
    parser.add_argument("--keep", type=Path, default=None, help="folder for the outputs and reports")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more compress options")
    args = parser.parse_args()
    if args.make_data:
        make_data(args.model, args.make_data, args.data)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="svtprune-seeds-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"model {args.model} ({args.model.stat().st_size:,} bytes), data {args.data}, max drop {args.drop}")
    print(
        "| seed | exit | saved | held-out accuracy | drop | evaluations | images per candidate | held-out checks "
        "| images forwarded (per phase) | wall s | peak RSS GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        result = run(args.model, args.data, seed, args.drop, args.extra, folder)
        (folder / f"seed{seed}.result.json").write_text(json.dumps(result, indent=1))
        print(row(result), flush=True)


if __name__ == "__main__":
    main()
