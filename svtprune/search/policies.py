"""Search policies: uniform, PSViT and PrimeSVT, each a small loop over ``Executor.measure``.

Every policy returns the per-group pruning ratios it settled on and the sensitivity curves
it measured (for the report). The accuracy budget is checked on the search split only; the
final number comes from a held-out split in ``compress``.

Cost control: sensitivity scans run on the executor's screening subset over a coarse rate grid
(``SCAN_RATES``, plus 0.1 when 0.2 already fails), and every step a policy would keep is first
screened and then confirmed on the whole search split (on the same built model); a screen only
rejects a step when its estimate misses the budget by more than one standard error. PrimeSVT's
per-group step takes the top rate or bisects the fine grid below the scan's first failure.
The scans of different groups are independent: a parallel ``CandidatePool`` measures them in
waves (search/parallel.py), with the same records, in the same order, as the serial loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from svtprune.progress import Phase, Say, Step, bisection_steps
from svtprune.search.budget import Budget
from svtprune.search.parallel import CandidatePool
from svtprune.search.prune_executor import PruneExecutor
from svtprune.search.records import Measurement, SearchResult

RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
SCAN_RATES = (0.2, 0.4, 0.6, 0.8)  # the scan's grid; the fine grid is tried only where it matters


def confirmed(executor: PruneExecutor, budget: Budget, ratios: dict[str, float], label: str) -> Measurement | None:
    """Screen a step, then measure it on the whole search split; the full record if it is within budget."""
    test = budget.test(len(executor.data)) if budget.sequential else None  # stubs may carry no data
    if not budget.plausible(executor.measure(ratios, f"{label} (screen)", screen=True, test=test)):
        return None
    record = executor.measure(ratios, label, test=test)
    return record if budget.accepts(record) else None


def uniform(executor: PruneExecutor, budget: Budget, progress: Say, pool: CandidatePool | None = None) -> SearchResult:
    """The largest single ratio every group can take (binary search over the rate grid).

    Each step depends on the last, so ``pool`` (taken for a policy's common signature) goes unused.
    """
    names = [g.name for g in executor.analysis.prunable_groups]
    low, high, best = 0, len(RATES) - 1, None
    while low <= high:
        middle = (low + high) // 2
        progress(Step(f"uniform ratio {RATES[middle]:.1f}", "uniform", bisection_steps(len(RATES) + 1)))
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


@dataclass
class _Scan:
    """One group's sensitivity scan, a step at a time: what the serial loop over its rates would measure next.

    Rates rise until a screen fails (the ceiling); when the first rate already fails, the next
    finer rate below it is tried too, so that a fragile but large group (the residual stream)
    still gets a small step. ``records`` keeps the group's records in the order it measured them.
    """

    name: str
    rates: list[float]  # still to measure, in order
    finer: float | None  # the finer rate tried when the first one fails
    first: float
    ceiling: float = float("inf")
    refining: bool = False
    curve: list[tuple[float, float, int]] = field(default_factory=list)
    records: list[Measurement] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, base: dict[str, float], rates: tuple[float, ...]) -> _Scan:
        finer = [r for r in RATES if base.get(name, 0.0) < r < rates[0]]
        return cls(name, list(rates), finer[-1] if finer else None, rates[0])

    def feed(self, record: Measurement, plausible: bool) -> None:
        """The record of the rate ``rates[0]``; the scan moves on (or ends)."""
        rate = self.rates.pop(0)
        self.records.append(record)
        if record.measured:
            point = (rate, record.accuracy, record.param_bytes)
            if self.refining:
                self.curve.insert(0, point)
            else:
                self.curve.append(point)
        if not plausible:
            self.ceiling, self.rates = rate, []
        if not self.rates and not self.refining and self.ceiling == self.first and self.finer is not None:
            self.rates, self.refining = [self.finer], True


def _waves(scans: list[_Scan], parallel: bool) -> Iterator[list[_Scan]]:
    """The scans whose next step is measured together: serially one at a time, group after group
    (the order of the plain loop); in parallel the next step of every group still scanning."""
    if not parallel:
        for scan in scans:
            while scan.rates:
                yield [scan]
    while live := [scan for scan in scans if scan.rates]:
        yield live


def _robustness(
    executor: PruneExecutor,
    budget: Budget,
    progress: Say,
    base: dict[str, float],
    rates: tuple[float, ...],
    pool: CandidatePool | None = None,
) -> tuple[dict[str, list[tuple[float, float, int]]], dict[str, float]]:
    """Each group alone (on top of ``base``) at rising rates, screened, until the budget breaks.

    Returns the curves and, per group, the first rate whose screen failed (inf if none did).
    The groups are independent, so a parallel ``pool`` measures them in waves (wave k: the k-th
    step of every group still scanning); the records are then put in the serial loop's order.
    """
    pool = pool or CandidatePool(executor)
    test = budget.test(len(executor.data)) if budget.sequential else None  # stubs may carry no data
    scans = [_Scan.of(name, base, rates) for name in (_group_order(executor, budget) if rates else [])]
    first, phase = len(executor.records), Phase(progress, "sensitivity")
    for wave in _waves(scans, pool.parallel):
        jobs, say = [], phase.bounded(sum(len(scan.rates) for scan in scans))
        for scan in wave:
            rate = scan.rates[0]
            say(f"sensitivity {scan.name} @ {rate:.1f}")
            jobs.append(
                ({**base, scan.name: rate}, f"sensitivity {scan.name} {rate:.1f}", {"screen": True, "test": test})
            )
        for scan, record in zip(wave, pool.measure_many(jobs), strict=True):
            scan.feed(record, budget.plausible(record))
    recorded = {id(record) for record in executor.records[first:]}
    executor.records[first:] = [r for scan in scans for r in scan.records if id(r) in recorded]
    return {scan.name: scan.curve for scan in scans}, {scan.name: scan.ceiling for scan in scans}


def _highest_passing(
    executor: PruneExecutor,
    budget: Budget,
    progress: Say,
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


def primesvt(executor: PruneExecutor, budget: Budget, progress: Say, pool: CandidatePool | None = None) -> SearchResult:
    """PrimeSVT: robustness per group (on ``pool``), then compress largest group first while accuracy holds."""
    curves, ceilings = _robustness(executor, budget, progress, {}, SCAN_RATES, pool)
    current: dict[str, float] = {}
    best: Measurement | None = None
    order, phase = _group_order(executor, budget), Phase(progress, "prioritized")
    below = {name: [r for r in RATES if r < ceilings[name]] for name in order}
    for index, name in enumerate(order):
        say = phase.bounded(sum(bisection_steps(len(below[n])) for n in order[index:]))
        record = _highest_passing(executor, budget, say, current, name, below[name])
        if record is not None:
            current, best = dict(record.ratios), record
        if budget.goal_met(executor, best):
            break
    return SearchResult(best, ratios=current, sensitivity=curves)


def psvit(executor: PruneExecutor, budget: Budget, progress: Say, pool: CandidatePool | None = None) -> SearchResult:
    """PSViT: a uniform step on half the budget, per-group sensitivity (on ``pool``), then fine-grained rates."""
    start = uniform(executor, budget.uniform_first(), progress)
    base = dict(start.ratios)
    floor = max(base.values(), default=0.0)
    rates = tuple(r for r in SCAN_RATES if r > floor)
    curves, _ceilings = _robustness(executor, budget, progress, base, rates, pool)
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
