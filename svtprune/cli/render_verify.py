"""What ``svtprune verify`` prints: the verdict with what was checked, then the re-fit or rewrite findings."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def print_verify(result: dict, pruned: Path | str = "PRUNED.onnx") -> None:
    """PASS or FAIL, what was checked (the surgery, never the accuracy), and the counts of identical, tied and
    failing samples; then how to measure the accuracy."""
    verdict = "PASS" if result["passed"] else "FAIL"
    meaning = "surgery exact; accuracy not measured; " if result["passed"] else ""
    on_file = result.get("oracle_on", "the file") == "the file"
    checked = "oracle" if on_file else f"{result['checks']}, against the plain prune of the plan"
    oracle = "" if on_file else "the plain prune against the oracle: "
    Console(stderr=True).print(
        f"{verdict} (checked: {checked}): {meaning}{oracle}{result.get('exact', 0)} of {result['samples']} samples "
        "identical "
        f"(logits to 1e-4, every spike count), {result.get('threshold_ties', 0)} diverge at a membrane on its "
        f"threshold (float summation order), {result.get('failures', result['samples'])} fail"
    )
    if result.get("reason"):
        Console(stderr=True).print(f"not comparable: {result['reason']}", highlight=False)
    if result.get("time_steps"):
        Console(stderr=True).print(result["time_steps"], highlight=False)
    if result.get("firing") is not None:
        _print_firing(result["firing"])
    if result.get("refit"):
        _print_refit(result["refit"])
    if result.get("rewritten"):
        _print_rewritten(result["rewritten"])
    if result["passed"]:
        Console(stderr=True).print(f"to measure accuracy: svtprune eval {pruned} --data VAL.npz", highlight=False)


def _print_firing(firing: float) -> None:
    """How often the oracle's neurons fired; a warning when never, since equal spike counts then prove nothing."""
    console = Console(stderr=True)
    if firing == 0:
        console.print(
            "[yellow]warning:[/] no neuron fires in either model on these inputs: the check is vacuous for the "
            "spikes (try --data with real images)",
            highlight=False,
        )
    else:
        console.print(f"neurons fired on {100 * firing:.1f}% of their outputs", highlight=False)


def _print_refit(refit: dict) -> None:
    layers = ", ".join(refit["layers"])
    if refit["structure_differences"]:
        shown = "; ".join(refit["structure_differences"])
        Console(stderr=True).print(f"re-fitted layers {layers}: the file is not the plan's prune: {shown}")
    else:
        Console(stderr=True).print(
            f"re-fitted layers {layers}: compared with the plain prune of the same channels (identical "
            f"elsewhere); the re-fitted model differs from it by up to {refit['max_logit_difference']:.4g} "
            f"in the logits, {100 * refit['prediction_agreement']:.1f}% of predictions agree"
        )
    if refit.get("groups_checked_by_width_only"):
        shown = ", ".join(refit["groups_checked_by_width_only"])
        Console(stderr=True).print(f"only re-fitted weights carry the channels of {shown}: checked by width only")


def _print_rewritten(section: dict) -> None:
    """Structure and grid findings of a quantized or fine-tuned file, and how far it moved (reported only)."""
    console = Console(stderr=True)
    what = " and ".join(["quantized"] * ("quantization" in section) + ["fine-tuned"] * section["finetuned"])
    if section["refit_layers"]:
        what += f", with {len(section['refit_layers'])} re-fitted layers"
    if section["structure_differences"]:
        console.print(f"{what}: the file is not the plan's prune: {'; '.join(section['structure_differences'])}")
    else:
        console.print(f"{what}: same nodes and constant shapes as the plain prune (every group at the plan's widths)")
    quantization = section.get("quantization")
    if quantization and quantization["problems"]:
        console.print(f"quantization grid: {'; '.join(quantization['problems'])}")
    elif quantization:
        console.print(
            f"quantization grid: {quantization['layers']} layers at the plan's bit widths, integers in range, "
            f"weights on their grids; up to {quantization['max_weight_difference']:.4g} from the plain prune's "
            "weights" + " (re-fitted layers left out)" * bool(section["refit_layers"])
        )
    if "max_logit_difference" in section:
        console.print(
            f"reported, not checked: the logits differ from the plain prune's by up to "
            f"{section['max_logit_difference']:.4g}, {100 * section['prediction_agreement']:.1f}% of predictions agree"
        )
