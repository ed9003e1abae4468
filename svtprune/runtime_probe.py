"""Peak memory of running one model once: ``python -P svtprune/runtime_probe.py MODEL`` prints one JSON object.

Run as a fresh process by ``runtime.peak_rss_mb`` (one per model), so the peak is the model's alone,
not that of a search that held other models: the interpreter with numpy and onnxruntime imported
(``peak_rss_mb_runtime_only``), then a session on MODEL (an .onnx or .ort file, default graph
optimisations, one thread) running batch 1 once on seeded random inputs (``peak_rss_mb``).
Imports numpy and onnxruntime only, never svtprune, so the baseline is what any ORT user pays.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ELEMENT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


STATUS = Path("/proc/self/status")


def peak_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux the high-water mark of this address space (``VmHWM``): ``ru_maxrss`` would not do,
    since the kernel carries the parent's peak across fork and exec into the child's (a probe
    started by a job holding 300 MiB reads at least 300 MiB there). Elsewhere ``ru_maxrss``
    (KiB on Linux, bytes on macOS).
    """
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def run_once(path: str) -> None:
    """Load ``path`` on one thread and run batch 1 (symbolic dims as 1) once."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for value in session.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in value.shape]
        feeds[value.name] = rng.standard_normal(shape).astype(ELEMENT_TYPES.get(value.type, np.float32))
    session.run(None, feeds)


def main(argv: list[str]) -> None:
    baseline = peak_mb()
    run_once(argv[1])
    print(json.dumps({"peak_rss_mb": peak_mb(), "peak_rss_mb_runtime_only": baseline}))


if __name__ == "__main__":
    main(sys.argv)
