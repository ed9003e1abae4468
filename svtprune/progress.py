"""Progress: the one callback type long work reports through (``Say``), and steps that know their phase's length.

Every job, search and training loop takes a ``Say`` and calls it with one line of text per step;
the CLI shows it on stderr (cli/render.py), the library's callers may pass any callable.

A ``Step`` is a plain ``str`` to every progress callback that only reads messages (tests, the
library's callers); the CLI's progress (cli/render.py) reads ``phase`` and ``total`` to show
"step 5 of ~12, about 0:00:40 left". Totals are known before a phase starts: exact for the
quantization drift scan, an upper bound where a scan or a bisection can stop early. Passing one
changes nothing the search does: the totals are counted beside it.
"""

from __future__ import annotations

from collections.abc import Callable

Say = Callable[[str], None]  # one line of text per step of long work


class Step(str):
    """A progress message of one step in ``phase``, which has ``total`` steps (at most, unless ``exact``)."""

    phase: str
    total: int
    exact: bool

    def __new__(cls, message: str, phase: str, total: int, exact: bool = False) -> Step:
        step = super().__new__(cls, message)
        step.phase, step.total, step.exact = phase, total, exact
        return step


class Phase:
    """A phase's steps as they are sent: each message's total is the steps sent so far plus those that may be left.

    A scan that stops early, or a bisection that ends, lowers what is left; the total each message
    carries follows, so the time estimate shrinks with it instead of leaning on the first bound.
    """

    def __init__(self, progress: Say, name: str) -> None:
        self.progress, self.name, self.sent = progress, name, 0

    def bounded(self, left: int) -> Say:
        """A callback for the next steps, of which at most ``left`` (these included) remain in the phase."""
        total = self.sent + left

        def say(message: str) -> None:
            self.sent += 1
            self.progress(Step(message, self.name, max(total, self.sent)))

        return say


def bisection_steps(rates: int) -> int:
    """The most measurements ``_highest_passing`` takes over ``rates`` rates: the top one, then bisection."""
    return 0 if rates == 0 else 1 + (rates - 1).bit_length()
