"""Search policies: uniform, PSViT and PrimeSVT, each a small loop over ``Executor.measure``.

Every policy returns the per-group pruning ratios it settled on and the sensitivity curves
it measured (for the report). The accuracy budget is checked on the search split only; the
final number comes from a held-out split in ``compress``.

Cost control: sensitivity scans run on the executor's screening subset over a coarse rate grid
(``SCAN_RATES``, plus 0.1 when 0.2 already fails), and every step a policy would keep is first
screened and then confirmed on the whole search split (on the same built model); a screen only
rejects a step when its estimate misses the budget by more than one standard error. PrimeSVT's
per-group step takes the top rate or bisects the fine grid below the scan's first failure.
"""

from __future__ import annotations

from collections.abc import Callable

from svtprune.search.budget import Budget
from svtprune.search.prune_executor import PruneExecutor
from svtprune.search.records import Measurement, SearchResult

RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SCAN_RATES = (0.2, 0.4, 0.6, 0.8)  # the scan's grid; the fine grid is tried only where it matters
Progress = Callable[[str], None]


def confirmed(executor: PruneExecutor, budget: Budget, ratios: dict[str, float], label: str) -> Measurement | None:
    """Screen a step, then measure it on the whole search split; the full record if it is within budget."""
    test = budget.test(len(executor.data)) if budget.sequential else None
    if not budget.plausible(executor.measure(ratios, f"{label} (screen)", screen=True, test=test)):
        return None
    record = executor.measure(ratios, label, test=test)
    return record if budget.accepts(record) else None


def uniform(executor: PruneExecutor, budget: Budget, progress: Progress) -> SearchResult:
    """The largest single ratio every group can take (binary search over the rate grid)."""
    names = [g.name for g in executor.analysis.prunable_groups]
    low, high, best = 0, len(RATES) - 1, None
    while low <= high:
        middle = (low + high) // 2
        progress(f"uniform ratio {RATES[middle]:.1f}")
        record = confirmed(executor, budget, {n: RATES[middle] for n in names}, f"uniform {RATES[middle]:.1f}")
        if record is not None:
            best, low = record, middle + 1
        else:
            high = middle - 1
    return SearchResult(best, ratios=best.ratios if best else {})


PROBE_RATE = 0.5  # each group alone at this rate, timed (or its energy measured), to rank the groups


def _group_order(executor: PruneExecutor, budget: Budget | None = None) -> list[str]:
    """Largest first: by parameters, or by the time (objective latency) or energy each group's pruning saves.

    Time and energy orders are measured, not looked up: one build per group, timed with ORT on
    the machine that runs the search (structure only), or run on calibration images for firing
    rates (with recovery, since re-fitted weights change how often neurons fire).
    """
    from svtprune.graph.analysis import group_table

    names = [g.name for g in executor.analysis.prunable_groups]
    if budget is not None and budget.objective == "latency":
        if executor.latency_rank is None:
            executor.latency_rank = {n: budget.speedup(executor.latency_of({n: PROBE_RATE})) for n in names}
        return sorted(names, key=lambda n: -executor.latency_rank[n])
    if budget is not None and budget.objective == "energy":
        if executor.energy_rank is None:
            executor.energy_rank = {n: budget.energy_saving(executor.energy_of({n: PROBE_RATE})) for n in names}
        return sorted(names, key=lambda n: -executor.energy_rank[n])
    params = {row["group"]: row["params"] for row in group_table(executor.analysis)}
    return sorted(names, key=lambda n: -params[n])


def _robustness(
    executor: PruneExecutor, budget: Budget, progress: Progress, base: dict[str, float], rates: tuple[float, ...]
) -> tuple[dict[str, list[tuple[float, float, int]]], dict[str, float]]:
    """Each group alone (on top of ``base``) at rising rates, screened, until the budget breaks.

    Returns the curves and, per group, the first rate whose screen failed (inf if none did).
    When the first rate already fails, the next finer rate below it is tried too, so that a
    fragile but large group (the residual stream) still gets a small step.
    """
    curves: dict[str, list[tuple[float, float, int]]] = {}
    ceilings: dict[str, float] = {}
    test = budget.test(len(executor.data)) if budget.sequential else None
    for name in _group_order(executor, budget) if rates else []:
        curves[name], ceilings[name] = [], float("inf")
        for rate in rates:
            progress(f"sensitivity {name} @ {rate:.1f}")
            record = executor.measure({**base, name: rate}, f"sensitivity {name} {rate:.1f}", screen=True, test=test)
            if record.measured:
                curves[name].append((rate, record.accuracy, record.param_bytes))
            if not budget.plausible(record):
                ceilings[name] = rate
                break
        finer = [r for r in RATES if base.get(name, 0.0) < r < rates[0]]
        if ceilings[name] == rates[0] and finer:
            rate = finer[-1]
            progress(f"sensitivity {name} @ {rate:.1f}")
            record = executor.measure({**base, name: rate}, f"sensitivity {name} {rate:.1f}", screen=True, test=test)
            if record.measured:
                curves[name].insert(0, (rate, record.accuracy, record.param_bytes))
            if not budget.plausible(record):
                ceilings[name] = rate
    return curves, ceilings


def _highest_passing(
    executor: PruneExecutor,
    budget: Budget,
    progress: Progress,
    current: dict[str, float],
    name: str,
    rates: list[float],
) -> Measurement | None:
    """The highest of ``rates`` (ascending) that keeps the budget on top of ``current``.

    The top rate first (robust groups take it in one step), then bisection, trusting that
    accuracy falls with the rate: about log2(len(rates)) + 1 measurements instead of len(rates).
    """

    def attempt(index: int) -> Measurement | None:
        progress(f"prioritized {name} @ {rates[index]:.1f}")
        return confirmed(executor, budget, {**current, name: rates[index]}, f"prioritized {name} {rates[index]:.1f}")

    if not rates:
        return None
    best = attempt(len(rates) - 1)
    if best is not None:
        return best
    low, high = -1, len(rates) - 1  # rates[high] fails; rates[low] passes (-1: none known)
    while high - low > 1:
        middle = (low + high) // 2
        record = attempt(middle)
        if record is not None:
            best, low = record, middle
        else:
            high = middle
    return best


def primesvt(executor: PruneExecutor, budget: Budget, progress: Progress) -> SearchResult:
    """PrimeSVT: robustness per group, then compress largest group first while accuracy holds."""
    curves, ceilings = _robustness(executor, budget, progress, {}, SCAN_RATES)
    current: dict[str, float] = {}
    best: Measurement | None = None
    for name in _group_order(executor, budget):
        record = _highest_passing(executor, budget, progress, current, name, [r for r in RATES if r < ceilings[name]])
        if record is not None:
            current, best = dict(record.ratios), record
        if budget.goal_met(executor, best):
            break
    return SearchResult(best, ratios=current, sensitivity=curves)


def psvit(executor: PruneExecutor, budget: Budget, progress: Progress) -> SearchResult:
    """PSViT: a uniform step on half the budget, per-group sensitivity, then fine-grained rates."""
    half = Budget(
        budget.baseline, budget.max_drop / 2, budget.min_saving, sequential=budget.sequential,
        held_images=budget.held_images,
    )  # fmt: skip
    start = uniform(executor, half, progress)
    base = dict(start.ratios)
    floor = max(base.values(), default=0.0)
    rates = tuple(r for r in SCAN_RATES if r > floor)
    curves, _ceilings = _robustness(executor, budget, progress, base, rates)
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
        record = confirmed(executor, budget, {**current, name: rate}, f"fine-grained {name} {rate:.1f}")
        if record is not None:
            current, best = dict(record.ratios), record
        if budget.goal_met(executor, best):
            break
    return SearchResult(best, ratios=current, sensitivity=curves)


POLICIES = {"uniform": uniform, "psvit": psvit, "primesvt": primesvt}
