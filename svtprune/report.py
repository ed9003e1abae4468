"""Reports beside the output model: ``out.report.json`` and a self-contained ``out.report.html``.

Plots are matplotlib PNGs embedded as base64, so the HTML file opens anywhere on its own.
"""

from __future__ import annotations

import base64
import html
import io
import json

# the original-vs-compressed table (rows a report lacks, such as those of older reports, are left out)
ROWS = ("param_bytes", "file_bytes", "accuracy", "latency_ms_b1", "latency_ms_b64", "latency_ms_b1_1thread",
        "peak_rss_mb", "peak_rss_mb_runtime_only")  # fmt: skip
PARETO_TOP = 5.0  # points of accuracy drop the trade-off plot shows


def held_out_images(data: dict) -> str:
    """'2,000 held-out images', and which sample they came from when the data had more than were split."""
    text = f"{data['held_out_images']:,} held-out images"
    used = data["search_images"] + data["held_out_images"]
    if data.get("images", used) > used:
        text += f" (the split took a seeded {used:,} of the data's {data['images']:,}: --max-images)"
    return text


def report_texts(report: dict) -> tuple[str, str]:
    """The JSON and the HTML report of one run (written as ``out.report.json`` and ``out.report.html``)."""
    return json.dumps(report, indent=1) + "\n", render_html(report)


def _figure_png(draw, panels: int = 1) -> str:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(7 if panels == 1 else 10, 4), dpi=100)
    draw(axes)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _sensitivity(report: dict):  # noqa: ANN202
    def draw(axes) -> None:  # noqa: ANN001
        for name, points in report["sensitivity"].items():
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name[-28:])
        axes.axhline(
            _judged(report) - report["constraints"]["search_budget_points"],
            color="red",
            linestyle="--",
            label="search budget",
        )
        axes.set_xlabel("pruning rate of the group alone")
        axes.set_ylabel("accuracy on the search split (%)")
        axes.legend(fontsize=6)

    return draw


def _search_path(report: dict):  # noqa: ANN202
    def draw(axes) -> None:  # noqa: ANN001
        evals = report["evaluations"]
        axes.scatter([e["param_bytes"] / 1e3 for e in evals], [e["accuracy"] for e in evals], s=12, label="candidates")
        axes.scatter(
            [report["compressed"]["param_bytes"] / 1e3],
            [report["compressed"]["accuracy_search"]],
            color="red",
            s=60,
            marker="*",
            label="chosen",
        )
        axes.scatter(
            [report["original"]["param_bytes"] / 1e3],
            [_judged(report)],
            color="black",
            s=40,
            marker="s",
            label="original",
        )
        axes.set_xlabel("parameter kB")
        axes.set_ylabel("accuracy on the search split (%)")
        axes.legend(fontsize=8)

    return draw


def _pareto(pareto: dict):  # noqa: ANN202
    """Left: accuracy drop against bytes, every candidate and the front. Right: the two files' latency and RAM."""

    def draw(axes) -> None:  # noqa: ANN001
        left, right = axes
        for stage, marker in (("pruning", "o"), ("quantization", "^")):
            points = [p for p in pareto["candidates"] if p["stage"] == stage]
            if points:
                left.scatter([p["param_bytes"] / 1e3 for p in points], [p["accuracy_drop"] for p in points],
                             s=14, marker=marker, alpha=0.6, label=f"{stage} candidates")  # fmt: skip
        front = pareto["front"]
        left.step([p["param_bytes"] / 1e3 for p in front], [p["accuracy_drop"] for p in front], where="post",
                  color="black", label="front (measured on every search image)")  # fmt: skip
        drops = [p["accuracy_drop"] for p in pareto["candidates"]]
        if drops and max(drops) > PARETO_TOP:  # a few broken candidates would flatten the rest
            left.set_ylim(min(drops) - 0.5, PARETO_TOP)
            left.set_title(f"drops above {PARETO_TOP:g} points not shown", fontsize=8)
        left.set_xlabel("parameter kB (log)")
        left.set_ylabel("accuracy drop, search images (points)")
        left.legend(fontsize=7)
        files = pareto["files"]
        for side, color in (("original", "black"), ("compressed", "red")):
            f = files[side]
            ms = f.get("fastest_ms_b1") or f.get("latency_ms_b1")
            if ms is None:
                continue
            right.scatter([f["param_bytes"] / 1e3], [ms], color=color, s=50, label=side)
            ram = f.get("peak_rss_mb")
            note = f"{f['accuracy']:.2f}% held-out" + (f", {ram:.0f} MB peak RAM" if ram else "")
            right.annotate(note, (f["param_bytes"] / 1e3, ms), fontsize=7,
                           textcoords="offset points", xytext=(6, 6))  # fmt: skip
        timed = [p for p in pareto["candidates"] if "latency_ms_b1" in p]
        if timed:
            right.scatter([p["param_bytes"] / 1e3 for p in timed], [p["latency_ms_b1"] for p in timed], s=12,
                          alpha=0.6, label="timed candidates")  # fmt: skip
        right.set_xlabel("parameter kB (log)")
        right.set_ylabel("batch-1 latency, ms")
        right.legend(fontsize=7)
        for panel in axes:
            _log_kb(panel)

    return draw


def _log_kb(axes) -> None:  # noqa: ANN001
    """A log axis of kB labelled in plain numbers, without the crowded minor labels."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())


def _widths(report: dict):  # noqa: ANN202
    def draw(axes) -> None:  # noqa: ANN001
        groups = report["groups"]
        index = range(len(groups))
        axes.barh([i + 0.2 for i in index], [g["before"] for g in groups], height=0.4, label="before")
        axes.barh([i - 0.2 for i in index], [g["after"] for g in groups], height=0.4, label="after")
        axes.set_yticks(list(index), [g["group"][-30:] for g in groups], fontsize=6)
        axes.set_xlabel("channels")
        axes.legend(fontsize=8)

    return draw


def _bits(report: dict):  # noqa: ANN202
    def draw(axes) -> None:  # noqa: ANN001
        layers = report["quantization"]["layers"]
        index = range(len(layers))
        axes.barh(list(index), [row["bits"] for row in layers], color="tab:purple")
        axes.set_yticks(list(index), [row["layer"][-34:] for row in layers], fontsize=6)
        axes.set_xticks([2, 4, 8, 16, 32])
        axes.set_xscale("log", base=2)
        axes.set_xlabel("weight bits (32 = float, untouched)")

    return draw


def _bits_table(report: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(row['layer'])}</td><td>{row['params']}</td><td>{row['bits']}</td>"
        f"<td>{row['weight_bytes']}</td></tr>"
        for row in report["quantization"]["layers"]
    )
    q = report["quantization"]
    stored = ", ".join(f"{role} {size:,}" for role, size in q.get("stored_bytes", {}).items())
    return (
        f"<h2>Bits per layer</h2><p>{q['full_evaluations']} full evaluations, {q['proxy_evaluations']} drift "
        f"evaluations, {q['gated_out']} candidates kept from a full evaluation by the drift gate.</p>"
        + (f"<p id='stored'>Parameter bytes of the written file by role: {stored}.</p>" if stored else "")
        + f"<table id='bits'><tr><th>layer</th><th>parameters</th><th>bits</th><th>weight bytes</th></tr>{rows}</table>"
    )


def _firing_rates(report: dict):  # noqa: ANN202
    def draw(axes) -> None:  # noqa: ANN001
        names = []
        for name, marker in (("original", "o"), ("compressed", "x")):
            layers = [layer for layer in report["energy"][name]["layers"] if layer["spike_input"]]
            axes.plot(range(len(layers)), [layer["firing_rate"] for layer in layers], marker=marker, linestyle="",
                      label=name)  # fmt: skip
            names = names or [layer["node"][-18:] for layer in layers]
        axes.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
        axes.set_ylabel("input firing rate")
        axes.legend(fontsize=8)

    return draw


def _energy_table(report: dict) -> str:
    e = report["energy"]
    rows = "".join(
        f"<tr><td>{label}</td><td>{e['original'][key]:,.1f}</td><td>{e['compressed'][key]:,.1f}</td></tr>"
        for label, key in (
            ("energy per image (uJ)", "energy_uJ_per_image"),
            ("synaptic ops, spike inputs (AC)", "total_sops"),
            ("MACs, real-valued inputs", "total_macs_real_input"),
        )
    )
    constants = e["constants"]
    return (
        f"<h2>Energy (45 nm estimate)</h2><table id='energy'><tr><th></th><th>original</th><th>compressed</th></tr>"
        f"{rows}</table><p>E_MAC {constants['E_MAC_pJ']} pJ, E_AC {constants['E_AC_pJ']} pJ "
        f"({html.escape(constants['source'])}); firing rates measured on {e['original']['images']} held-out images."
        + (f" Energy saved: {report['energy_saving']:.1%}." if "energy_saving" in report else "")
        + "</p>"
    )


def _extras(report: dict) -> str:
    """Speed-up, fine-tuning and held-out step-backs, each only when the run had them."""
    parts = []
    if "speedup" in report:
        objective = report["constraints"].get("objective", "memory")
        parts.append(
            f"<p id='speed'>Objective: {html.escape(objective)}. ORT CPU speed-up {report['speedup']['b1']:.2f}x at "
            f"batch 1, {report['speedup']['b64']:.2f}x at batch 64 (fastest runs; medians "
            f"{report['speedup_median']['b1']:.2f}x / {report['speedup_median']['b64']:.2f}x).</p>"
        )
    limit = (report.get("constraints") or {}).get("time_limit")
    if limit and limit["reached"]:
        parts.append(
            f"<p id='time-limit'>The search stopped at its time limit of {limit['seconds']:g} s: "
            f"{limit['candidates_not_measured']} steps were not measured; the best accepted before it is kept.</p>"
        )
    if report.get("timesteps"):
        parts.append(_time_steps(report["timesteps"]))
    if "finetune" in report:
        f = report["finetune"]
        parts.append(
            f"<h2>Fine-tuning</h2><p id='finetune'>{f['images']} training images, {f['epochs']} epoch(s)"
            f"{', quantization-aware (weights trained on their stored grids)' if f.get('quantization_aware') else ''}"
            f": held-out accuracy {f['accuracy_before']:.2f}% before, {f['accuracy_after']:.2f}% after.</p>"
        )
    checks = report.get("held_out_checks", [])
    if len(checks) > 1:
        rows = "".join(
            f"<tr><td>{html.escape(c['label'])}</td><td>{c['param_bytes']}</td><td>{c['accuracy']}</td></tr>"
            for c in checks
        )
        parts.append(
            "<h2>Held-out checks</h2><p>The search's choice missed the budget on held-out data; these smaller plans "
            f"it had accepted were checked in turn.</p><table id='held-out'><tr><th>plan</th><th>parameter bytes</th>"
            f"<th>held-out accuracy</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _time_steps(section: dict) -> str:
    """The time phase (compress with a speed goal): each T' judged, and what was kept."""
    once = html.escape(section["stem_once"] or section.get("stem_once_note") or "not applied")
    rows = "".join(
        f"<tr><td>{c['timesteps']}</td><td>{c['accuracy_search']}</td><td>{c['verdict']}</td>"
        f"<td>{c['accuracy_held']}</td><td>{c.get('latency_ms_b1', '')}</td><td>{c.get('speedup') or ''}</td></tr>"
        for c in section["candidates"]
    )
    return (
        f"<h2>Time steps</h2><p id='time-steps'>{section['original']} -> {section['chosen']} "
        f"({html.escape(section['reason'])}); stem: {once}.</p><table id='time-candidates'><tr><th>T'</th>"
        "<th>search accuracy</th><th>verdict</th><th>held-out accuracy</th><th>batch-1 ms</th><th>speed-up</th>"
        f"</tr>{rows}</table>"
    )


def render_html(report: dict) -> str:
    o, c = report["original"], report["compressed"]
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{o.get(k)}</td><td>{c.get(k)}</td></tr>" for k in ROWS if k in o or k in c
    )
    plots = []
    if report.get("sensitivity"):
        plots.append(("Sensitivity of each group", _figure_png(_sensitivity(report))))
    plots.append(("Search path: every candidate evaluated", _figure_png(_search_path(report))))
    if report.get("groups"):
        plots.append(("Channels kept per group", _figure_png(_widths(report))))
    if report.get("quantization"):
        plots.append(("Weight bits per layer", _figure_png(_bits(report))))
    if report.get("pareto"):
        plots.append(("Trade-offs explored: bytes, accuracy, latency, RAM", _figure_png(_pareto(report["pareto"]), 2)))
    if report.get("energy"):
        plots.append(("Firing rates of spike-input layers", _figure_png(_firing_rates(report))))
    images = "".join(f"<h2>{t}</h2><img alt='{t}' src='data:image/png;base64,{p}'/>" for t, p in plots)
    status = "met" if report["constraints_met"] else "NOT met"
    bits = _bits_table(report) if report.get("quantization") else ""
    bits += _energy_table(report) if report.get("energy") else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>svtprune report</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:auto}}td,th{{padding:4px 12px}}</style></head><body>
<h1>svtprune {html.escape(report["command"])}: {html.escape(report["method"])}</h1>
<p id="summary">Memory saved: <b>{report["memory_saving"]:.1%}</b> of parameter bytes; accuracy drop
<b>{report["accuracy_drop"]:.2f}</b> points on {held_out_images(report["data"])}
({html.escape(report["metric"])}); constraints {status} ({html.escape(report["reason"])});
{_evaluation_count(report)}, {report.get("images_forwarded", 0):,} images forwarded{_phases(report)}, in
{report["wall_seconds"]:.0f} s.</p>
{_extras(report)}<table><tr><th></th><th>original</th><th>compressed</th></tr>{rows}</table>{images}{bits}
</body></html>"""


def _evaluation_count(report: dict) -> str:
    """How many candidates were measured, and how many records repeat an earlier measurement (no images)."""
    reused = sum(1 for e in report["evaluations"] if e.get("reused"))
    measured = len(report["evaluations"]) - reused
    return f"{measured} evaluations" + (f" (and {reused} reused without new images)" if reused else "")


def _phases(report: dict) -> str:
    """Where the forwarded images went (baseline, search, re-fit, held-out), when the job counted phases."""
    phases = report.get("images_forwarded_by_phase") or {}
    return f" ({', '.join(f'{html.escape(k)} {v:,}' for k, v in phases.items())})" if phases else ""


def _judged(report: dict) -> float:
    """The original's accuracy on the images the pruning search judged candidates on (older reports: the split)."""
    return report["original"].get("accuracy_judged", report["original"]["accuracy_search"])
