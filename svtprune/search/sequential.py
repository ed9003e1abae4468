"""The sequential test: judge a candidate on growing slices of the search split, stop once it is clear.

Every candidate is compared with the original model on the same images (paired), so the noise
is that of the few predictions the pruning flips, not of the whole accuracy. Looks double from
``FIRST_LOOK`` images up to the whole split; an interim look decides only when the estimate is
``Z_LOOK`` standard errors from the acceptance line (one-sided 2.3% per look). A look at
``EARLY_LOOK`` images before them only rejects, at ``Z_EARLY`` standard errors. The acceptance
line itself is the budget less a margin taken from the measured noise: ``Z_MARGIN`` standard
errors of the difference between this split's estimate and the held-out split's measurement,
so a step the search keeps is expected to pass the held-out check (84% at one standard error).
An estimated gain counts as no change: a candidate that flips many predictions is not accepted
because its flips happened to favour this split (measured on the reference Spikformer: such
steps, accepted on the search split, lost 2-3 points on the held-out split).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FIRST_LOOK = 128  # images at the first look that may accept
Z_LOOK = 2.0  # standard errors an interim look needs to decide either way
# one earlier look that can only reject, and only beyond doubt: at a user's size (a 9.3M-parameter
# Spikformer, random weights) every scan step moved 15-88% of the predictions, which 32 images show
# as well as 128 do, at a quarter of the images; one-sided 0.13%, so it adds almost no wrong rejection
EARLY_LOOK = 32
Z_EARLY = 3.0
Z_MARGIN = 1.0  # standard errors of (held-out - search) the acceptance line keeps below the budget

ACCEPTED, REJECTED, PLAUSIBLE, OPEN = "accepted", "rejected", "plausible", "open"


@dataclass(frozen=True)
class Estimate:
    """A candidate's paired drop from the original on the first ``images`` of the look order."""

    drop: float  # points: 100 x mean(original correct - candidate correct)
    spread: float  # per-image standard deviation of that difference (0..1), one pseudo-flip included
    images: int

    @property
    def stderr(self) -> float:
        return 100.0 * self.spread / math.sqrt(self.images)


def paired_estimate(change: np.ndarray) -> Estimate:
    """``change``: candidate correct - original correct per image (-1, 0 or +1).

    The spread counts one extra flip, so that a slice where nothing flipped is not taken as
    proof that nothing ever will (128 unchanged images still leave about 1% of flips possible).
    """
    images = len(change)
    mean = float(change.mean())
    second = (float(np.count_nonzero(change)) + 1.0) / (images + 1.0)
    return Estimate(-100.0 * mean, math.sqrt(max(second - mean * mean, 0.0)), images)


def looks(total: int, first: int = FIRST_LOOK) -> list[int]:
    """Slice sizes of the test: the early look, ``first``, doubling, and the whole ``total`` last."""
    sizes, size = [EARLY_LOOK] if EARLY_LOOK < first < total else [], first
    while size < total:
        sizes.append(size)
        size *= 2
    return [*sizes, total]


@dataclass(frozen=True)
class SequentialTest:
    """The decision rule for one budget; ``held_images`` 0 leaves the held-out noise out of the margin."""

    max_drop: float  # points the candidate may lose against the original
    search_images: int  # images of a full look
    held_images: int = 0  # images the held-out check will measure the choice on

    def line(self, estimate: Estimate) -> float:
        """The acceptance line: the budget less the noise between a full look and the held-out check."""
        search_se = estimate.spread / math.sqrt(self.search_images)
        held_se = estimate.spread / math.sqrt(self.held_images) if self.held_images else 0.0
        noise = math.sqrt(search_se**2 + held_se**2) if self.held_images else 0.0
        return self.max_drop - 100.0 * Z_MARGIN * noise

    def verdict(self, estimate: Estimate, last: bool, screen: bool = False) -> str:
        """ACCEPTED / REJECTED, or OPEN when another look is needed.

        At the last look of a full test the estimate is compared with the line itself; the last
        look of a screen (capped slices) only rejects what is clearly outside, and calls the rest
        PLAUSIBLE: the full test that follows decides.
        """
        line = self.line(estimate)
        if estimate.images < FIRST_LOOK and not last:  # the early look: broken beyond doubt, or look again
            return REJECTED if estimate.drop - Z_EARLY * estimate.stderr > line else OPEN
        if estimate.drop - Z_LOOK * estimate.stderr > line:
            return REJECTED
        kept = max(estimate.drop, 0.0)  # an apparent gain is noise: removing channels is not taken to help
        if kept + Z_LOOK * estimate.stderr <= line:
            return ACCEPTED
        if not last:
            return OPEN
        if screen:
            return REJECTED if estimate.drop - estimate.stderr > line else PLAUSIBLE
        return ACCEPTED if kept <= line else REJECTED


def hits_on(known: dict[int, bool], wanted: np.ndarray, hits_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Per image of ``wanted``, whether the candidate is right; ``hits_of`` runs only on images ``known`` lacks."""
    missing = np.setdiff1d(wanted, np.fromiter(known, dtype=np.int64, count=len(known)))
    if len(missing):
        known.update(zip(missing.tolist(), hits_of(missing).tolist(), strict=True))
    return np.array([known[i] for i in wanted.tolist()], dtype=np.float64)


def judge(
    correct_on: Callable[[np.ndarray], np.ndarray],
    reference: np.ndarray,
    order: np.ndarray,
    test: SequentialTest,
    cap: int | None = None,
) -> tuple[Estimate, str]:
    """The estimate and verdict at the first look that decides; ``cap`` ends the looks early (a screen)."""
    total = len(order)
    cap = total if cap is None else min(cap, total)
    sizes = looks(cap)
    for size in sizes:
        rows = order[:size]
        estimate = paired_estimate(correct_on(rows) - reference[rows])
        verdict = test.verdict(estimate, last=size == sizes[-1], screen=cap < total)
        if verdict != OPEN:
            break
    return estimate, verdict
