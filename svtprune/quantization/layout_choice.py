"""Whether a quantized model ships in the integer layout: decided by timing both on this machine.

The integer layout (``integer_layout``) is exact on spikes, but whether MatMulIntegerToFloat
beats DequantizeLinear + Conv depends on the layer widths and the CPU (measured: 2-6% on the
reference Spikformer, 2.8-3.4x per layer at spikformer_cifar10 widths). Both files are timed at
batch 1 on the threads ``SVTPRUNE_THREADS`` gives, alternating, and the integer one is kept only
when it is faster and every prediction on the check images is unchanged.
"""

from __future__ import annotations

import numpy as np
import onnx

from svtprune.quantization.integer_layout import integer_layout
from svtprune.runtime import latency_ms, logits_of, make_session

ROUNDS = 5  # alternating timing rounds of each file
CALLS = 20  # batch-1 calls per round (the fastest one counts)
MIN_GAIN = 1.02  # the integer file must be at least this much faster: below it, timing noise decides


def choose_layout(model: onnx.ModelProto, check: np.ndarray) -> tuple[onnx.ModelProto, dict]:
    """(the model to write, the report section): the integer layout if measured faster and unchanged on ``check``."""
    layout = integer_layout(model)
    section: dict = {"rewritten": layout.rewritten, "refused": layout.refused, "chosen": "weight-only"}
    if not layout.rewritten:
        return model, section
    sessions = {"weight-only": make_session(model), "integer": make_session(layout.model)}
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(ROUNDS):
        for name, session in sessions.items():
            times[name].append(latency_ms(session, 1, CALLS, fastest=True))
    fastest = {name: min(values) for name, values in times.items()}
    predictions = [logits_of(session, check).argmax(axis=1) for session in sessions.values()]
    same = bool(np.array_equal(*predictions))
    faster = fastest["weight-only"] >= MIN_GAIN * fastest["integer"]
    section.update(
        batch1_ms={name: round(value, 4) for name, value in fastest.items()},
        predictions_unchanged_on=int(len(check)) if same else None,
        chosen="integer" if faster and same else "weight-only",
    )
    return (layout.model if faster and same else model), section
