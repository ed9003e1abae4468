"""Benchmark for issue 30: batch-1 one-thread ORT latency of ONNX files, timed interleaved (A/B/C/...).

python tools/bench_timesteps.py BASE.onnx OTHER.onnx ... [--runs 60]

Each round runs every file once, in turn, so a load that comes and goes on a shared machine
touches all of them alike. Reported per file: the median and fastest call, and the speed-up over
the first file as the median of the per-round ratios (paired: each ratio compares calls made
moments apart, which holds on a loaded machine where the medians alone drift).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from svtprune.runtime import input_shape, make_session


def interleaved_ms(paths: list[str], runs: int) -> list[list[float]]:
    """Per file, the wall time (ms) of each of ``runs`` batch-1 calls, after two warm-up calls each."""
    sessions = [make_session(path, threads=1) for path in paths]
    feeds = []
    for session in sessions:
        shape = [1 if d is None else d for d in input_shape(session)]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        feeds.append({session.get_inputs()[0].name: x})
    for session, feed in zip(sessions, feeds, strict=True):
        session.run(None, feed)
        session.run(None, feed)
    times: list[list[float]] = [[] for _ in paths]
    for _ in range(runs):
        for i, (session, feed) in enumerate(zip(sessions, feeds, strict=True)):
            start = time.perf_counter()
            session.run(None, feed)
            times[i].append(1000 * (time.perf_counter() - start))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    times = interleaved_ms(args.files, args.runs)
    for path, ms in zip(args.files, times, strict=True):
        paired = statistics.median(a / b for a, b in zip(times[0], ms, strict=True))
        print(
            f"{path}: median {statistics.median(ms):.3f} ms, fastest {min(ms):.3f} ms, "
            f"speed-up {paired:.2f}x (paired), {min(times[0]) / min(ms):.2f}x (fastest)"
        )


if __name__ == "__main__":
    main()
