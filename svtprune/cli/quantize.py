"""``svtprune quantize``: AQ4SViT per-layer weight bit widths under an accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import EXPERT, METHOD
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
    out_option,
)
from svtprune.cli.render import print_quantize, run_search
from svtprune.jobs.options import DEFAULT_MAX_IMAGES


def quantize(
    model: ModelArg,
    data: SearchData,
    out: Annotated[Path, out_option("Quantized ONNX file to write.")],
    search: Annotated[
        str, typer.Option(help="greedy, beam, or exhaustive (ungated baseline).", rich_help_panel=METHOD)
    ] = "greedy",
    max_accuracy_drop: MaxAccuracyDrop = 1.0,
    bits: Annotated[str, typer.Option(help="Allowed weight widths, from 8,4,2.", rich_help_panel=METHOD)] = "8,4,2",
    beam_width: Annotated[
        int, typer.Option(help="Settings kept per step by --search beam.", min=1, rich_help_panel=METHOD)
    ] = 4,
    calib: Calib = None,
    seed: SplitSeed = 0,
    max_images: MaxImages = DEFAULT_MAX_IMAGES,
    symmetric: Annotated[
        bool,
        typer.Option(
            "--symmetric/--asymmetric",
            help="Signed integers without a zero point, or unsigned with.",
            rich_help_panel=EXPERT,
        ),
    ] = True,
    block_size: Annotated[
        int,
        typer.Option(help="0: one scale per output channel; n: blocks of n inputs.", min=0, rich_help_panel=EXPERT),
    ] = 0,
    rounding: Annotated[
        str | None,
        typer.Option(
            help="nearest (full range), mse (clipping search per channel) or gptq (mse's scales, error-feedback "
            "rounding on the layers' inputs from search-split images). Default: gptq.",
            rich_help_panel=METHOD,
        ),
    ] = None,
    scale_codes: ScaleCodes = True,
    int8_biases: Int8Biases = True,
    finetune_data: FinetuneData = None,
    finetune_epochs: FinetuneEpochs = 1,
    finetune_lr: FinetuneLr = 3e-4,
    finetune_search_drop: FinetuneSearchDrop = None,
    format: DeployFormat = "onnx",
    layout: WeightLayout = "fastest",
    preprocess: PreprocessSpec = None,
    force: Force = False,
    config_file: ConfigFile = None,
    as_json: Json = False,
) -> None:
    """Choose each layer's weight bits (8/4/2) within your accuracy budget; write a smaller ONNX.

    Candidates are ranked by membrane-potential drift on a calibration batch; only those the drift gate
    passes get a full accuracy evaluation. Weights are stored as int8/int4/int2 initializers feeding
    DequantizeLinear (opset 21, or 25 when int2 is used), so stock ONNX Runtime runs the file.
    With --finetune-data the search may lose --finetune-search-drop points, then the weights are
    fine-tuned on their stored grids (quantization-aware) before the held-out check.
    Writes OUT, OUT.plan.json, OUT.report.json and OUT.report.html
    (with --format ort also OUT.ort and OUT.required_operators.config). Exit 0 when the budget holds,
    1 when it cannot (nothing is written), 2 for bad input.
    Example: svtprune quantize model.onnx --data val.npz --search greedy --max-accuracy-drop 1.0 -o q.onnx
    """
    from svtprune.jobs.options import FinetuneOptions, QuantizeOptions, QuantOptions, SplitOptions
    from svtprune.jobs.quantize import quantize as run_quantize

    quant = QuantOptions(search=search, bits=bits, beam_width=beam_width, rounding=rounding, scale_codes=scale_codes,
                         int8_biases=int8_biases, symmetric=symmetric, block_size=block_size)  # fmt: skip
    options = QuantizeOptions(
        max_accuracy_drop=max_accuracy_drop,
        quant=quant,
        finetune=FinetuneOptions(finetune_data=finetune_data, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr,
                                  finetune_search_drop=finetune_search_drop),
        split=SplitOptions(calib=calib, seed=seed, max_images=max_images),
        force=force, format=format, preprocess=preprocess, layout=layout,
    )  # fmt: skip
    report = run_search(
        "quantizing", lambda progress: run_quantize(model, data, out, options=options, progress=progress), as_json
    )
    if report is not None:
        print_quantize(report, out)
