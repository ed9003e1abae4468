"""The accuracy budget on the search split, and the goal that ends a search early.

One rule for every policy: a candidate is accepted when its drop plus its own measurement noise
(the paired standard error it carries) stays within the budget; pruning searches in ``compress``,
and bit searches not followed by fine-tuning, judge candidates with the sequential test instead,
whose verdict the record carries. Full pruning measurements carry
no standard error (they are the whole split); quantization's carry the paired error of the change
from the starting model: measured on the reference Spikformer with 1,000 search images, greedy
without that charge stopped at -1.0 on its split and -3.4 on the 3,000 held-out images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from svtprune.search.sequential import ACCEPTED, REJECTED, SequentialTest

if TYPE_CHECKING:
    from svtprune.search.executor import Executor
    from svtprune.search.records import Measurement

# the search aims this far past a speed goal: one plan's batch-1 time moved ~5% between the search's timing and
# the final check on the shared 2-core machine (a search stopped at 1.50x, the check measured 1.44x)
SPEED_MARGIN = 1.05
# with a speed goal, compress tries fewer time steps before any channel goes (jobs/time_step.py), and that phase
# may spend the whole search budget: every later phase (channels, bits) is judged against the original T-step
# model, so it gets exactly what the chosen T' left, measured. Time steps come first because they buy the most
# speed per point: on the reference Spikformer T'=3 ran 1.36x for 0.2 points held-out, where a whole point of
# channel pruning gave 1.13-1.18x; the phase stops at the first T' that meets the speed goal
TIME_SHARE = 1.0
# leaving tokens out (after the time steps, same phase) may spend at most this share of it, measured against the
# original, and keep as much of the held-out budget: each token count buys ~3-7% of speed, and without a reserve
# the channel search after it had nothing left (reference Spikformer, --min-speedup 1.5: T'=3 and 10 of 49
# tokens out reached 0.85 points held-out, and the channels took the file to 1.15, docs/benchmark-log.md,
# "Token pruning")
TOKEN_SHARE = 0.75


# the shares of the user's budget: this module is the only place the budget is multiplied or divided
SEARCH_SHARE_OF_BUDGET = 0.8  # with fine-tuning, the search keeps a fifth of its budget in reserve
FINETUNE_SEARCH_FACTOR = 3.0  # with fine-tuning, the search may lose this many times the budget, then recover
PSVIT_UNIFORM_SHARE = 0.5  # PSViT's uniform first step spends half the budget before the sensitivity scan


@dataclass(frozen=True)
class Points:
    """The user's accuracy budget (points on held-out data) and what each search may spend of it.

    Without fine-tuning a search may spend the whole budget: the sequential test keeps the held-out
    noise as its margin. With fine-tuning the search may lose ``finetune_search_drop`` points (default
    ``FINETUNE_SEARCH_FACTOR`` times the budget) and keeps a fixed reserve of it, since the held-out
    check then measures the fine-tuned model, whose change this split's noise does not predict."""

    user: float  # --max-accuracy-drop
    finetuned: bool = False
    finetune_search_drop: float | None = None
    prune_share: float | None = None  # of the search budget pruning spends first, when quantization follows

    @property
    def search(self) -> float:
        """Points a search on the search split may lose (the whole budget of compress or quantize)."""
        if not self.finetuned:
            return self.user
        tuned = (
            self.finetune_search_drop if self.finetune_search_drop is not None else FINETUNE_SEARCH_FACTOR * self.user
        )
        return SEARCH_SHARE_OF_BUDGET * tuned

    @property
    def pruning(self) -> float:
        """Pruning's share of the search budget: all of it, unless quantization follows and gets the rest."""
        return self.search if self.prune_share is None else self.search * self.prune_share


@dataclass(frozen=True)
class Budget:
    baseline: float  # accuracy of the starting model on the search split
    max_drop: float  # points the search may lose on the search split
    min_saving: float | None = None  # stop once this fraction of parameter bytes is saved
    objective: str = "memory"  # what the prioritized order and the stopping goal are about: memory|latency|energy
    original_latency: tuple[float, float] | None = None  # ms at batch 1 and 64 (objective latency)
    min_speedup: float | None = None  # stop once both batch sizes run this much faster
    max_latency_ms: float | None = None  # or once batch 1 runs within this many ms
    original_energy: float | None = None  # uJ per image (objective energy)
    min_energy_saving: float | None = None  # stop once this fraction of the energy is saved
    sequential: bool = False  # judge candidates with the sequential test (search/sequential.py)
    held_images: int = 0  # the held-out check's size: its noise sets the sequential test's margin (0: none)

    def test(self, search_images: int) -> SequentialTest | None:
        """The sequential test for this budget, or None for fixed slices."""
        return SequentialTest(self.max_drop, search_images, self.held_images) if self.sequential else None

    def time_steps(self) -> Budget:
        """The time phase's budget: ``TIME_SHARE`` of this one, same baseline, test and goal."""
        return replace(self, max_drop=self.max_drop * TIME_SHARE)

    def tokens(self) -> Budget:
        """What leaving tokens out may spend: ``TOKEN_SHARE`` of this budget (the time phase's)."""
        return replace(self, max_drop=self.max_drop * TOKEN_SHARE)

    def uniform_first(self) -> Budget:
        """PSViT's uniform step: ``PSVIT_UNIFORM_SHARE`` of this budget, with its test, and no speed or energy goal."""
        return Budget(
            self.baseline, self.max_drop * PSVIT_UNIFORM_SHARE, self.min_saving, sequential=self.sequential,
            held_images=self.held_images,
        )  # fmt: skip

    def left_after(self, spent: float) -> float:
        """Points a later phase may still lose once an earlier one has spent ``spent`` (the same baseline)."""
        return self.max_drop - spent

    def accepts(self, record: Measurement) -> bool:
        if record.verdict is not None:
            return record.measured and record.verdict == ACCEPTED
        return record.measured and self.baseline - record.accuracy + record.stderr <= self.max_drop

    def plausible(self, record: Measurement) -> bool:
        """A screen's estimate could still be within budget (one standard error of slack)."""
        if record.verdict is not None:
            return record.measured and record.verdict != REJECTED
        return record.measured and self.baseline - record.accuracy - record.stderr <= self.max_drop

    def memory_met(self, executor: Executor, record: Measurement | None) -> bool:
        return self.min_saving is not None and record is not None and executor.saving(record) >= self.min_saving

    def speedup(self, latency: tuple[float, float]) -> float:
        """The smaller of the batch-1 and batch-64 speedups: a goal must hold for both."""
        return min(o / n for o, n in zip(self.original_latency, latency, strict=True))

    def energy_saving(self, energy_uj: float) -> float:
        return 1.0 - energy_uj / self.original_energy

    def goal_met(self, executor: Executor, record: Measurement | None) -> bool:
        """The user's goal for the objective is reached (no goal: keep compressing while accuracy holds)."""
        if self.objective == "energy":
            if self.min_energy_saving is None or record is None or record.energy_uj is None:
                return False
            return self.energy_saving(record.energy_uj) >= self.min_energy_saving
        if self.objective != "latency":
            return self.memory_met(executor, record)
        if record is None or record.latency_ms is None:
            return False
        fast = self.min_speedup is None or self.speedup(record.latency_ms) >= self.min_speedup * SPEED_MARGIN
        quick = self.max_latency_ms is None or record.latency_ms[0] <= self.max_latency_ms / SPEED_MARGIN
        has_goal = self.min_speedup is not None or self.max_latency_ms is not None
        return has_goal and fast and quick


def token_points(points: float) -> float:
    """The held-out points leaving tokens out may use of ``points`` (``TOKEN_SHARE``)."""
    return points * TOKEN_SHARE
