"""Everything the commands print: summaries and tables (rich), JSON on stdout, progress on stderr.

Progress goes to stderr so that ``--json`` leaves one object on stdout: a live bar on a terminal,
one line per step otherwise (a log, a CI job or a test reading the pipe sees where the run is).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from svtprune.cli.eta import Steps, clock
from svtprune.costs import FORWARDED
from svtprune.errors import ConstraintError
from svtprune.progress import Say
from svtprune.report import held_out_images
from svtprune.report_format import short_names

JSON_STDOUT: list = []  # the real stdout while a --json command runs (``json_stdout``), where ``emit_json`` writes


def emit_json(report: Any) -> None:
    """One JSON object on stdout, nothing else."""
    typer.echo(json.dumps(report), file=JSON_STDOUT[-1] if JSON_STDOUT else None)


@contextlib.contextmanager
def json_stdout(enabled: bool) -> Iterator[None]:
    """With ``enabled`` (--json), stdout keeps only ``emit_json``'s object: anything else printed goes to stderr.

    onnx-graphsurgeon prints its warnings (``[W] Inference failed`` on a constant it cannot fold, ``[W]
    colored module is not installed``) on stdout through its own logger, before the report."""
    if not enabled:
        yield
        return
    JSON_STDOUT.append(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        JSON_STDOUT.pop()


def problem(kind: str, style: str, message: str) -> None:
    """One line on stderr: ``kind: message`` (never wrapped, never read as rich markup)."""
    line = " ".join(message.split())
    Console(stderr=True).print(Text.assemble((f"{kind}:", style), " ", line), soft_wrap=True, highlight=False)


class NoteHandler(logging.Handler):
    """The library's notes (``svtprune`` logger, INFO and up) as ``note: ...`` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        problem("note", "cyan", record.getMessage())


def show_notes() -> None:
    """Print the library's notes (a converted dtype, ...) on stderr; stdout stays one JSON object."""
    logger = logging.getLogger("svtprune")
    logger.setLevel(logging.INFO)
    if not any(isinstance(h, NoteHandler) for h in logger.handlers):
        logger.addHandler(NoteHandler())


@contextlib.contextmanager
def progress(label: str) -> Iterator[Say]:
    """A ``progress(message)`` callback for the library: a live bar, or a line per step off a terminal (stderr).

    Both say what the job is doing, how many steps it has taken, the images it has forwarded so far
    and the time spent, so a long search can be followed (and its cost seen) as it runs; where the
    phase knows its number of steps (progress.py), which step of how many and the time left.
    """
    console = Console(stderr=True)
    started, forwarded, steps, phase = time.perf_counter(), FORWARDED.data, [0], Steps()

    def images() -> str:
        return f"{FORWARDED.data - forwarded:,} images"

    if console.is_terminal:
        columns = (
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[estimate]}", markup=False, table_column=Column(no_wrap=True)),
            TextColumn("{task.fields[step]}", markup=False, table_column=Column(overflow="ellipsis", ratio=1)),
            TextColumn("{task.fields[images]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=None, step="", estimate="", images=images())

            def update(message: str) -> None:
                estimate = phase.text(message, time.perf_counter(), compact=True)
                bar.update(task, advance=1, step=message, estimate=estimate, images=images())

            yield update
        return

    def say(message: str) -> None:
        steps[0] += 1
        now = time.perf_counter()
        estimate = phase.text(message, now)
        sys.stderr.write(
            f"{label} [step {steps[0]}, {clock(now - started)}, {images()}]: {message}"
            + (f" ({estimate})" if estimate else "")
            + "\n"
        )
        sys.stderr.flush()

    yield say


def run_search(label: str, run: Callable[[Say], dict], as_json: bool) -> dict | None:
    """``run(progress)`` with progress shown; with ``as_json`` the report (a failed one too) goes to stdout.

    Returns the report for the command to print, or None when it was already printed as JSON.
    """
    with progress(label) as say:
        try:
            report = run(say)
        except ConstraintError as exc:
            if as_json and exc.report:
                emit_json(exc.report)
            raise
    if as_json:
        emit_json(report)
        return None
    return report


def _files_line(out: Path, report: dict) -> str:
    lines = f"model: {out}\nreport: {out.with_suffix('.report.html')} (and .report.json, .plan.json)"
    return lines + _deployment_line(report.get("deployment"))


def _deployment_line(deployment: dict | None) -> str:
    """Where the ORT files went (``--format ort``), or nothing."""
    if deployment is None:
        return ""
    return (
        f"\nORT format: {deployment['ort_file']} ({deployment['ort_bytes']:,} bytes), operators for a minimal "
        f"build: {deployment['operators_config']} ({len(deployment['operators'])} operators)"
    )


def _finetune_line(report: dict, done: str) -> str:
    """``done`` names what was fine-tuned, with ``{images}`` where the image count goes."""
    if "finetune" not in report:
        return ""
    tune = report["finetune"]
    return (
        f"{done.format(images=tune['images'])}: held-out accuracy "
        f"{tune['accuracy_before']:.2f}% -> {tune['accuracy_after']:.2f}%\n"
    )


def print_compress(report: dict, out: Path) -> None:
    """The compress (and demo) summary: bytes, accuracy, latency, energy, where the files are."""
    original, compressed, energy = report["original"], report["compressed"], report["energy"]
    Console().print(
        f"{report['memory_saving']:.1%} of parameter bytes saved ({original['param_bytes']:,} -> "
        f"{compressed['param_bytes']:,}), accuracy {original['accuracy']:.2f}% -> "
        f"{compressed['accuracy']:.2f}% on {held_out_images(report['data'])}, "
        f"{len(report['evaluations'])} evaluations, {report['images_forwarded']:,} images forwarded, "
        f"{report['wall_seconds']:.0f} s.\n"
        f"ORT CPU latency (fastest run) {original['fastest_ms_b1']:.2f} -> "
        f"{compressed['fastest_ms_b1']:.2f} ms (batch 1, {report['speedup']['b1']:.2f}x), "
        f"{original['fastest_ms_b64']:.1f} -> {compressed['fastest_ms_b64']:.1f} ms "
        f"(batch 64, {report['speedup']['b64']:.2f}x)\n"
        f"energy (45 nm estimate) {energy['original']['energy_uJ_per_image']:.1f} -> "
        f"{energy['compressed']['energy_uJ_per_image']:.1f} uJ per image "
        f"({report['energy_saving']:.1%} saved)\n"
        + _time_line(report)
        + _quantization_line(report)
        + _finetune_line(report, "fine-tuned on {images} images")
        + _removed_lines(report)
        + _files_line(out, report)
    )


REMOVED_SHOWN = 8  # groups listed by name in the closing summary; the rest are counted


def _removed_lines(report: dict, shown: int = REMOVED_SHOWN) -> str:
    """What was removed: 'blocks.0.mlp.fc1  51/256 channels (-80%)' per pruned group, most removed first,
    the rest counted, and the time steps when the time phase cut them (the plan file has the channels)."""
    groups = sorted(report.get("groups") or [], key=lambda g: (g["after"] - g["before"], g["after"] / g["before"]))
    pruned = [g for g in groups if g["after"] < g["before"]]
    section = report.get("timesteps") or {}
    cut = bool(section) and section.get("chosen") is not None and section["chosen"] < section["original"]
    if not pruned and not cut and not (section.get("tokens") or {}).get("left_out"):
        return "removed: nothing (every channel group kept whole)\n" if groups else ""
    labels = short_names([g["group"] for g in pruned])
    width = max((len(labels[g["group"]]) for g in pruned[:shown]), default=0)
    lines = [
        f"  {escape(labels[g['group']]):<{width}}  {g['after']:,}/{g['before']:,} channels "
        f"(-{1 - g['after'] / g['before']:.0%})"
        for g in pruned[:shown]
    ]
    rest = pruned[shown:]
    if rest:
        channels = sum(g["before"] - g["after"] for g in rest)
        lines.append(f"  and {len(rest)} more groups ({channels:,} channels removed)")
    if len(groups) > len(pruned):
        lines.append(f"  {len(groups) - len(pruned)} of {len(groups)} groups kept whole")
    if cut:
        lines.append(f"  time steps {section['chosen']} of {section['original']}")
    tokens = section.get("tokens") or {}
    if tokens.get("left_out"):
        lines.append(f"  tokens through the blocks {tokens['total'] - tokens['left_out']} of {tokens['total']}")
    return "removed (kept/total):\n" + "\n".join(lines) + "\n"


def _time_line(report: dict) -> str:
    """The time phase's choice (a speed goal or --timesteps) and the exact norm folding, when they ran."""
    section, folding = report.get("timesteps"), report.get("norm_folding") or {}
    folded = f"{folding['applied']}\n" if folding.get("applied") else ""
    if not section:
        return folded
    once = ", the stem once per image" if section["stem_once"] else ""
    recovery = section.get("recovery") or "none"
    refit = "" if recovery.startswith("none") else f"; {recovery}"
    tokens = section.get("tokens") or {}
    left = f"; {tokens['total'] - tokens['left_out']} of {tokens['total']} tokens" if tokens.get("left_out") else ""
    line = f"time steps: {section['original']} -> {section['chosen']}{once}{left} ({section['reason']}{refit})\n"
    return line + folded


def _quantization_line(report: dict) -> str:
    """Whether weight bits were searched after pruning and why (``--quantize auto`` decides by itself)."""
    choice = report.get("quantization_choice")
    if choice is None or ("quantization" not in report and not choice.startswith("auto")):
        return ""
    return f"weight bits: {'searched' if 'quantization' in report else 'not searched'}, {choice}\n"


def print_quantize(report: dict, out: Path) -> None:
    """The quantize summary: bytes, how many layers took each width, accuracy, where the files are."""
    q = report["quantization"]
    widths: dict[int, int] = {}
    for row in q["layers"]:
        widths[row["bits"]] = widths.get(row["bits"], 0) + 1
    spread = ", ".join(f"{count} at {b} bits" for b, count in sorted(widths.items()))
    Console().print(
        f"{report['memory_saving']:.1%} of parameter bytes saved ({report['original']['param_bytes']:,} -> "
        f"{report['compressed']['param_bytes']:,}); layers: {spread}\n"
        f"accuracy {report['original']['accuracy']:.2f}% -> {report['compressed']['accuracy']:.2f}% on "
        f"{held_out_images(report['data'])}; {q['full_evaluations']} full evaluations, "
        f"{q['gated_out']} gated out by drift, {report['images_forwarded']:,} images forwarded, "
        f"{report['wall_seconds']:.0f} s.\n"
        + _finetune_line(report, "fine-tuned on the quantization grids ({images} images)")
        + _files_line(out, report)
    )


def print_eval(model: Path, r: dict) -> None:
    """Accuracy, bytes and latency of one model."""
    label = "accuracy" if r["metric"] == "top1" else "agreement with reference"
    Console().print(
        f"{model}\n  {label}: {r['accuracy']:.2f}% on {r['samples']} images\n"
        f"  parameter bytes: {r['param_bytes']:,}   file bytes: {r['file_bytes']:,}\n"
        f"  latency (ORT CPU, median): batch 1 {r['latency_ms_b1']:.2f} ms, batch 64 {r['latency_ms_b64']:.1f} ms, "
        f"batch 1 on one thread {r['latency_ms_b1_1thread']:.2f} ms\n"
        + _fixed_batch_line(r.get("fixed_batch"))
        + f"  peak memory running batch 1: {r['peak_rss_mb']:.1f} MiB "
        f"({r['peak_rss_mb_runtime_only']:.1f} MiB of it Python with ONNX Runtime before the model)"
    )


def _fixed_batch_line(batch: int | None) -> str:
    """What the latencies mean on a graph that runs only a fixed number of images at once."""
    if batch is None:
        return ""
    return f"  the graph's batch is fixed at {batch}: batch 1 is timed as one run, batch 64 as {-(-64 // batch)} runs\n"


def print_analyze(model: Path, report: dict) -> None:
    """The channel groups as a table (refused ones with their reasons), then the neurons found."""
    console = Console()
    table = Table(title=f"{model}: {report['nodes']} nodes, {report['param_bytes']:,} parameter bytes")
    table.add_column("group", overflow="fold", min_width=24)
    for column in ("channels", "heads", "params", "members"):
        table.add_column(column, justify="right")
    table.add_column("status", overflow="fold")
    for row in report["groups"]:
        status = "prunable" if row["prunable"] else "refused: " + "; ".join(row["refused"])
        table.add_row(
            row["group"],
            str(row["channels"]),
            str(row["heads"] or ""),
            f"{row['params']:,}",
            str(len(row["members"])),
            status,
        )
    console.print(table)
    steps = {n["time_steps"] for n in report["neurons"]}
    console.print(f"{len(report['neurons'])} spiking neurons found, time steps {sorted(steps)}")


def print_prune(summary: dict) -> None:
    """What prune wrote and how many bytes it saved."""
    Console(stderr=True).print(
        f"wrote {summary['output']} ({summary['pruned_param_bytes']:,} parameter bytes, was "
        f"{summary['original_param_bytes']:,}: {summary['memory_saving']:.1%} saved) and {summary['plan']}"
        + _deployment_line(summary.get("deployment"))
    )
    console = Console(stderr=True)
    if summary.get("refused_by_oracle"):
        console.print(f"left whole (their prune failed the oracle): {', '.join(summary['refused_by_oracle'])}")
    console.print(
        f"surgery checked against the oracle on random inputs; accuracy not measured: "
        f"svtprune eval {summary['output']} --data VAL.npz",
        highlight=False,
    )


def print_export(summary: dict) -> None:
    """Which file was written, of which architecture, and how often a calibrated model fires."""
    console = Console(stderr=True)
    for layer, rate in summary.get("firing_rates", {}).items():
        console.print(f"  {layer}: {100 * rate:.1f} % firing", highlight=False)
    console.print(f"wrote {summary['output']}: {summary['arch']}, {summary['nodes']} nodes")


def print_finetune(report: dict, out: Path) -> None:
    """Accuracy before and after fine-tuning, against the original's."""
    typer.echo(
        f"{out}: accuracy {report['accuracy_before_finetune']:.2f}% -> {report['accuracy_after_finetune']:.2f}% "
        f"(original {report['original']['accuracy']:.2f}%, memory saved {100 * report['memory_saving']:.1f}%, "
        f"{report['wall_seconds']:.0f} s)"
    )


def print_energy(model: Path, report: dict) -> None:
    """The per-layer energy table and the total per image."""
    table = Table(title=f"{model} on {report['images']} images (per image)")
    for column in ("layer", "op", "input", "firing rate", "dense MACs", "ops", "energy (nJ)"):
        table.add_column(column, justify="left" if column in ("layer", "op", "input") else "right")
    for layer in report["layers"]:
        kind = "spikes" if layer["spike_input"] else "real"
        table.add_row(
            layer["node"],
            layer["op"],
            kind,
            f"{layer['firing_rate']:.3f}",
            f"{layer['macs']:,.0f}",
            f"{layer['ops']:,.0f}",
            f"{layer['energy_pj'] / 1e3:,.1f}",
        )
    console = Console()
    console.print(table)
    source = report["constants"]["source"]
    console.print(
        f"total: {report['total_sops']:,.0f} SOPs + {report['total_macs_real_input']:,.0f} MACs "
        f"(dense {report['total_dense_macs']:,.0f}) = {report['energy_uJ_per_image']:.2f} µJ per image  [{source}]"
    )


def print_demo_start(model: Path, data: Path, max_drop: float) -> None:
    """What the demo is about to do (it takes minutes)."""
    Console(stderr=True).print(f"compressing {model.name} on {data.name} (PrimeSVT, max drop {max_drop} point)")
