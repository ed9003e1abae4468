"""Uniform structured pruning of the reference models: bytes expected vs measured, oracle, speed.

    python tools/bench_graph.py models/reference/spikformer_fmnist.onnx --ratio 0.3
Prints a markdown table row per model (paste into docs/benchmark-log.md) and the analysis summary.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from svtprune.data import load_npz  # noqa: E402
from svtprune.evaluate import evaluate  # noqa: E402
from svtprune.jobs.analyze import analyze_report  # noqa: E402
from svtprune.jobs.prune import claim_outputs, prune_uniform, write_outputs  # noqa: E402
from svtprune.jobs.verify import verify  # noqa: E402
from svtprune.runtime import latency_ms, make_session  # noqa: E402

VAL = ROOT / "models" / "data" / "fashion_mnist_val.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--ratio", type=float, default=0.3)
    args = parser.parse_args()
    data = load_npz(VAL)
    print(
        "| model | groups (prunable) | param bytes | after | expected | saved | acc before | acc after | "
        "oracle | ORT b1 ms before/after | ORT b256 ms before/after |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in args.models:
        report = analyze_report(path)
        result = prune_uniform(path, args.ratio)
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "pruned.onnx"
            with claim_outputs(out, None, path, force=True) as outputs:
                plan = write_outputs(result, outputs)
            check = verify(path, out, plan, data.x[:256])
            before = evaluate(path, data, latency=False)
            after = evaluate(out, data, latency=False)
            speed = [latency_ms(make_session(p), b, repeats=10 if b == 1 else 3) for p in (path, out) for b in (1, 256)]
        prunable = sum(g["prunable"] for g in report["groups"])
        print(
            f"| {path.stem} | {len(report['groups'])} ({prunable}) | {result.original_bytes:,} | "
            f"{result.pruned_bytes:,} | {result.expected_bytes:,} | "
            f"{1 - result.pruned_bytes / result.original_bytes:.1%} | {before.accuracy:.2f} | {after.accuracy:.2f} | "
            f"{'pass' if check['passed'] else 'FAIL'}: {check['exact']} exact, {check['threshold_ties']} ties, "
            f"{check['failures']} fail of {check['samples']} | "
            f"{speed[0]:.2f} / {speed[2]:.2f} | {speed[1]:.0f} / {speed[3]:.0f} |"
        )


if __name__ == "__main__":
    main()
