"""The HTML report's plots: matplotlib PNGs, embedded as base64 so the page stands alone.

Every plot is saved with a tight bounding box (nothing cut at an edge), labels in 8 pt or more,
layer names shortened (``report_format.short_name``) and numbers written on the bars.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable

from svtprune.report_format import KIB, kib, layer_labels, node_names, profile_rows, short_names

PARETO_TOP = 5.0  # points of accuracy drop the trade-off plot shows
SMALL = 8  # the smallest type on a plot
LOG_TICKS = ((0.5, tuple(range(1, 10))), (1.3, (1, 2, 3, 5)), (2.5, (1, 2, 5)), (float("inf"), (1,)))  # by decades


def figure_png(draw: Callable, panels: int = 1, height: float = 4.0, stacked: bool = False) -> str:
    """``draw(axes)`` on a fresh figure, as a base64 PNG cropped to what was drawn (``stacked``: panels
    one above the other, for bars whose long labels would leave side-by-side panels no room)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if stacked:
        figure, axes = plt.subplots(panels, 1, figsize=(8, height * panels), dpi=100)
    else:
        figure, axes = plt.subplots(1, panels, figsize=(8 if panels == 1 else 11, height), dpi=100)
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.15)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def rows_height(rows: int) -> float:
    """A figure tall enough for ``rows`` labelled bars at 8 pt."""
    return max(2.5, 0.32 * rows + 1.2)


def sensitivity(report: dict, baseline: float) -> Callable:
    def draw(axes) -> None:  # noqa: ANN001
        from matplotlib.ticker import PercentFormatter

        curves = report["sensitivity"]
        labels = short_names(list(curves))
        for name, points in curves.items():
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=labels[name])
        budget = baseline - report["constraints"]["search_budget_points"]
        axes.axhline(budget, color="black", linestyle="--", linewidth=1, label="search budget")
        axes.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=0))
        axes.set_xlabel("channels pruned in the group alone")
        axes.set_ylabel("accuracy on the search split (%)")
        axes.legend(fontsize=SMALL, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)

    return draw


def search_path(report: dict, baseline: float) -> Callable:
    def draw(axes) -> None:  # noqa: ANN001
        evals = report["evaluations"]
        axes.scatter([e["param_bytes"] / KIB for e in evals], [e["accuracy"] for e in evals], s=12,
                     label="candidates")  # fmt: skip
        chosen = report["compressed"]
        axes.scatter([chosen["param_bytes"] / KIB], [chosen["accuracy_search"]], color="red", s=80, marker="*",
                     label="chosen", zorder=3)  # fmt: skip
        axes.scatter([report["original"]["param_bytes"] / KIB], [baseline], color="black", s=40, marker="s",
                     label="original", zorder=3)  # fmt: skip
        _thousands(axes)
        axes.set_xlabel("parameters (KiB)")
        axes.set_ylabel("accuracy on the search split (%)")
        axes.legend(fontsize=SMALL)

    return draw


def pareto(section: dict) -> Callable:
    """Left: accuracy drop against bytes, every candidate and the front. Right: the two files' latency and RAM."""

    def draw(axes) -> None:  # noqa: ANN001
        left, right = axes
        for stage, marker in (("pruning", "o"), ("quantization", "^")):
            points = [p for p in section["candidates"] if p["stage"] == stage]
            if points:
                left.scatter([p["param_bytes"] / KIB for p in points], [p["accuracy_drop"] for p in points],
                             s=14, marker=marker, alpha=0.6, label=f"{stage} candidates")  # fmt: skip
        front = section["front"]
        left.step([p["param_bytes"] / KIB for p in front], [p["accuracy_drop"] for p in front], where="post",
                  color="black", label="front (every search image)")  # fmt: skip
        drops = [p["accuracy_drop"] for p in section["candidates"]]
        if drops and max(drops) > PARETO_TOP:  # a few broken candidates would flatten the rest
            left.set_ylim(min(drops) - 0.5, PARETO_TOP)
            left.set_title(f"drops above {PARETO_TOP:g} points not shown", fontsize=SMALL)
        left.set_xlabel("parameters (KiB, log scale)")
        left.set_ylabel("accuracy drop on the search split (points)")
        left.legend(fontsize=SMALL)
        _files_panel(right, section)
        for panel in axes:
            _log_kib(panel)

    return draw


def _files_panel(axes, section: dict) -> None:  # noqa: ANN001
    """The original and the written file: size against batch-1 latency, their accuracy and RAM in the legend."""
    for side, color in (("original", "black"), ("compressed", "red")):
        f = section["files"][side]
        ms = f.get("fastest_ms_b1") or f.get("latency_ms_b1")
        if ms is None:
            continue
        ram = f.get("peak_rss_mb")
        note = f"{side}: {f['accuracy']:.2f}% held-out" + (f", {ram:,.1f} MiB peak RAM" if ram else "")
        axes.scatter([f["param_bytes"] / KIB], [ms], color=color, s=50, label=note, zorder=3)
        axes.annotate(kib(f["param_bytes"]), (f["param_bytes"] / KIB, ms), fontsize=SMALL,
                      textcoords="offset points", xytext=(0, 8), ha="center")  # fmt: skip
    timed = [p for p in section["candidates"] if "latency_ms_b1" in p]
    if timed:
        axes.scatter([p["param_bytes"] / KIB for p in timed], [p["latency_ms_b1"] for p in timed], s=12,
                     alpha=0.6, label="timed candidates")  # fmt: skip
    axes.margins(x=0.15, y=0.2)
    axes.set_xlabel("parameters (KiB, log scale)")
    axes.set_ylabel("batch-1 latency (ms)")
    axes.legend(fontsize=SMALL, loc="best")


def _thousands(axes) -> None:  # noqa: ANN001
    from matplotlib.ticker import FuncFormatter

    axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))


def _log_kib(axes) -> None:  # noqa: ANN001
    """A log axis of KiB with labelled ticks even when the data spans less than a decade."""
    import math

    from matplotlib.ticker import LogLocator, NullFormatter

    axes.set_xscale("log")
    low, high = axes.get_xlim()
    decades = math.log10(max(high, 1e-9) / max(low, 1e-9))
    subs = next(subs for limit, subs in LOG_TICKS if decades < limit)
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axes.xaxis.set_minor_formatter(NullFormatter())
    _thousands(axes)


def widths(report: dict) -> Callable:
    """Channels per group, before (grey) and kept (blue), with kept/total written on each bar."""

    def draw(axes) -> None:  # noqa: ANN001
        groups = report["groups"]
        labels = short_names([g["group"] for g in groups])
        index = list(range(len(groups)))[::-1]  # first group on top
        axes.barh(index, [g["before"] for g in groups], height=0.7, color="#d9d9d9", label="before")
        axes.barh(index, [g["after"] for g in groups], height=0.7, color="tab:blue", label="kept")
        for i, g in zip(index, groups, strict=True):
            removed = 1 - g["after"] / g["before"] if g["before"] else 0.0
            note = f"{g['after']}/{g['before']}" + (f"  (-{removed:.0%})" if removed else "")
            axes.text(g["before"], i, f" {note}", va="center", fontsize=SMALL)
        axes.set_yticks(index, [labels[g["group"]] for g in groups], fontsize=SMALL)
        axes.set_xlim(0, max(g["before"] for g in groups) * 1.3)
        axes.set_xlabel("channels")
        axes.legend(fontsize=SMALL, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)

    return draw


def bits(report: dict) -> Callable:
    def draw(axes) -> None:  # noqa: ANN001
        layers = report["quantization"]["layers"]
        labels = short_names([row["layer"] for row in layers])
        index = list(range(len(layers)))[::-1]
        axes.barh(index, [row["bits"] for row in layers], color="tab:purple")
        for i, row in zip(index, layers, strict=True):
            axes.text(row["bits"], i, f" {row['bits']}", va="center", fontsize=SMALL)
        axes.set_yticks(index, [labels[row["layer"]] for row in layers], fontsize=SMALL)
        axes.set_xscale("log", base=2)
        axes.set_xticks([2, 4, 8, 16, 32], ["2", "4", "8", "16", "32"])
        axes.set_xlim(1, 48)
        axes.set_xlabel("weight bits (32 = float, untouched)")

    return draw


def firing_rates(report: dict) -> Callable:
    """Input firing rate of each spike-input layer, named by its weight where the original model can be read."""

    def draw(axes) -> None:  # noqa: ANN001
        from matplotlib.ticker import PercentFormatter

        readable = node_names(report.get("model"))
        names: list[str] = []
        for side, marker in (("original", "o"), ("compressed", "x")):
            layers = [layer for layer in report["energy"][side]["layers"] if layer["spike_input"]]
            index = list(range(len(layers)))[::-1]
            axes.plot([layer["firing_rate"] for layer in layers], index, marker=marker, linestyle="", label=side)
            names = names or [readable.get(layer["node"], layer["node"]) for layer in layers]
        labels = short_names(names)
        axes.set_yticks(list(range(len(names)))[::-1], [labels[n] for n in names], fontsize=SMALL)
        axes.xaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=None))
        axes.set_xlim(left=0)
        axes.grid(axis="y", color="#eeeeee")
        axes.set_xlabel("input firing rate (share of inputs that are spikes)")
        axes.legend(fontsize=SMALL)

    return draw


def profile(section: dict, nodes: dict[str, str], top: int = 12) -> Callable:
    """Where the batch-1 time goes: the slowest layers of the original and of the result, side by side."""

    def draw(axes) -> None:  # noqa: ANN001
        sides = [side for side in ("original", "result") if section.get(side)]
        panels = axes if len(sides) > 1 else [axes]
        longest = max(row["ms"] for side in sides for row in profile_rows(section[side], top))
        for panel, side in zip(panels, sides, strict=False):
            rows = profile_rows(section[side], top)
            labels = layer_labels([row["layer"] for row in rows], nodes)
            index = list(range(len(rows)))[::-1]
            panel.barh(index, [row["ms"] for row in rows], color="tab:red" if side == "result" else "tab:gray")
            for i, row in zip(index, rows, strict=True):
                panel.text(row["ms"], i, f" {row['ms']:.3f} ms ({row['share']:.0%})", va="center", fontsize=SMALL)
            panel.set_yticks(index, [f"{labels[row['layer']]} ({row['op']})" for row in rows], fontsize=SMALL)
            panel.set_xlim(0, longest * 1.45)
            panel.set_title(side, fontsize=10, loc="left")
            panel.set_xlabel("ms per batch-1 run")

    return draw
