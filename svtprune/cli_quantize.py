"""``svtprune quantize``: AQ4SViT per-layer weight bit widths under an accuracy budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from svtprune.cli_report import (
    FinetuneData,
    FinetuneEpochs,
    FinetuneLr,
    FinetuneSearchDrop,
    Int8Biases,
    ScaleCodes,
    run_search,
)


def quantize(
    model: Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)],
    data: Annotated[Path, typer.Option(help=".npz with x and optional y (labels); split into search and held-out.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Quantized ONNX file to write.")],
    search: Annotated[str, typer.Option(help="greedy, beam, or exhaustive (ungated baseline).")] = "greedy",
    max_accuracy_drop: Annotated[float, typer.Option(help="Accuracy points the result may lose.")] = 1.5,
    bits: Annotated[str, typer.Option(help="Allowed weight widths, from 8,4,2.")] = "8,4,2",
    beam_width: Annotated[int, typer.Option(help="Settings kept per step by --search beam.")] = 4,
    calib: Annotated[int | None, typer.Option(help="Images in the search split (default: half).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search/held-out split.")] = 0,
    symmetric: Annotated[
        bool, typer.Option("--symmetric/--asymmetric", help="Signed integers without a zero point, or unsigned with.")
    ] = True,
    block_size: Annotated[int, typer.Option(help="0: one scale per output channel; n: blocks of n inputs.")] = 0,
    rounding: Annotated[
        str | None,
        typer.Option(
            help="nearest (full range), mse (clipping search per channel) or gptq (mse's scales, error-feedback "
            "rounding on the layers' inputs from search-split images). Default: gptq."
        ),
    ] = None,
    scale_codes: ScaleCodes = True,
    int8_biases: Int8Biases = True,
    finetune_data: FinetuneData = None,
    finetune_epochs: FinetuneEpochs = 1,
    finetune_lr: FinetuneLr = 3e-4,
    finetune_search_drop: FinetuneSearchDrop = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")] = False,
) -> None:
    """Choose each layer's weight bits (8/4/2) within your accuracy budget; write a smaller ONNX.

    Candidates are ranked by membrane-potential drift on a calibration batch; only those the drift gate
    passes get a full accuracy evaluation. Weights are stored as int8/int4/int2 initializers feeding
    DequantizeLinear (opset 21, or 25 when int2 is used), so stock ONNX Runtime runs the file.
    With --finetune-data the search may lose --finetune-search-drop points, then the weights are
    fine-tuned on their stored grids (quantization-aware) before the held-out check.
    Writes OUT, OUT.plan.json, OUT.report.json and OUT.report.html. Exit 0 when the budget holds,
    1 when it cannot (nothing is written), 2 for bad input.
    Example: svtprune quantize model.onnx --data val.npz --search greedy --max-accuracy-drop 1.5 -o q.onnx
    """
    from svtprune.jobs.quantize import quantize as run_quantize

    report = run_search(
        "quantizing",
        lambda progress: run_quantize(
            model,
            data,
            out,
            max_accuracy_drop=max_accuracy_drop,
            search=search,
            bits=bits,
            beam_width=beam_width,
            calib=calib,
            seed=seed,
            symmetric=symmetric,
            block_size=block_size,
            rounding=rounding,
            force=force,
            progress=progress,
            finetune_data=finetune_data,
            finetune_epochs=finetune_epochs,
            finetune_lr=finetune_lr,
            finetune_search_drop=finetune_search_drop,
            scale_codes=scale_codes,
            side_int8=int8_biases,
        ),
        as_json,
    )
    if report is None:
        return
    q = report["quantization"]
    widths = {}
    for row in q["layers"]:
        widths[row["bits"]] = widths.get(row["bits"], 0) + 1
    spread = ", ".join(f"{count} at {b} bits" for b, count in sorted(widths.items()))
    Console().print(
        f"{report['memory_saving']:.1%} of parameter bytes saved ({report['original']['param_bytes']:,} -> "
        f"{report['compressed']['param_bytes']:,}); layers: {spread}\n"
        f"accuracy {report['original']['accuracy']:.2f}% -> {report['compressed']['accuracy']:.2f}% on "
        f"{report['data']['held_out_images']} held-out images; {q['full_evaluations']} full evaluations, "
        f"{q['gated_out']} gated out by drift, {report['wall_seconds']:.0f} s.\n"
        + (
            f"fine-tuned on the quantization grids ({report['finetune']['images']} images): held-out accuracy "
            f"{report['finetune']['accuracy_before']:.2f}% -> {report['finetune']['accuracy_after']:.2f}%\n"
            if "finetune" in report
            else ""
        )
        + f"model: {out}\nreport: {out.with_suffix('.report.html')} (and .report.json, .plan.json)"
    )


def register(app: typer.Typer) -> None:
    app.command()(quantize)
