"""Options shared by several commands, their units, and number checks made before any work."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import DATA, EXPERT, FINETUNING, GOALS, METHOD, OUTPUT


def number(
    minimum: float | None = None, above: float | None = None, maximum: float | None = None, below: float | None = None
) -> Callable[[float | None], float | None]:
    """A typer callback: the value must be finite and inside the bounds (checked before any work)."""

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number")
        for bound, fails, words in (
            (minimum, lambda b: value < b, "at least"),
            (above, lambda b: value <= b, "greater than"),
            (maximum, lambda b: value > b, "at most"),
            (below, lambda b: value >= b, "less than"),
        ):
            if bound is not None and fails(bound):
                raise typer.BadParameter(f"must be {words} {bound:g}, got {value:g}")
        return value

    return check


ModelArg = Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)]
DATA_KINDS = (
    ".npz with x (N x C x H x W) and optional y; or .npy of images (memory-mapped, labels from NAME.labels.npy "
    "beside it); or a folder of images (one subfolder per class, or flat: unlabelled), see --preprocess"
)
SearchData = Annotated[Path, typer.Option(help=f"{DATA_KINDS}. Split into search and held-out.", rich_help_panel=DATA)]
PreprocessSpec = Annotated[
    str | None,
    typer.Option(
        help="How image-folder files become input: resize=S (shorter side, bilinear), crop=C (centre, C x C), "
        "mean=M[,M,M], std=S[,S,S] (after scaling pixels to [0,1]), channels=1|3 (default: the first image's); "
        "e.g. resize=36,crop=32,mean=0.49,std=0.25 -- or a JSON file of the same keys.",
        rich_help_panel=DATA,
    ),
]
Json = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.", rich_help_panel=OUTPUT)
]
Force = Annotated[bool, typer.Option("--force", help="Overwrite existing output files.", rich_help_panel=OUTPUT)]
WeightLayout = Annotated[
    str,
    typer.Option(
        help="How quantized weights are laid out in the file: weight-only (dequantized at every call, the fewest "
        "nodes) or fastest (each layout of the same integers timed here at batch 1: dequantized at load, integer "
        "kernels on spike-fed layers, weight-only; the fastest written if no held-out prediction moves).",
        rich_help_panel=EXPERT,
    ),
]
DeployFormat = Annotated[
    str,
    typer.Option(
        "--format",
        help="onnx, or ort: also OUT.ort (ONNX Runtime's format for mobile and minimal builds, made by its "
        "converter) and OUT.required_operators.config (the operators a minimal build must include).",
        rich_help_panel=OUTPUT,
    ),
]
POINT_UNITS = ("points", "point", "pts", "pt", "%")


def accuracy_points(text: str) -> float:
    """``1``, ``1pt`` and ``1%`` all mean one accuracy point (an NNCF user's ``0.01`` is warned about)."""
    if isinstance(text, int | float):  # a default, or a caller that already has the number
        return float(text)
    spelled = text.strip().lower()
    for unit in POINT_UNITS:
        spelled = spelled.removesuffix(unit).strip()
    try:
        value = float(spelled)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number of accuracy points (1, 1pt or 1%)") from None
    if 0 < value < 0.1:
        typer.echo(
            f"warning: --max-accuracy-drop {text} is {value:g} of one accuracy point; did you mean {100 * value:g} "
            "points? (1, 1pt and 1% all mean one point)",
            err=True,
        )
    return value


def fraction(text: str) -> float:
    """``0.3`` or ``30%``: a share, as a fraction."""
    if isinstance(text, int | float):
        return float(text)
    spelled = text.strip()
    try:
        return float(spelled[:-1]) / 100 if spelled.endswith("%") else float(spelled)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a fraction (0.3 or 30%)") from None


def share_goal(help: str) -> typer.models.OptionInfo:
    """A goal given as a share of the original (``0.3`` or ``30%``), in the Goals panel."""
    return typer.Option(help=help, parser=fraction, metavar="SHARE", callback=number(), rich_help_panel=GOALS)


MaxAccuracyDrop = Annotated[
    float,
    typer.Option(
        help="Accuracy points the result may lose: 1, 1pt or 1% (one point).",
        parser=accuracy_points,
        metavar="POINTS",
        callback=number(minimum=0),
        rich_help_panel=GOALS,
    ),
]
Calib = Annotated[
    int | None, typer.Option(help="Images in the search split (default: half).", min=1, rich_help_panel=METHOD)
]
SplitSeed = Annotated[int, typer.Option(help="Seed of the search/held-out split.", min=0, rich_help_panel=EXPERT)]
MaxImages = Annotated[  # default: svtprune.jobs.options.DEFAULT_MAX_IMAGES
    int,
    typer.Option(
        help="Split a seeded sample of at most this many of the --data images (raised to twice --calib); "
        "0 splits them all. Each pass of the search costs time in proportion.",
        min=0,
        rich_help_panel=DATA,
    ),
]

# fine-tuning options shared by compress and quantize
FinetuneData = Annotated[
    Path | None,
    typer.Option(
        help="Training data, as --data (never the --data images): fine-tune the result from the original model.",
        rich_help_panel=FINETUNING,
    ),
]
FinetuneEpochs = Annotated[int, typer.Option(help="Passes over --finetune-data.", min=1, rich_help_panel=FINETUNING)]
FinetuneLr = Annotated[
    float,
    typer.Option(
        help="AdamW peak learning rate of the fine-tuning.", callback=number(above=0), rich_help_panel=FINETUNING
    ),
]
FinetuneSearchDrop = Annotated[
    float | None,
    typer.Option(
        help="Points the search may lose before fine-tuning (default 3x --max-accuracy-drop).",
        callback=number(minimum=0),
        rich_help_panel=EXPERT,
    ),
]
ScaleCodes = Annotated[
    bool,
    typer.Option(
        "--scale-codes/--float16-scales",
        help="Store each quantized layer's scales as uint8 codes of one power-of-two step (1 byte per channel) "
        "or as float16 (2 bytes).",
        rich_help_panel=EXPERT,
    ),
]
Int8Biases = Annotated[
    bool,
    typer.Option(
        "--int8-biases/--float16-biases",
        help="Store a layer's bias (and the scale and shift of a BatchNormalization right after it) as int8 "
        "with one scale (1 byte per value) once its weight takes 4 bits or fewer, or keep them float16 (2 bytes).",
        rich_help_panel=EXPERT,
    ),
]


def out_option(help: str) -> typer.models.OptionInfo:
    """``-o/--out``: the file a command writes (its plan and reports go beside it)."""
    return typer.Option("-o", "--out", help=help, rich_help_panel=OUTPUT)


def option_defaults(ctx: typer.Context, path: Path | None) -> Path | None:
    """Read ``--config-file`` before any other option: its values become the command's defaults.

    A TOML file whose keys are the command's option names as fields (``beam_width = 8``), either at
    the top level or under a ``[compress]`` / ``[quantize]`` table; a flag on the line still wins."""
    if path is None or ctx.resilient_parsing:
        return path
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from None
    section = table.get(ctx.command.name, table)
    known = {param.name for param in ctx.command.params} - {"config_file", "model", "as_json"}
    unknown = sorted(set(section) - known - {name for name, value in table.items() if isinstance(value, dict)})
    if unknown:
        raise typer.BadParameter(f"{path}: unknown option(s) {', '.join(unknown)} for {ctx.command.name}")
    ctx.default_map = {**(ctx.default_map or {}), **{k: v for k, v in section.items() if k in known}}
    return path


ConfigFile = Annotated[
    Path | None,
    typer.Option(
        help="TOML file of option defaults, keys named as the options (beam_width = 8), top level or under "
        "[compress] / [quantize]; flags on the command line win.",
        is_eager=True,
        callback=option_defaults,
        rich_help_panel=EXPERT,
    ),
]
