"""How far a long phase has got and how long it has left, from the totals its progress messages carry.

The search's phases send ``progress.Step`` messages (a ``str`` with ``phase`` and ``total``);
read here by attribute only, so any plain message works and simply shows no count.
"""

from __future__ import annotations


class Steps:
    """How far the current phase has got: '5 of ~12 prioritized steps, about 0:00:40 left' (``Step`` messages).

    A phase starts at its first message; the estimate (elapsed over steps done, times the steps
    left) is shown from the third step on, once two steps have been timed. Totals marked ``~``
    are upper bounds (a scan or a bisection can stop early), so the estimate leans long.
    """

    def __init__(self) -> None:
        self.phase: str | None = None
        self.count, self.started = 0, 0.0

    def text(self, message: str, now: float, compact: bool = False) -> str:
        """The phase's count and estimate for ``message`` (empty for a message that carries no total);
        ``compact`` for a live bar's narrow column: '5/~12, 0:00:40 left'."""
        phase, total = getattr(message, "phase", None), getattr(message, "total", None)
        if phase is None or not total:
            return ""
        if phase != self.phase:
            self.phase, self.count, self.started = phase, 0, now
        self.count += 1
        if self.count > total:
            return f"{self.count}" if compact else f"{self.count} {phase} steps"
        done, bound = self.count - 1, f"{'' if getattr(message, 'exact', False) else '~'}{total}"
        text = f"{self.count}/{bound}" if compact else f"{self.count} of {bound} {phase} steps"
        if done >= 2:
            left = clock((now - self.started) / done * (total - done))
            text += f", {left} left" if compact else f", about {left} left"
        return text


def clock(seconds: float) -> str:
    """'0:03:10'."""
    whole = max(0, round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
