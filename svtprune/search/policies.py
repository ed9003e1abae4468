"""Search policies: uniform, PSViT and PrimeSVT, each a small loop over ``Executor.measure``.

Every policy returns the per-group pruning ratios it settled on and the sensitivity curves
it measured (for the report). The accuracy budget is checked on the search split only; the
final number comes from a held-out split in ``compress``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from svtprune.search.executor import Executor, Measurement

RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
Progress = Callable[[str], None]


@dataclass
class Budget:
    baseline: float  # accuracy of the unpruned model on the search split
    max_drop: float  # points the search may lose on the search split
    min_saving: float | None = None  # stop once this fraction of parameter bytes is saved

    def accepts(self, record: Measurement) -> bool:
        return self.baseline - record.accuracy <= self.max_drop

    def memory_met(self, executor: Executor, record: Measurement | None) -> bool:
        return self.min_saving is not None and record is not None and executor.saving(record) >= self.min_saving


@dataclass
class SearchResult:
    ratios: dict[str, float]
    best: Measurement | None
    sensitivity: dict[str, list[tuple[float, float, int]]] = field(default_factory=dict)  # rate, acc, bytes


def uniform(executor: Executor, budget: Budget, progress: Progress) -> SearchResult:
    """The largest single ratio every group can take (binary search over the rate grid)."""
    names = [g.name for g in executor.analysis.prunable_groups]
    low, high, best = 0, len(RATES) - 1, None
    while low <= high:
        middle = (low + high) // 2
        progress(f"uniform ratio {RATES[middle]:.1f}")
        record = executor.measure({n: RATES[middle] for n in names}, f"uniform {RATES[middle]:.1f}")
        if budget.accepts(record):
            best, low = record, middle + 1
        else:
            high = middle - 1
    return SearchResult(best.ratios if best else {}, best)


def _group_order(executor: Executor) -> list[str]:
    from svtprune.pruning import group_table

    params = {row["group"]: row["params"] for row in group_table(executor.analysis)}
    return sorted((g.name for g in executor.analysis.prunable_groups), key=lambda n: -params[n])


def _robustness(
    executor: Executor, budget: Budget, progress: Progress, base: dict[str, float], rates: tuple[float, ...]
) -> dict[str, list[tuple[float, float, int]]]:
    """Each group alone (on top of ``base``) at rising rates, until the budget breaks."""
    curves: dict[str, list[tuple[float, float, int]]] = {}
    for name in _group_order(executor):
        curves[name] = []
        for rate in rates:
            progress(f"sensitivity {name} @ {rate:.1f}")
            record = executor.measure({**base, name: rate}, f"sensitivity {name} {rate:.1f}")
            curves[name].append((rate, record.accuracy, record.param_bytes))
            if not budget.accepts(record):
                break
    return curves


def primesvt(executor: Executor, budget: Budget, progress: Progress) -> SearchResult:
    """PrimeSVT: robustness per group, then compress largest group first while accuracy holds."""
    curves = _robustness(executor, budget, progress, {}, RATES)
    current: dict[str, float] = {}
    best: Measurement | None = None
    for name in _group_order(executor):
        passing = [rate for rate, acc, _ in curves[name] if budget.baseline - acc <= budget.max_drop]
        for rate in sorted(passing, reverse=True):
            progress(f"prioritized {name} @ {rate:.1f}")
            record = executor.measure({**current, name: rate}, f"prioritized {name} {rate:.1f}")
            if budget.accepts(record):
                current, best = dict(record.ratios), record
                break
        if budget.memory_met(executor, best):
            break
    return SearchResult(current, best, curves)


def psvit(executor: Executor, budget: Budget, progress: Progress) -> SearchResult:
    """PSViT: a uniform step on half the budget, per-group sensitivity, then fine-grained rates."""
    half = Budget(budget.baseline, budget.max_drop / 2, budget.min_saving)
    start = uniform(executor, half, progress)
    base = dict(start.ratios)
    floor = max(base.values(), default=0.0)
    curves = _robustness(executor, budget, progress, base, tuple(r for r in RATES if r > floor))
    current, best = dict(base), start.best

    # most bytes per point of accuracy first, each group stepping up its measured rates
    def cost(name: str, rate: float, acc: float, size: int) -> float:
        return (budget.baseline - acc + 0.05) / max(executor.original_bytes - size, 1)

    candidates = sorted(
        ((cost(n, r, a, b), n, r) for n, points in curves.items() for r, a, b in points),
        key=lambda item: item[0],
    )
    for _, name, rate in candidates:
        if rate <= current.get(name, 0.0):
            continue
        progress(f"fine-grained {name} @ {rate:.1f}")
        record = executor.measure({**current, name: rate}, f"fine-grained {name} {rate:.1f}")
        if budget.accepts(record):
            current, best = dict(record.ratios), record
        if budget.memory_met(executor, best):
            break
    return SearchResult(current, best, curves)


POLICIES = {"uniform": uniform, "psvit": psvit, "primesvt": primesvt}
