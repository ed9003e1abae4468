"""Typed options of the search jobs, validated once, when they are made.

Each group of options is one frozen dataclass whose fields carry the names the Python API and
the command line use (``finetune_epochs`` is the ``--finetune-epochs`` flag), so an error names
the flag the user typed. The CLI builds each command's groups directly; the Python API may also pass
the fields as keywords (``compress(..., bits="8,4", finetune_epochs=3)``), sorted into groups here.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from svtprune.deploy import check_format
from svtprune.errors import UserError
from svtprune.extras import require_torch
from svtprune.search.budget import Points

PRUNE_SHARE_WITH_QUANTIZATION = 0.5  # of the search budget, when quantization follows pruning
POLICY_NAMES = ("uniform", "psvit", "primesvt")
OBJECTIVES = ("memory", "latency", "energy")
QUANT_SEARCHES = ("greedy", "beam", "exhaustive")
LAYOUTS = ("weight-only", "fastest")  # how quantized weights are laid out (quantization/layout_choice.py)
EXECUTORS = ("process", "ray")  # where --workers run (search/parallel.py)
# A search costs a few passes over the images it splits, so the cost of 50,000 is 12x that of 4,000,
# while a 2,000-image held-out half already resolves a drop to about half a point (paired, 5% of
# predictions flipped); a seeded sample of this many is split unless the user asks for more.
DEFAULT_MAX_IMAGES = 4000
MIN_SPLIT_IMAGES = 100  # fewer leave the search half too few images to tell a point of accuracy
BIT_WIDTHS = (8, 4, 2)  # what the exporter can store (int8, int4, int2 initializers)


def check_number(value: Any, option: str, low: float | None = None, high: float | None = None, **open_: bool) -> None:
    """A finite number within [low, high] (``low_open``/``high_open`` exclude the end); NaN never passes."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"must be a finite number, got {value!r}", option=option)
    below = low is not None and (value <= low if open_.get("low_open") else value < low)
    above = high is not None and (value >= high if open_.get("high_open") else value > high)
    if below or above:
        raise UserError(f"must be {_span(low, high, open_)}, got {value}", option=option)


def _span(low: float | None, high: float | None, open_: dict[str, bool]) -> str:
    if high is None:
        return f"{'>' if open_.get('low_open') else '>='} {low:g}"
    if low is None:
        return f"{'<' if open_.get('high_open') else '<='} {high:g}"
    left, right = "(" if open_.get("low_open") else "[", ")" if open_.get("high_open") else "]"
    return f"in {left}{low:g}, {high:g}{right}"


def check_choice(value: str, option: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"unknown value {value!r}; choose one of {', '.join(choices)}", option=option)


def parse_bits(text: str | tuple[int, ...], option: str = "bits") -> tuple[int, ...]:
    """'8,4,2' -> (8, 4, 2); rejects widths the exporter cannot store."""
    try:
        widths = tuple(int(b) for b in text.split(",")) if isinstance(text, str) else tuple(int(b) for b in text)
    except (TypeError, ValueError):
        raise UserError(f"must be a comma-separated list such as 8,4,2, not {text!r}", option=option) from None
    if not widths or any(b not in BIT_WIDTHS for b in widths):
        raise UserError(f"must be chosen from {', '.join(map(str, BIT_WIDTHS))}; got {text}", option=option)
    return tuple(sorted(set(widths), reverse=True))


@dataclass(frozen=True)
class SplitOptions:
    """How the data is split into the search and the held-out halves."""

    calib: int | None = None  # search-split size (default half the data used)
    seed: int = 0
    max_images: int = DEFAULT_MAX_IMAGES  # a seeded sample of at most this many images is split; 0: all

    def __post_init__(self) -> None:
        if self.calib is not None:
            check_number(self.calib, "calib", low=1)
        check_number(self.seed, "seed", low=0)
        check_number(self.max_images, "max_images", low=0)
        if 0 < self.max_images < MIN_SPLIT_IMAGES:
            raise UserError(
                f"must be 0 (every image) or at least {MIN_SPLIT_IMAGES}, got {self.max_images}", option="max_images"
            )


@dataclass(frozen=True)
class FinetuneOptions:
    """Fine-tuning after the search, on training images (never the evaluation data)."""

    finetune_data: Path | None = None
    finetune_epochs: int = 1
    finetune_lr: float = 3e-4
    finetune_search_drop: float | None = None  # points the search may lose when fine-tuning follows

    def __post_init__(self) -> None:
        if self.finetune_data is None and self.finetune_search_drop is not None:
            raise UserError("needs finetune_data", option="finetune_search_drop")
        if self.finetune_data is None:
            return
        require_torch(option="finetune_data")  # before the search, not after it
        check_number(self.finetune_epochs, "finetune_epochs", low=1)
        check_number(self.finetune_lr, "finetune_lr", low=0, low_open=True)
        if self.finetune_search_drop is not None:
            check_number(self.finetune_search_drop, "finetune_search_drop", low=0)


@dataclass(frozen=True)
class QuantOptions:
    """The bit-width search (AQ4SViT) and how weights are stored."""

    search: str = "greedy"
    bits: tuple[int, ...] = BIT_WIDTHS
    beam_width: int = 4
    rounding: str | None = None  # None: the commands' default (gptq)
    scale_codes: bool = True
    int8_biases: bool = True
    symmetric: bool = True
    block_size: int = 0

    def __post_init__(self) -> None:
        check_choice(self.search, "search", QUANT_SEARCHES)
        object.__setattr__(self, "bits", parse_bits(self.bits))
        check_number(self.beam_width, "beam_width", low=1)
        check_number(self.block_size, "block_size", low=0)
        if self.rounding is not None:  # a typo should fail now, not after a search
            from svtprune.quantization import QuantScheme

            QuantScheme(rounding=self.rounding)


@dataclass(frozen=True)
class PruneOptions:
    """The pruning search: policy, channel criterion, least-squares recovery."""

    method: str = "primesvt"
    importance: str = "l2"
    reconstruct: bool = True
    calibration_images: int = 128

    def __post_init__(self) -> None:
        from svtprune.importance import CRITERIA, DATA_DRIVEN

        check_choice(self.method, "method", POLICY_NAMES)
        check_choice(self.importance, "importance", (*CRITERIA, *DATA_DRIVEN))
        check_number(self.calibration_images, "calibration_images", low=1)


@dataclass(frozen=True)
class GoalOptions:
    """What the search optimises and when it may stop early.

    ``objective`` None: the one the goals name (latency for a speed or latency goal, energy for an
    energy goal), else memory; a speed goal needs no second flag to be searched for."""

    objective: str | None = None
    min_memory_saving: float | None = None
    min_speedup: float | None = None
    max_latency_ms: float | None = None
    min_energy_saving: float | None = None

    def __post_init__(self) -> None:
        if self.objective is None:
            object.__setattr__(self, "objective", self.implied_objective())
        check_choice(self.objective, "objective", OBJECTIVES)
        if self.min_memory_saving is not None:
            check_number(self.min_memory_saving, "min_memory_saving", 0, 1, low_open=True, high_open=True)
        if self.objective != "latency" and (self.min_speedup is not None or self.max_latency_ms is not None):
            option = "min_speedup" if self.min_speedup is not None else "max_latency_ms"
            raise UserError("needs objective 'latency'", option=option)
        if self.objective != "energy" and self.min_energy_saving is not None:
            raise UserError("needs objective 'energy'", option="min_energy_saving")
        if self.min_energy_saving is not None:
            check_number(self.min_energy_saving, "min_energy_saving", 0, 1, low_open=True, high_open=True)
        if self.min_speedup is not None:
            check_number(self.min_speedup, "min_speedup", low=1, low_open=True)
        if self.max_latency_ms is not None:
            check_number(self.max_latency_ms, "max_latency_ms", low=0, low_open=True)

    def implied_objective(self) -> str:
        speed = self.min_speedup is not None or self.max_latency_ms is not None
        if speed and self.min_energy_saving is not None:
            raise UserError("a speed goal and an energy goal order the search differently: choose one", "objective")
        return "latency" if speed else "energy" if self.min_energy_saving is not None else "memory"


@dataclass(frozen=True)
class ParallelOptions:
    """Where the search's independent candidates are measured: this process, a process pool, Ray actors."""

    workers: int = 1  # processes (or Ray actors) measuring candidates side by side, one ORT thread each
    executor: str = "process"  # "ray": the workers are actors on a Ray cluster (or a local Ray instance)
    ray_address: str | None = None  # the cluster, e.g. ray://head:10001; None: a local instance

    def __post_init__(self) -> None:
        check_number(self.workers, "workers", low=1)
        if not isinstance(self.workers, int):
            raise UserError(f"must be a whole number, got {self.workers!r}", option="workers")
        check_choice(self.executor, "executor", EXECUTORS)
        if self.ray_address is not None and self.executor != "ray":
            raise UserError("needs executor 'ray'", option="ray_address")
        if self.executor == "ray" and importlib.util.find_spec("ray") is None:
            raise UserError("needs Ray, which is not installed: pip install 'svtprune[ray]'", option="executor")


@dataclass(frozen=True)
class CompressOptions:
    max_accuracy_drop: float = 1.0
    prune: PruneOptions = field(default_factory=PruneOptions)
    goal: GoalOptions = field(default_factory=GoalOptions)
    quantize: QuantOptions | None = None  # None: pruning only
    quantize_if_needed: bool = False  # ("auto") quantize only where pruning alone leaves the memory goal unmet
    prune_share: float = PRUNE_SHARE_WITH_QUANTIZATION
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    split: SplitOptions = field(default_factory=SplitOptions)
    parallel: ParallelOptions = field(default_factory=ParallelOptions)
    force: bool = False
    format: str = "onnx"  # "ort": also the .ort file and its operator config (deploy.py)
    preprocess: Any = None  # image folders' decoding: a spec string, a JSON file or a data_folder.Preprocess
    time_limit: float | None = None  # seconds the pruning search may take; then the best step so far is kept
    layout: str = "fastest"  # of quantized weights, as QuantizeOptions.layout (only when quantization runs)
    # "auto": fewer time steps searched with a speed goal (jobs/time_step.py); "keep": never; N: run N steps
    timesteps: str | int = "auto"
    # "auto": with a speed goal still unmet after the time steps, tokens left out of the blocks (jobs/time_step.py)
    drop_tokens: str | int = "auto"

    def __post_init__(self) -> None:
        check_number(self.max_accuracy_drop, "max_accuracy_drop", low=0)
        check_choice(self.layout, "layout", LAYOUTS)
        check_format(self.format)
        check_preprocess(self)
        object.__setattr__(self, "timesteps", parse_timesteps(self.timesteps))
        object.__setattr__(self, "drop_tokens", parse_mode(self.drop_tokens, "drop_tokens", "tokens"))
        if self.time_limit is not None:
            check_number(self.time_limit, "time_limit", low=0, low_open=True)
        check_number(self.prune_share, "prune_share", 0, 1, low_open=True)
        if self.goal.objective != "memory" and self.prune.method != "primesvt":
            raise UserError(f"{self.goal.objective} orders the prioritized policy: use method 'primesvt'", "objective")
        side_by_side = self.parallel.workers > 1 or self.parallel.executor == "ray"
        if self.goal.objective == "latency" and side_by_side:  # candidates timed side by side slow each other
            raise UserError("cannot be combined with objective 'latency', which times candidates", "workers")

    @property
    def points(self) -> Points:
        """The accuracy budget and its shares (search/budget.py owns the arithmetic)."""
        tune = self.finetune
        share = self.prune_share if self.quantize is not None else None
        return Points(self.max_accuracy_drop, tune.finetune_data is not None, tune.finetune_search_drop, share)

    @staticmethod
    def quantization(choice: str, min_memory_saving: float | None, quant: QuantOptions | None = None) -> dict[str, Any]:
        """``quantize`` and ``quantize_if_needed`` from the ``--quantize`` choice and the bit-search options.

        ``choice``: "none", a search ("greedy", "beam", "exhaustive"), or "auto": greedy after pruning,
        planned only when a memory goal is asked for and run only where pruning alone misses it.
        """
        check_choice(choice, "quantize", ("auto", "none", *QUANT_SEARCHES))
        auto = choice == "auto"
        search = ("greedy" if min_memory_saving is not None else "none") if auto else choice
        if search == "none":
            return {"quantize": None, "quantize_if_needed": False}
        return {"quantize": replace(quant or QuantOptions(), search=search), "quantize_if_needed": auto}

    @classmethod
    def from_fields(cls, **flat: Any) -> CompressOptions:
        """The options from ``compress()``'s keyword arguments, each named as its field (and its flag)."""
        choice = flat.pop("quantize", "auto")
        quant = QuantOptions(**_take(flat, QuantOptions))
        groups = {
            "prune": PruneOptions, "goal": GoalOptions, "finetune": FinetuneOptions, "split": SplitOptions,
            "parallel": ParallelOptions,
        }  # fmt: skip
        parts = {name: kind(**_take(flat, kind)) for name, kind in groups.items()}
        return cls(**cls.quantization(choice, parts["goal"].min_memory_saving, quant), **parts, **_known(flat, cls))


@dataclass(frozen=True)
class QuantizeOptions:
    max_accuracy_drop: float = 1.0
    quant: QuantOptions = field(default_factory=QuantOptions)
    finetune: FinetuneOptions = field(default_factory=FinetuneOptions)
    split: SplitOptions = field(default_factory=SplitOptions)
    force: bool = False
    format: str = "onnx"
    preprocess: Any = None  # as CompressOptions.preprocess
    layout: str = "fastest"  # time each layout of the stored integers here, keep the fastest; or "weight-only"

    def __post_init__(self) -> None:
        check_number(self.max_accuracy_drop, "max_accuracy_drop", low=0)
        check_choice(self.layout, "layout", LAYOUTS)
        check_format(self.format)
        check_preprocess(self)

    @property
    def points(self) -> Points:
        """The accuracy budget and its shares (search/budget.py owns the arithmetic)."""
        tune = self.finetune
        return Points(self.max_accuracy_drop, tune.finetune_data is not None, tune.finetune_search_drop)

    @classmethod
    def from_fields(cls, **flat: Any) -> QuantizeOptions:
        groups = {"quant": QuantOptions, "finetune": FinetuneOptions, "split": SplitOptions}
        parts = {name: kind(**_take(flat, kind)) for name, kind in groups.items()}
        return cls(**parts, **_known(flat, cls))


TIMESTEP_MODES = ("auto", "keep")


def parse_timesteps(value: str | int) -> str | int:
    """'auto', 'keep' or a whole number of steps >= 1 (its upper bound, the model's T, is checked on the model)."""
    return parse_mode(value, "timesteps", "steps")


def parse_mode(value: str | int, option: str, unit: str) -> str | int:
    """'auto', 'keep' or a whole number of ``unit`` >= 1 (its upper bound is checked on the model)."""
    if isinstance(value, str) and value in TIMESTEP_MODES:
        return value
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UserError(f"must be auto, keep or a number of {unit}, got {value!r}", option=option) from None
    if isinstance(value, bool) or number != value and str(number) != str(value).strip() or number < 1:
        raise UserError(f"must be auto, keep or a whole number of {unit} >= 1, got {value!r}", option=option)
    return number


def check_preprocess(options: CompressOptions | QuantizeOptions) -> None:
    """A typo in the preprocessing spec fails now, as the parsed spec (the data files are checked at load)."""
    if options.preprocess is not None:
        from svtprune.data_folder import parse_preprocess

        object.__setattr__(options, "preprocess", parse_preprocess(options.preprocess))


def _take(flat: dict[str, Any], kind: type) -> dict[str, Any]:
    """Remove and return the entries of ``flat`` that are fields of ``kind``."""
    names = {f.name for f in fields(kind)}
    return {k: flat.pop(k) for k in list(flat) if k in names}


def _known(flat: dict[str, Any], kind: type) -> dict[str, Any]:
    """What is left of ``flat``: fields of ``kind`` itself; anything else is the caller's typo."""
    names = {f.name for f in fields(kind)}
    unknown = sorted(set(flat) - names)
    if unknown:
        raise TypeError(f"unexpected option(s): {', '.join(unknown)}")
    return flat
