"""The layer table ``eval --profile`` prints: where the batch-1 time goes, slowest layers first."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from svtprune.jobs.evaluate import top_rows


def print_profile(rows: list[dict]) -> None:
    """The ``top`` slowest layers and one row for the rest: layer, op type, kernel ms, share of the total."""
    total = sum(r["ms"] for r in rows)
    console = Console()
    console.print(
        f"where the batch-1 time goes: {total:.3f} ms of kernel time in {len(rows)} layers "
        "(ONNX Runtime's profiler, its own time per node taken out)"
    )
    table = Table()
    table.add_column("layer", overflow="fold")
    table.add_column("op")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    for row in top_rows(rows):  # the slowest layers, then one row for the rest
        table.add_row(row["layer"], row["op"], f"{row['ms']:.3f}", f"{100 * row['share']:.1f}%")
    console.print(table)
