"""AQ4SViT: per-layer bit widths under an accuracy budget, as policies over two calls.

``QuantExecutor.drift`` is the cheap call (a calibration batch, membranes compared) and
``QuantExecutor.measure`` the expensive one (accuracy on the search split). Every candidate is
one step (one layer, one width lower) from a setting already accepted; the gate sends it to
``measure`` only while the drift that step adds stays below the smallest step drift already
measured to break the budget: a step that large has been seen to fail.

- ``greedy``: lower layers one step each, best bytes saved per drift first, as many steps per
  measurement as keep passing.
- ``beam``: the same expansions from the ``width`` best settings at each step.
- ``exhaustive``: no proxy, every expansion measured (the baseline that shows what the gate saves).
"""

from __future__ import annotations

import math

from svtprune.progress import Say, Step
from svtprune.search.budget import Budget
from svtprune.search.quant_executor import QuantExecutor, key_of
from svtprune.search.records import FP32, Measurement, SearchResult

Setting = dict[str, int]


def _lower(bits: int, widths: tuple[int, ...]) -> int | None:
    """The next narrower width in the allowed list, or None at the bottom."""
    narrower = [w for w in sorted(widths, reverse=True) if w < bits]
    return narrower[0] if narrower else None


def _expansions(executor: QuantExecutor, setting: Setting, widths: tuple[int, ...], blocked: set) -> list[tuple]:
    """Every one-layer, one-step lowering of ``setting``: (layer, new bits, bytes saved by the step)."""
    out = []
    for layer in executor.quantizer.layers:
        now = setting.get(layer.name, FP32)
        new = _lower(now, widths)
        if new is None or new < executor.quantizer.lowest_bits(layer) or (layer.name, new) in blocked:
            continue
        out.append((layer.name, new, layer.size * (now - new) / 8))
    return out


def _sensitivity(executor: QuantExecutor, widths: tuple[int, ...], progress: Say) -> dict:
    """Drift of each layer alone at each width: the proxy's per-layer robustness table."""
    table = {}
    lowest = executor.quantizer.lowest_bits
    total = sum(w >= lowest(layer) for layer in executor.quantizer.layers for w in widths)
    for layer in executor.quantizer.layers:
        table[layer.name] = []
        for width in sorted(w for w in widths if w >= lowest(layer))[::-1]:
            progress(Step(f"drift {layer.name} @ {width} bits", "drift", total, exact=True))
            table[layer.name].append((width, executor.drift({layer.name: width})))
    return table


class Gate:
    """Skips steps whose added drift reaches the smallest added drift already measured to fail.

    The step's own drift, not the setting's total: totals only grow along a search, so one
    failure near the budget's edge (where drift ranks losses only loosely) would gate every
    later step, however harmless. Measured on the pruned reference Spikformer: one failed step
    at total drift 0.3133 made the old rule refuse every candidate (13) once the accepted
    setting reached total 0.3131, though that setting still scored above the original.
    """

    def __init__(self, executor: QuantExecutor, enabled: bool) -> None:
        self.executor, self.enabled, self.fail_step = executor, enabled, math.inf

    def passes(self, drift: float, base: float) -> bool:
        if self.enabled and drift - base >= self.fail_step:
            self.executor.gated += 1
            return False
        return True

    def failed(self, drift: float, base: float) -> None:
        self.fail_step = min(self.fail_step, drift - base)


def greedy(
    executor: QuantExecutor, budget: Budget, widths: tuple[int, ...], progress: Say, gate: bool = True
) -> SearchResult:
    """Lower layers in order of bytes saved per unit of drift, several steps per measurement while they pass.

    One measurement tries the next ``stride`` steps of that order at once: the stride doubles
    after an accepted measurement and halves after a refused (or gated) one, and a single step
    refused is not tried again. Cheap steps (most 8-bit ones) then share measurements instead of
    costing one each, which matters where a measurement is a pass over the whole search split:
    100 s on a 9.3M-parameter Spikformer with 66 possible steps (docs/benchmark-log.md, issue 18).
    """
    table = _sensitivity(executor, widths, progress)
    alone = {(name, w): d for name, points in table.items() for w, d in points}
    current: Setting = {}
    best = None
    blocked: set = set()
    gatekeeper = Gate(executor, gate)
    stride, refused = 1, set()
    while True:
        options = _expansions(executor, current, widths, blocked)
        if not options:
            break
        options.sort(key=lambda o: -o[2] / (alone[(o[0], o[1])] + 1e-4))
        steps = options[:stride]
        candidate = {**current, **{name: new for name, new, _ in steps}}
        drift, base = executor.drift(candidate), executor.drift(current)
        if key_of(candidate) not in refused and gatekeeper.passes(drift, base):
            label = f"greedy {steps[0][0]} {steps[0][1]}" if len(steps) == 1 else f"greedy {len(steps)} steps"
            progress(f"{label}: {len(candidate)} layers quantized")
            record = executor.measure(candidate, label, drift)
            if budget.accepts(record):
                current, best, stride = candidate, record, 2 * len(steps)
                continue
            gatekeeper.failed(drift, base)
            refused.add(key_of(candidate))  # a batch refused before may come back as the steps of a smaller one
        if len(steps) == 1:
            blocked.add(steps[0][:2])
        stride = max(1, len(steps) // 2)
    return SearchResult(best, bits=current, sensitivity=table)


def beam(
    executor: QuantExecutor, budget: Budget, widths: tuple[int, ...], progress: Say, width: int = 4
) -> SearchResult:
    """Greedy's ranking over the moves of ``width`` settings at once; the ``width`` first that pass go on.

    With width 1 this is greedy taking one step per measurement. Wider beams keep alternatives
    alive when the best-ranked path runs into a sensitive layer, at the cost of more full evaluations.
    """
    table = _sensitivity(executor, widths, progress)
    alone = {(name, w): d for name, points in table.items() for w, d in points}
    frontier: list[Setting] = [{}]
    best: Measurement | None = None
    gatekeeper = Gate(executor, True)
    failed: set = set()
    while frontier:
        pool: dict = {}
        for setting in frontier:
            for name, new, saved in _expansions(executor, setting, widths, set()):
                candidate = {**setting, name: new}
                key = key_of(candidate)
                if key not in pool and key not in failed:
                    pool[key] = (candidate, saved / (alone[(name, new)] + 1e-4), setting)
        frontier = []
        for candidate, _, parent in sorted(pool.values(), key=lambda c: -c[1]):
            if len(frontier) == width:
                break
            drift, base = executor.drift(candidate), executor.drift(parent)
            if not gatekeeper.passes(drift, base):
                failed.add(key_of(candidate))
                continue
            progress(f"beam: {len(candidate)} layers quantized, drift {drift:.3f}")
            record = executor.measure(candidate, f"beam {len(frontier)}", drift)
            if budget.accepts(record):
                frontier.append(candidate)
                if best is None or record.param_bytes < best.param_bytes:
                    best = record
            else:
                gatekeeper.failed(drift, base)
                failed.add(key_of(candidate))
    return SearchResult(best, bits=best.bits if best else {}, sensitivity=table)


def exhaustive(executor: QuantExecutor, budget: Budget, widths: tuple[int, ...], progress: Say) -> SearchResult:
    """Ungated greedy: every one-step lowering fully measured; the most bytes per point lost wins."""
    current: Setting = {}
    best = None
    blocked: set = set()
    while True:
        passing = []
        for name, new, saved in _expansions(executor, current, widths, blocked):
            progress(f"exhaustive: {name} -> {new} bits")
            record = executor.measure({**current, name: new}, f"exhaustive {name} {new}")
            if budget.accepts(record):
                lost = max(budget.baseline - record.accuracy, 0.0)
                passing.append((saved / (lost + 0.05), record))
            else:
                blocked.add((name, new))
        if not passing:
            break
        best = max(passing, key=lambda item: item[0])[1]
        current = dict(best.bits)
    return SearchResult(best, bits=current)


SEARCHES = {"greedy": greedy, "beam": beam, "exhaustive": exhaustive}
