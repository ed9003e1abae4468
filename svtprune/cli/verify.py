"""``svtprune verify``: check a pruned model against the oracle (the original, slices zeroed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from svtprune.cli.help import DATA
from svtprune.cli.options import DATA_KINDS, Json, ModelArg, PreprocessSpec
from svtprune.cli.render import emit_json
from svtprune.cli.render_verify import print_verify
from svtprune.errors import ConstraintError


def verify(
    original: ModelArg,
    pruned: Annotated[Path, typer.Argument(help="Pruned ONNX file.", show_default=False)],
    plan: Annotated[Path, typer.Option(help="Plan JSON written by prune or compress.", rich_help_panel=DATA)],
    data: Annotated[
        Path | None,
        typer.Option(help=f"Images to run (default: random inputs): {DATA_KINDS}.", rich_help_panel=DATA),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            help="How many images to run (default: 64 of --data, or 8 random inputs).", min=1, rich_help_panel=DATA
        ),
    ] = None,
    preprocess: PreprocessSpec = None,
    as_json: Json = False,
) -> None:
    """Check a pruned model against the oracle: the original with the removed slices zeroed.

    A sample passes when logits agree to 1e-4 and every neuron's spike count is identical, or when
    the first difference is a membrane sitting on its threshold (float summation order). Exit 0 when
    no sample fails, else 1. A plan that records a least-squares re-fit (compress, demo) is checked
    through the plain prune of its channels: the file must equal it outside the re-fitted layers, the
    plain prune must pass the oracle, and how far the re-fit moved the logits is reported beside that.
    A quantized or fine-tuned file (plan bits, plan meta finetuned) is checked the same way by structure
    (same nodes, every constant at the plain prune's shape) and, if quantized, by its grids (the plan's
    bit width per layer, integers in range, weights their dequantization); its logit difference from the
    plain prune is reported. The verdict line names the checks done.
    Example: svtprune verify model.onnx pruned.onnx --plan pruned.plan.json
    """
    from svtprune.jobs.verify import verify_files

    result = verify_files(
        original=original, pruned=pruned, plan=plan, data=data, samples=samples, preprocess=preprocess
    )
    if as_json:
        emit_json(result)
    else:
        print_verify(result, pruned)
    if not result["passed"]:
        raise ConstraintError(f"pruned model fails the check ({result['checks']})")
