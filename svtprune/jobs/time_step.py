"""compress's time phase: fewer time steps, judged like every other candidate, before any channel goes.

With a speed goal (``--objective latency``, implied by ``--min-speedup`` / ``--max-latency-ms``) and
``--timesteps auto``, or with ``--timesteps N``: each candidate is the original cut to T' steps
(``T-1, T-2, ...``; spiking/timesteps.py, exact for the steps it keeps), with the layers before the
first neuron run once per image where that is measured faster (spiking/compute_once.py, exact). A
candidate is judged with the sequential test against the original on the search split, on the
time phase's share of the budget (search/budget.py ``TIME_SHARE``), and timed at batch 1 and 64
as the channel search times its candidates. With re-fits on (``--reconstruct``, the default) each
candidate first has its head re-fitted, without labels, to the original's logits on the search split's
calibration images (recover/time_cut.py; cross-validated, and only where it agrees better), and is
judged on the other search images, as the channel search judges. The phase keeps the smallest accepted T' and stops at
the first rejection or at the first T' that meets the speed goal. Every candidate is then measured
on the held-out split for the report; the choice steps back towards T while its held-out drop
already exceeds the user's whole budget. The channel search runs on the chosen model, judged
against the original T-step model, so it spends exactly what the time phase left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from svtprune.errors import UserError
from svtprune.evaluate import top1
from svtprune.graph.io import param_bytes
from svtprune.jobs.common import Say, Start, judged_part
from svtprune.jobs.options import CompressOptions
from svtprune.jobs.token_step import META_KEY, check_token_count, token_ranking
from svtprune.recover.time_cut import changed_layers, refit_time_cut
from svtprune.runtime import PairedTiming, balanced_speedup, logits_of, make_session
from svtprune.search.budget import TIME_SHARE, Budget, token_points
from svtprune.search.records import Measurement
from svtprune.search.sequential import ACCEPTED, hits_on, judge
from svtprune.spiking.compute_once import NOTHING, compute_once
from svtprune.spiking.time_axis import TimeAxis, find_time_axis
from svtprune.spiking.time_check import spikes_differ
from svtprune.spiking.timesteps import shorten
from svtprune.spiking.tokens import drop_tokens, find_token_axis

# calls of each model, interleaved, deciding whether the stem-once rewrite is faster, at batch 1 and 64: it must be
# faster at both, since the Tile that repeats the stem's output grows with the batch (paired, the reference SDT ran
# 1.04-1.06x at batch 1 and 1.10-1.21x at 64; an unpaired 5-call timing had shown 0.82x at 64); timed A B B A
# (runtime.balanced_speedup), since calls alternated one for one read a model 1.04-1.11x faster than itself
PAIRED_ROUNDS = {1: 30, 64: 8}


@dataclass
class TimeChoice:
    """What the time phase settled on: the channel search's starting model and the report's section."""

    model: onnx.ModelProto  # the original at ``steps`` steps (and its stem once when ``stem_once``)
    steps: int
    original_steps: int
    stem_once: str | bool  # the rewrite's line when applied, else False
    held_accuracy: float  # of ``model`` on the held-out split (the original's when the rewrite is exact)
    section: dict = field(default_factory=dict)
    original_latency: tuple[float, float] | None = None  # the original's timing (speed goal), reused by the search
    recovery: dict | None = None  # the head re-fit after the cut (``recover.time_cut``), when it changed the model
    tokens: dict = field(default_factory=dict)  # the tokens left out of the blocks (jobs/token_step.py's meta)

    def meta(self) -> dict:
        """The plan's record of the time edits (``verify`` rebuilds its oracle from it; a recovery's layers are
        checked as re-fitted ones)."""
        meta = {"timesteps": self.steps, "timesteps_original": self.original_steps, "stem_once": self.stem_once}
        return {**meta, **self.tokens, **({"time_recovery": self.recovery} if self.recovery else {})}


def wants_time_steps(options: CompressOptions) -> bool:
    """Whether compress looks at the time axis (and the tokens) at all: asked for (``--timesteps N``,
    ``--drop-tokens K``), or auto with a speed goal."""
    if isinstance(options.drop_tokens, int):
        return True
    if options.timesteps == "keep":
        return False
    return options.timesteps != "auto" or options.goal.objective == "latency"


def check_forced(original: onnx.ModelProto, options: CompressOptions) -> None:
    """``--timesteps N`` and ``--drop-tokens K`` checked against the model before any data is read (exit 2 in
    seconds, not after a pass). Tokens are left out in the time phase, so they need a time axis too."""
    if isinstance(options.timesteps, int):
        _forced_axis(original, options.timesteps)
    if isinstance(options.drop_tokens, int):
        tokens, time_axis = find_token_axis(original), find_time_axis(original)
        reason = tokens if isinstance(tokens, str) else time_axis if isinstance(time_axis, str) else None
        if reason is not None:
            raise UserError(f"no tokens to leave out: {reason}", "drop_tokens")
        check_token_count(options.drop_tokens, tokens)  # type: ignore[arg-type]  # a TokenAxis once no reason


def _forced_axis(original: onnx.ModelProto, steps: int) -> TimeAxis:
    axis = find_time_axis(original)
    if isinstance(axis, str):
        raise UserError(f"no time axis to cut: {axis}", "timesteps")
    if not 1 <= steps < axis.steps:
        raise UserError(f"must be in [1, {axis.steps - 1}]: the model runs T={axis.steps}, got {steps}", "timesteps")
    return axis


def time_step(
    original: onnx.ModelProto, start: Start, budget: Budget, options: CompressOptions, say: Say
) -> TimeChoice | None:
    """The time phase (None when it does not run or the graph has no time axis it can follow).

    ``budget``: the search budget before any share of it goes to pruning or bits, with the original's timing."""
    if not wants_time_steps(options):
        return None
    forced = None if options.timesteps == "auto" else int(options.timesteps)
    axis = find_time_axis(original) if forced is None else _forced_axis(original, forced)
    if isinstance(axis, str):
        say(f"time steps kept: {axis}")
        return None
    say("timing the stem run once per image")
    once, line, speedup = _stem_once(original, axis)
    calibration = options.prune.calibration_images if options.prune.reconstruct else None
    phase = _Phase(original, axis, once is not None, start, budget.time_steps(), calibration)
    tried = phase.search(forced, say) if options.timesteps != "keep" else []
    # with fine-tuning next, the held-out check is of the fine-tuned model: before it, the search's allowance holds
    allowed = options.max_accuracy_drop if options.finetune.finetune_data is None else options.points.search
    chosen = phase.held_out_choice(tried, start, allowed, forced is not None, say)
    if chosen is None and once is None:
        model, held = original, start.baseline["held"]
    elif chosen is None:
        model, held = once, start.baseline["held"]  # exact: the original's outputs bit for bit
    else:
        model, held = phase.models[chosen.steps], chosen.held
    steps = axis.steps if chosen is None else chosen.steps
    section = {
        "original": axis.steps,
        "chosen": steps,
        "stem_once": line if once is not None else False,
        "stem_once_speedup_paired": speedup,
        "stem_once_note": None if once is not None else line,
        "share_of_budget": TIME_SHARE,
        "search_budget_points": round(phase.budget.max_drop, 3),
        "mode": "forced" if forced is not None else "searched",
        "candidates": [t.entry(budget) for t in tried],
        "reason": phase.reason,
        "recovery": phase.recovery[steps]["what"] if chosen is not None else "none: every time step kept",
    }
    recovery = phase.recovery[steps] if chosen is not None and phase.recovery[steps]["layers"] else None
    choice = TimeChoice(model, steps, axis.steps, section["stem_once"], held, section, budget.original_latency)
    choice.recovery = recovery
    unmet = options.goal.objective == "latency" and "speed goal" not in phase.reason
    if isinstance(options.drop_tokens, int) or (options.drop_tokens == "auto" and unmet):
        leave_tokens_out(choice, phase, start, allowed, options.drop_tokens, say)
    return choice


def _stem_once(original: onnx.ModelProto, axis: TimeAxis) -> tuple[onnx.ModelProto | None, str, dict | None]:
    """The stem-once rewrite at T, its line and its paired speed-ups at batch 1 and 64; None when nothing moves
    or it is not faster at both."""
    once, line = compute_once(original, axis)
    if line == NOTHING or once is original:
        return None, line, None
    sessions = [make_session(original), make_session(once)]
    speedups = {
        f"b{batch}": round(balanced_speedup(sessions, batch, rounds), 3) for batch, rounds in PAIRED_ROUNDS.items()
    }
    if min(speedups.values()) <= 1.0:
        return None, f"not applied: measured {speedups['b1']}x at batch 1, {speedups['b64']}x at 64 ({line})", speedups
    return once, line, speedups


@dataclass
class _Tried:
    steps: int
    record: Measurement
    held: float | None = None
    recovery: str = ""

    def entry(self, budget: Budget) -> dict:
        r = self.record
        entry = {
            "timesteps": self.steps,
            "recovery": self.recovery,
            "accuracy_search": round(r.accuracy, 3),
            "images": r.images,
            "stderr": round(r.stderr, 3),
            "verdict": r.verdict,
            "accuracy_held": None if self.held is None else round(self.held, 3),
        }
        if r.latency_ms is not None:
            entry.update(latency_ms_b1=round(r.latency_ms[0], 3), latency_ms_b64=round(r.latency_ms[1], 2))
            entry["speedup"] = round(budget.speedup(r.latency_ms), 3) if budget.original_latency else None
        return entry


class _Phase:
    """The candidates T-1, T-2, ... judged on the search split against the original."""

    def __init__(
        self,
        original: onnx.ModelProto,
        axis: TimeAxis,
        once: bool,
        start: Start,
        budget: Budget,
        calibration: int | None,
    ) -> None:
        self.original, self.axis, self.once, self.start, self.budget = original, axis, once, start, budget
        # each accepted T' is timed against the original, calls interleaved (runtime.PairedTiming)
        self.timing = PairedTiming(original, budget.original_latency) if budget.original_latency else None
        self.models: dict[int, onnx.ModelProto] = {}
        self.recovery: dict[int, dict] = {}  # per T': what the re-fit did and the layers it changed
        self.reason = ""
        self.judged, self.target, logits = judged_part(start.search, start, calibration)
        separate = calibration is not None and len(self.judged) < len(start.search)  # the re-fit's images apart
        self.calibration = (start.search.x[:calibration], start.logits["search"][:calibration]) if separate else None
        self.reference = (logits.argmax(axis=1) == self.target).astype(np.float64)
        self.order = np.random.default_rng(0).permutation(len(self.judged))
        self.test = budget.test(len(self.judged))

    def build(self, steps: int) -> tuple[onnx.ModelProto, str | None]:
        """The original at ``steps`` steps (stem once when that was faster), and why not when the cut is not exact."""
        if self.once:
            model, _ = compute_once(self.original, self.axis, steps)
        else:
            model = shorten(self.original, self.axis, steps)
        problem = spikes_differ(self.original, model, steps)
        return (model, problem) if problem is not None else (self.recovered(steps, model), None)

    def recovered(self, steps: int, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` with its head re-fitted on the calibration images (no branch: the graph keeps its nodes)."""
        if self.calibration is None:
            self.recovery[steps] = {"what": "off (--no-reconstruct, or too few search images)", "layers": []}
            return model
        x, logits = self.calibration
        result = refit_time_cut(self.original, model, x, logits, membrane=False, axis=self.axis)
        self.recovery[steps] = {"what": result.what, "layers": changed_layers(model, result.model)}
        return result.model

    def judge(self, label: str, model: onnx.ModelProto, budget: Budget | None = None) -> Measurement:
        """``model`` judged by the sequential test against the original (on ``budget``, default the phase's)."""
        started, search = time.perf_counter(), self.judged
        test = self.test if budget is None else budget.test(len(self.judged))
        session = make_session(model)
        known: dict[int, bool] = {}

        def correct(rows: np.ndarray) -> np.ndarray:
            return hits_on(known, rows, lambda r: logits_of(session, search.x[r]).argmax(axis=1) == self.target[r])

        estimate, verdict = judge(correct, self.reference, self.order, test)
        latency = self.timing.latency(model) if verdict == ACCEPTED and self.timing is not None else None
        accuracy = 100.0 * float(self.reference.mean()) - estimate.drop
        return Measurement(
            label, accuracy, param_bytes(model), time.perf_counter() - started, images=estimate.images,
            stderr=estimate.stderr, latency_ms=latency, verdict=verdict,
        )  # fmt: skip

    def search(self, forced: int | None, say: Say) -> list[_Tried]:
        """Judge T-1, T-2, ... (or only ``forced``) until one is rejected or meets the speed goal."""
        tried: list[_Tried] = []
        for steps in [forced] if forced is not None else range(self.axis.steps - 1, 0, -1):
            say(f"judging {steps} of {self.axis.steps} time steps")
            model, problem = self.build(steps)
            if problem is not None:
                self.reason = f"the cut to {steps} steps is not exact on this graph ({problem})"
                if forced is not None:
                    raise UserError(f"cannot cut the time axis of this graph exactly ({problem})", "timesteps")
                break
            self.models[steps] = model
            tried.append(_Tried(steps, self.judge(f"T'={steps}", model), recovery=self.recovery[steps]["what"]))
            record = tried[-1].record
            if forced is None and record.verdict != ACCEPTED:
                self.reason = f"{steps} steps rejected by the sequential test within {self.budget.max_drop:.2f} points"
                break
            if forced is None and self.budget.goal_met(None, record):  # type: ignore[arg-type]  # latency needs no executor
                self.reason = f"{steps} steps meet the speed goal"
                break
        else:
            self.reason = self.reason or ("asked for" if forced is not None else "every step count was accepted")
        return tried

    def held_out_choice(
        self, tried: list[_Tried], start: Start, max_drop: float, forced: bool, say: Say
    ) -> _Tried | None:
        """Every judged candidate measured held-out (for the report); the smallest accepted T' whose held-out drop
        is within the whole budget (``forced``: the one asked for, whatever it measures)."""
        holds = start.holds(max_drop)
        for t in tried:
            t.held = top1(logits_of(make_session(self.models[t.steps]), start.held.x), start.targets["held"])
        if forced:
            return tried[0] if tried else None
        accepted = [t for t in tried if t.record.verdict == ACCEPTED]
        for t in sorted(accepted, key=lambda t: t.steps):
            if holds(t.held):
                return t
            say(f"held-out drop too large at {t.steps} time steps: stepping back")
        return None


TOKEN_SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)  # of the blocks' tokens left out, tried in turn


def leave_tokens_out(
    choice: TimeChoice, phase: _Phase, start: Start, allowed: float, forced: int | str, say: Say
) -> None:
    """Tokens left out of the chosen model's blocks, least important first (jobs/token_step.py), in place.

    Each candidate is judged against the original on ``TOKEN_SHARE`` of the time phase's budget (and of
    ``allowed`` held-out), like a time step count, and timed A B B A against the last one kept: the phase
    stops at the first that is rejected, over that share held-out, not measured faster at batch 1 and 64
    (its accuracy would buy no speed), or meeting the speed goal."""
    axis = find_token_axis(choice.model)
    if isinstance(axis, str):
        choice.section["tokens"] = {"kept": "all", "note": axis}
        return
    counts = [forced] if isinstance(forced, int) else sorted({max(1, round(s * axis.count)) for s in TOKEN_SHARES})
    say(f"ranking the {axis.count} tokens")
    images = phase.calibration[0] if phase.calibration is not None else phase.judged.x
    order = token_ranking(choice.model, axis, images)
    tried, holds, chosen, last = [], start.holds(token_points(allowed)), None, choice.model
    for count in counts:
        say(f"judging {axis.count - count} of {axis.count} tokens")
        model = drop_tokens(choice.model, axis, sorted(order[count:]))
        entry, record = _judged_tokens(phase, start, count, model)
        tried.append(entry)
        if isinstance(forced, int):
            chosen = (count, model, entry["accuracy_held"])
            break
        if record.verdict != ACCEPTED or not holds(entry["accuracy_held"]):
            break
        entry["speedup_over_last"] = faster = _faster(last, model)
        if min(faster.values()) <= 1.0:
            break
        chosen, last = (count, model, entry["accuracy_held"]), model
        if phase.budget.goal_met(None, record):  # type: ignore[arg-type]  # latency needs no executor
            break
    choice.section["tokens"] = {"total": axis.count, "grid": list(axis.grid), "candidates": tried,
                                "left_out": chosen[0] if chosen else 0}  # fmt: skip
    if chosen is not None:
        count, choice.model, choice.held_accuracy = chosen
        choice.tokens = {META_KEY: sorted(order[count:]), "tokens": axis.count, "token_grid": list(axis.grid)}


def _judged_tokens(phase: _Phase, start: Start, count: int, model: onnx.ModelProto) -> tuple[dict, Measurement]:
    """A token candidate judged on the search split and measured held-out: its report entry and record."""
    record = phase.judge(f"{count} tokens out", model, phase.budget.tokens())
    held = top1(logits_of(make_session(model), start.held.x), start.targets["held"])
    entry = {"left_out": count, "verdict": record.verdict, "accuracy_search": round(record.accuracy, 3),
             "accuracy_held": round(held, 3), "latency_ms_b1": (record.latency_ms or [None])[0]}  # fmt: skip
    return entry, record


def _faster(before: onnx.ModelProto, after: onnx.ModelProto) -> dict[str, float]:
    """``after``'s speed-up over ``before`` at batch 1 and 64, timed A B B A (as the exact rewrites are)."""
    sessions = [make_session(before), make_session(after)]
    return {f"b{b}": round(balanced_speedup(sessions, b, rounds), 3) for b, rounds in PAIRED_ROUNDS.items()}
