"""The ``svtprune`` command line: a thin typer layer over the library.

User mistakes (UserError) print one line and exit 2; unmet constraints (ConstraintError)
exit 1; nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from svtprune import cli_energy, cli_prune, cli_quantize
from svtprune.cli_report import (
    FinetuneData,
    FinetuneEpochs,
    FinetuneLr,
    FinetuneSearchDrop,
    Int8Biases,
    ScaleCodes,
    run_search,
)
from svtprune.errors import ConstraintError, UserError
from svtprune.finetune import command as finetune_command

app = typer.Typer(
    name="svtprune",
    help="Make Spiking Vision Transformers in ONNX smaller: structured pruning and quantization, measured.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
cli_prune.register(app)
cli_energy.register(app)
cli_quantize.register(app)
finetune_command.register(app)

REPO = Path(__file__).resolve().parents[1]
REFERENCE_MODEL = REPO / "models" / "reference" / "spikformer_fmnist.onnx"
REFERENCE_DATA = REPO / "models" / "data" / "fashion_mnist_val.npz"
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout, nothing else.")]


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="ONNX file to write.")],
    arch: Annotated[str, typer.Option(help="spikformer, sdt or qkformer.")] = "spikformer",
    weights: Annotated[Path | None, typer.Option(help="Checkpoint from tools/train_reference.py.")] = None,
    embed: Annotated[int, typer.Option(help="Embedding width (random init only).")] = 64,
    depths: Annotated[int, typer.Option(help="Transformer blocks (random init only).")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads (random init only).")] = 4,
    steps: Annotated[int, typer.Option("--T", help="Time steps (random init only).")] = 4,
    in_channels: Annotated[int, typer.Option(help="Image channels (random init only).")] = 1,
    img_size: Annotated[int, typer.Option(help="Image height = width (random init only).")] = 28,
    batch: Annotated[int, typer.Option(help="Batch size traced at export (the axis stays dynamic).")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the random initialisation.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Export a reference SViT (spikingjelly model zoo) to ONNX with a dynamic batch axis.

    Example: svtprune export --arch spikformer --weights models/reference/spikformer_fmnist.pt -o m.onnx
    """
    from svtprune.spiking.export import export_onnx, load_weights
    from svtprune.spiking.zoo import ARCHITECTURES, ArchConfig

    if weights is not None:
        config, state = load_weights(weights)
    else:
        if arch not in ARCHITECTURES:
            raise UserError(f"unknown --arch {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        config = ArchConfig(
            arch=arch,
            T=steps,
            in_channels=in_channels,
            img_size=img_size,
            embed_dims=embed,
            num_heads=heads,
            depths=depths,
        )
        state = None
    model = export_onnx(config, out, state, batch=batch, force=force, seed=seed)
    summary = {"output": str(out), "arch": config.arch, "nodes": len(model.graph.node), "config": config.to_dict()}
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        Console(stderr=True).print(f"wrote {out}: {config.arch}, {len(model.graph.node)} nodes")


@app.command("eval")
def eval_command(
    model: Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)],
    data: Annotated[Path, typer.Option(help=".npz with x (N x C x H x W) and optional y.")],
    reference: Annotated[Path | None, typer.Option(help="Model to agree with when data has no labels.")] = None,
    batch: Annotated[int, typer.Option(help="Batch size for accuracy.")] = 256,
    as_json: JsonOpt = False,
) -> None:
    """Accuracy (or agreement), parameter and file bytes, median latency at batch 1 and 64 on ORT CPU.

    Example: svtprune eval models/reference/spikformer_fmnist.onnx --data models/data/fashion_mnist_val.npz
    """
    from svtprune.data import load_npz
    from svtprune.evaluate import evaluate
    from svtprune.graph.io import load_model
    from svtprune.runtime import logits_of, make_session

    dataset = load_npz(data)
    load_model(model)  # one clear error for a missing or corrupt file
    ref_logits = logits_of(make_session(load_model(reference)), dataset.x, batch) if reference else None
    result = evaluate(model, dataset, ref_logits, progress=not as_json, batch=batch)
    if as_json:
        typer.echo(json.dumps(result.to_dict()))
        return
    _print_eval(model, result)


def _print_eval(model: Path, result: object) -> None:
    r = result.to_dict()  # type: ignore[attr-defined]
    label = "accuracy" if r["metric"] == "top1" else "agreement with reference"
    Console().print(
        f"{model}\n  {label}: {r['accuracy']:.2f}% on {r['samples']} images\n"
        f"  parameter bytes: {r['param_bytes']:,}   file bytes: {r['file_bytes']:,}\n"
        f"  latency (ORT CPU, median): batch 1 {r['latency_ms_b1']:.2f} ms, batch 64 {r['latency_ms_b64']:.1f} ms"
    )


@app.command()
def compress(
    model: Annotated[Path, typer.Argument(help="ONNX model file.", show_default=False)],
    data: Annotated[Path, typer.Option(help=".npz with x and optional y (labels); split into search and held-out.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Compressed ONNX file to write.")],
    max_accuracy_drop: Annotated[float, typer.Option(help="Accuracy points the result may lose.")] = 1.0,
    min_memory_saving: Annotated[
        float | None, typer.Option(help="Fraction of parameter bytes that must be saved, e.g. 0.3.")
    ] = None,
    method: Annotated[str, typer.Option(help="primesvt (largest group first), psvit or uniform.")] = "primesvt",
    calib: Annotated[int | None, typer.Option(help="Images in the search split (default: half).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search/held-out split.")] = 0,
    importance: Annotated[str, typer.Option(help="Channel ranking: l2, l1, taylor or hessian (data-driven).")] = "l2",
    reconstruct: Annotated[
        bool, typer.Option("--reconstruct/--no-reconstruct", help="Least-squares re-fit of layers that lost inputs.")
    ] = True,
    finetune_data: FinetuneData = None,
    finetune_epochs: FinetuneEpochs = 1,
    finetune_lr: FinetuneLr = 3e-4,
    finetune_search_drop: FinetuneSearchDrop = None,
    quantize: Annotated[
        str, typer.Option(help="After pruning, choose weight bits per layer (AQ4SViT): none, greedy or beam.")
    ] = "none",
    bits: Annotated[str, typer.Option(help="Weight widths --quantize may use, from 8,4,2.")] = "8,4,2",
    rounding: Annotated[
        str | None, typer.Option(help="With --quantize: nearest, mse or gptq (see quantize --help). Default: gptq.")
    ] = None,
    scale_codes: ScaleCodes = True,
    int8_biases: Int8Biases = True,
    beam_width: Annotated[int, typer.Option(help="Settings kept per step by --quantize beam.")] = 4,
    prune_share: Annotated[
        float, typer.Option(help="With --quantize: share of the accuracy budget pruning may use first.")
    ] = 0.5,
    objective: Annotated[
        str,
        typer.Option(
            help="memory (largest groups first), latency (groups ordered by measured ORT time) or energy "
            "(ordered by the estimated energy each group's pruning saves, from measured firing rates)."
        ),
    ] = "memory",
    min_speedup: Annotated[
        float | None, typer.Option(help="With --objective latency: required speedup at batch 1 and 64, e.g. 1.5.")
    ] = None,
    max_latency_ms: Annotated[
        float | None, typer.Option(help="With --objective latency: required batch-1 latency in ms.")
    ] = None,
    min_energy_saving: Annotated[
        float | None, typer.Option(help="With --objective energy: fraction of the energy per image to save, e.g. 0.5.")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing output files.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find how many channels to remove from which groups, within your accuracy budget; write a smaller ONNX.

    Writes OUT, OUT.plan.json, OUT.report.json and OUT.report.html. Exit 0 when the constraints are met,
    1 when they cannot be (nothing is written), 2 for bad input.
    Example: svtprune compress model.onnx --data val.npz --max-accuracy-drop 1.0 -o small.onnx
    """
    from svtprune.jobs.compress import compress as run_compress

    report = run_search(
        "compressing",
        lambda progress: run_compress(
            model,
            data,
            out,
            max_accuracy_drop=max_accuracy_drop,
            min_memory_saving=min_memory_saving,
            method=method,
            calib=calib,
            seed=seed,
            importance=importance,
            force=force,
            progress=progress,
            reconstruct=reconstruct,
            finetune_data=finetune_data,
            finetune_epochs=finetune_epochs,
            finetune_search_drop=finetune_search_drop,
            finetune_lr=finetune_lr,
            quantize=quantize,
            quantize_bits=bits,
            quantize_rounding=rounding,
            quantize_scale_codes=scale_codes,
            quantize_side_int8=int8_biases,
            beam_width=beam_width,
            prune_share=prune_share,
            objective=objective,
            min_speedup=min_speedup,
            max_latency_ms=max_latency_ms,
            min_energy_saving=min_energy_saving,
        ),
        as_json,
    )
    if report is None:
        return
    _print_compress(report, out)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option(help="Folder for the compressed model and its report.")] = Path(
        "svtprune-demo"
    ),
    calib: Annotated[int, typer.Option(help="Images the search scores candidates on (the rest are held out).")] = 400,
) -> None:
    """Compress the shipped reference Spikformer within 1 accuracy point and show where the report is.

    The search scores candidates on --calib images (400 keeps the demo to minutes on two cores; the
    accuracy reported is measured on the other 3,600).
    """
    from svtprune.jobs.compress import compress as run_compress

    for path in (REFERENCE_MODEL, REFERENCE_DATA):
        if not path.is_file():
            raise UserError(f"shipped file missing: {path} (run from a clone of the repository)")
    out = out_dir / "spikformer_small.onnx"
    console = Console(stderr=True)
    console.print(f"compressing {REFERENCE_MODEL.name} on {REFERENCE_DATA.name} (PrimeSVT, max drop 1.0 point)")
    with console.status("compressing") as status:
        report = run_compress(
            REFERENCE_MODEL,
            REFERENCE_DATA,
            out,
            max_accuracy_drop=1.0,
            method="primesvt",
            calib=calib,
            seed=0,
            importance="l2",
            force=True,
            progress=lambda m: status.update(m),
        )
    _print_compress(report, out)


def _print_compress(report: dict, out: Path) -> None:
    Console().print(
        f"{report['memory_saving']:.1%} of parameter bytes saved ({report['original']['param_bytes']:,} -> "
        f"{report['compressed']['param_bytes']:,}), accuracy {report['original']['accuracy']:.2f}% -> "
        f"{report['compressed']['accuracy']:.2f}% on {report['data']['held_out_images']} held-out images, "
        f"{len(report['evaluations'])} evaluations, {report['wall_seconds']:.0f} s.\n"
        f"ORT CPU latency (fastest run) {report['original']['fastest_ms_b1']:.2f} -> "
        f"{report['compressed']['fastest_ms_b1']:.2f} ms (batch 1, {report['speedup']['b1']:.2f}x), "
        f"{report['original']['fastest_ms_b64']:.1f} -> {report['compressed']['fastest_ms_b64']:.1f} ms "
        f"(batch 64, {report['speedup']['b64']:.2f}x)\n"
        f"energy (45 nm estimate) {report['energy']['original']['energy_uJ_per_image']:.1f} -> "
        f"{report['energy']['compressed']['energy_uJ_per_image']:.1f} uJ per image "
        f"({report['energy_saving']:.1%} saved)\n"
        + (
            f"fine-tuned on {report['finetune']['images']} images: held-out accuracy "
            f"{report['finetune']['accuracy_before']:.2f}% -> {report['finetune']['accuracy_after']:.2f}%\n"
            if "finetune" in report
            else ""
        )
        + f"model: {out}\nreport: {out.with_suffix('.report.html')} (and .report.json, .plan.json)"
    )


def main() -> None:
    """Entry point: domain errors become one line and an exit code."""
    try:
        app(standalone_mode=False)
    except UserError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc.phrased(_Flags())}", highlight=False)
        sys.exit(2)
    except ConstraintError as exc:
        Console(stderr=True).print(f"[yellow]constraints not met:[/yellow] {exc}", highlight=False)
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:  # usage errors arrive here with standalone_mode=False
        if _is_usage_error(exc):
            exc.show()
            sys.exit(2)
        raise


class _Flags(dict):
    """Library field -> flag: the same name with dashes, except where the flag reads differently."""

    SPECIAL = {
        "data_path": "--data",
        "model_path": "MODEL",
        "quantize_bits": "--bits",
        "quantize_rounding": "--rounding",
        "quantize_scale_codes": "--scale-codes",
        "quantize_side_int8": "--int8-biases",
        "side_int8": "--int8-biases",
        "steps": "--T",
    }

    def get(self, option: str, default: str | None = None) -> str:
        return self.SPECIAL.get(option, "--" + option.replace("_", "-"))


def _is_usage_error(exc: Exception) -> bool:
    """Click's exceptions, whether typer uses the click package or (typer >= 0.26) its own copy."""
    import click

    kinds: list[type] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as TyperClickException

        kinds.append(TyperClickException)
    except ImportError:
        pass
    return isinstance(exc, tuple(kinds))


if __name__ == "__main__":
    main()
