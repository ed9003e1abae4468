"""``svtprune compress``: prune (and optionally quantize) within an accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import EXPERT, GOALS, METHOD, QUANTIZATION
from svtprune.cli.options import (
    Calib,
    ConfigFile,
    DeployFormat,
    FinetuneData,
    FinetuneEpochs,
    FinetuneLr,
    FinetuneSearchDrop,
    Force,
    Int8Biases,
    Json,
    MaxAccuracyDrop,
    MaxImages,
    ModelArg,
    PreprocessSpec,
    ScaleCodes,
    SearchData,
    SplitSeed,
    WeightLayout,
    number,
    out_option,
    share_goal,
)
from svtprune.cli.render import print_compress, run_search
from svtprune.jobs.options import DEFAULT_MAX_IMAGES


def compress(
    model: ModelArg,
    data: SearchData,
    out: Annotated[Path, out_option("Compressed ONNX file to write.")],
    max_accuracy_drop: MaxAccuracyDrop = 1.0,
    min_memory_saving: Annotated[
        float | None,
        share_goal("Share of parameter bytes that must be saved: 0.3 or 30%."),
    ] = None,
    method: Annotated[
        str, typer.Option(help="primesvt (largest group first), psvit or uniform.", rich_help_panel=METHOD)
    ] = "primesvt",
    calib: Calib = None,
    seed: SplitSeed = 0,
    max_images: MaxImages = DEFAULT_MAX_IMAGES,
    importance: Annotated[
        str, typer.Option(help="Channel ranking: l2, l1, taylor or hessian (data-driven).", rich_help_panel=METHOD)
    ] = "l2",
    reconstruct: Annotated[
        bool,
        typer.Option(
            "--reconstruct/--no-reconstruct",
            help="Least-squares re-fit of layers that lost inputs.",
            rich_help_panel=METHOD,
        ),
    ] = True,
    finetune_data: FinetuneData = None,
    finetune_epochs: FinetuneEpochs = 1,
    finetune_lr: FinetuneLr = 3e-4,
    finetune_search_drop: FinetuneSearchDrop = None,
    quantize: Annotated[
        str,
        typer.Option(
            help="After pruning, choose weight bits per layer (AQ4SViT): auto, none, greedy or beam. auto: greedy "
            "when --min-memory-saving is given and pruning alone does not reach it.",
            rich_help_panel=QUANTIZATION,
        ),
    ] = "auto",
    bits: Annotated[
        str, typer.Option(help="Weight widths --quantize may use, from 8,4,2.", rich_help_panel=QUANTIZATION)
    ] = "8,4,2",
    rounding: Annotated[
        str | None,
        typer.Option(
            help="With --quantize: nearest, mse or gptq (see quantize --help). Default: gptq.",
            rich_help_panel=QUANTIZATION,
        ),
    ] = None,
    scale_codes: ScaleCodes = True,
    int8_biases: Int8Biases = True,
    beam_width: Annotated[
        int, typer.Option(help="Settings kept per step by --quantize beam.", min=1, rich_help_panel=QUANTIZATION)
    ] = 4,
    prune_share: Annotated[
        float,
        typer.Option(
            help="With --quantize: share of the accuracy budget pruning may use first.",
            callback=number(above=0),
            rich_help_panel=EXPERT,
        ),
    ] = 0.5,
    objective: Annotated[
        str | None,
        typer.Option(
            help="memory (largest groups first), latency (groups ordered by measured ORT time) or energy "
            "(ordered by the estimated energy each group's pruning saves, from measured firing rates). "
            "Default: latency with --min-speedup or --max-latency-ms, energy with --min-energy-saving, else memory.",
            show_default=False,
            rich_help_panel=METHOD,
        ),
    ] = None,
    min_speedup: Annotated[
        float | None,
        typer.Option(
            help="Required speedup at batch 1 and 64, e.g. 1.5 (orders the search by latency).",
            callback=number(),
            rich_help_panel=GOALS,
        ),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="Required batch-1 latency in ms (orders the search by latency).",
            callback=number(above=0),
            rich_help_panel=GOALS,
        ),
    ] = None,
    timesteps: Annotated[
        str,
        typer.Option(
            help="Time steps: auto (with a speed goal, try T-1, T-2, ... before any channel goes, each judged "
            "like every other candidate; the stem runs once per image where that is faster), keep, or a number "
            "of steps to run.",
            metavar="auto|keep|N",
            rich_help_panel=METHOD,
        ),
    ] = "auto",
    drop_tokens: Annotated[
        str,
        typer.Option(
            help="Tokens left out of the blocks after the stem: auto (with a speed goal still unmet after the "
            "time steps, try 10%, 20%, ... of them, least important first, each judged like every other "
            "candidate), keep, or a number of tokens to leave out.",
            metavar="auto|keep|K",
            rich_help_panel=METHOD,
        ),
    ] = "auto",
    min_energy_saving: Annotated[
        float | None,
        share_goal("Share of the energy per image to save: 0.5 or 50% (orders the search by energy)."),
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(
            help="Seconds the pruning search may take; then it keeps the best step accepted so far "
            "(checked on held-out data as usual).",
            callback=number(above=0),
            rich_help_panel=EXPERT,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Candidates of the sensitivity scan measured side by side: processes on this machine, "
            "or Ray actors with --executor ray; each runs ONNX Runtime on one thread. Same result as 1.",
            rich_help_panel=EXPERT,
        ),
    ] = 1,
    executor: Annotated[
        str,
        typer.Option(
            help="Where --workers run: process (this machine) or ray (a Ray cluster, or a local one).",
            rich_help_panel=EXPERT,
        ),
    ] = "process",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="With --executor ray: the cluster to use, e.g. ray://head:10001 (default: a local Ray).",
            rich_help_panel=EXPERT,
        ),
    ] = None,
    layout: WeightLayout = "fastest",
    format: DeployFormat = "onnx",
    preprocess: PreprocessSpec = None,
    force: Force = False,
    config_file: ConfigFile = None,
    as_json: Json = False,
) -> None:
    """Find how many channels to remove from which groups, within your accuracy budget; write a smaller ONNX.

    Writes OUT, OUT.plan.json, OUT.report.json and OUT.report.html
    (with --format ort also OUT.ort and OUT.required_operators.config). Exit 0 when the constraints are met,
    1 when they cannot be (nothing is written), 2 for bad input.
    Example: svtprune compress model.onnx --data val.npz --max-accuracy-drop 1.0 -o small.onnx

    On 4 cores: add --workers 4; on a Ray cluster: --executor ray --workers 16 --ray-address ray://head:10001
    """
    from svtprune.jobs.compress import compress as run_compress
    from svtprune.jobs.options import (
        CompressOptions,
        FinetuneOptions,
        GoalOptions,
        ParallelOptions,
        PruneOptions,
        QuantOptions,
        SplitOptions,
    )  # fmt: skip

    goal = GoalOptions(objective=objective, min_memory_saving=min_memory_saving, min_speedup=min_speedup,
                       max_latency_ms=max_latency_ms, min_energy_saving=min_energy_saving)  # fmt: skip
    quant = QuantOptions(bits=bits, beam_width=beam_width, rounding=rounding, scale_codes=scale_codes,
                         int8_biases=int8_biases)  # fmt: skip
    options = CompressOptions(
        max_accuracy_drop=max_accuracy_drop,
        prune=PruneOptions(method=method, importance=importance, reconstruct=reconstruct),
        goal=goal,
        **CompressOptions.quantization(quantize, min_memory_saving, quant),
        prune_share=prune_share,
        finetune=FinetuneOptions(finetune_data=finetune_data, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                                  finetune_search_drop=finetune_search_drop),
        split=SplitOptions(calib=calib, seed=seed, max_images=max_images),
        parallel=ParallelOptions(workers=workers, executor=executor, ray_address=ray_address),
        force=force, format=format, preprocess=preprocess, time_limit=time_limit, layout=layout, timesteps=timesteps,
        drop_tokens=drop_tokens,
    )  # fmt: skip
    report = run_search(
        "compressing",
        lambda progress: run_compress(model, data, out, options=options, progress=progress),
        as_json,
    )
    if report is not None:
        print_compress(report, out)
