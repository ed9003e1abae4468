"""Reports beside the output model: ``out.report.json`` and a self-contained ``out.report.html``.

The JSON keeps raw keys for scripts; the HTML page is for a person: labelled rows with units and
the change against the original (report_format.py), plots embedded as base64 PNGs (report_plots.py),
so the file opens anywhere on its own.
"""

from __future__ import annotations

import html
import json

from svtprune import report_plots as plots
from svtprune.report_format import (
    STYLE,
    change,
    node_names,
    profile_rows,
    profile_table,
    removed_table,
    short_names,
    size,
    summary_table,
)


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


def _bits_table(report: dict) -> str:
    q = report["quantization"]
    labels = short_names([row["layer"] for row in q["layers"]])
    rows = "".join(
        f"<tr><th scope='row' title='{html.escape(row['layer'])}'>{html.escape(labels[row['layer']])}</th>"
        f"<td>{row['params']:,}</td><td>{row['bits']}</td><td>{size(row['weight_bytes'])}</td></tr>"
        for row in q["layers"]
    )
    stored = ", ".join(f"{html.escape(role)} {size(n)}" for role, n in q.get("stored_bytes", {}).items())
    return (
        f"<h2>Bits per layer</h2><p>{q['full_evaluations']:,} full evaluations, {q['proxy_evaluations']:,} drift "
        f"evaluations, {q['gated_out']:,} candidates kept from a full evaluation by the drift gate.</p>"
        + (f"<p id='stored'>Parameter bytes of the written file by role: {stored}.</p>" if stored else "")
        + "<table id='bits' class='numbers'><tr><th>layer</th><th>parameters</th><th>bits</th><th>weight bytes</th>"
        f"</tr>{rows}</table>"
    )


ENERGY_ROWS = (
    ("Energy per image (µJ)", "energy_uJ_per_image", "{:,.1f}"),
    ("Synaptic operations, spike inputs (AC)", "total_sops", "{:,.0f}"),
    ("MACs, real-valued inputs", "total_macs_real_input", "{:,.0f}"),
)


def _energy_table(report: dict) -> str:
    e = report["energy"]
    rows = "".join(
        f"<tr><th scope='row'>{label}</th><td>{form.format(e['original'][key])}</td>"
        f"<td>{form.format(e['compressed'][key])}</td>"
        f"<td class='change'>{change(e['original'][key], e['compressed'][key], 'count')}</td></tr>"
        for label, key, form in ENERGY_ROWS
    )
    constants = e["constants"]
    return (
        "<h2>Energy (45 nm estimate)</h2><table id='energy' class='numbers'><tr><th></th><th>original</th>"
        f"<th>compressed</th><th>change</th></tr>{rows}</table><p class='note'>E_MAC {constants['E_MAC_pJ']} pJ, "
        f"E_AC {constants['E_AC_pJ']} pJ ({html.escape(constants['source'])}); firing rates measured on "
        f"{e['original']['images']:,} held-out images."
        + (f" Energy saved: {report['energy_saving']:.1%}." if "energy_saving" in report else "")
        + "</p>"
    )


def _speed(report: dict) -> str:
    """The measured speed-up and whether the search ran out of time, each only when the run had them."""
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
    return "".join(parts)


def _extras(report: dict) -> str:
    """Fine-tuning and held-out step-backs, each only when the run had them."""
    parts = []
    if "finetune" in report:
        f = report["finetune"]
        parts.append(
            f"<h2>Fine-tuning</h2><p id='finetune'>{f['images']:,} training images, {f['epochs']} epoch(s)"
            f"{', quantization-aware (weights trained on their stored grids)' if f.get('quantization_aware') else ''}"
            f": held-out accuracy {f['accuracy_before']:.2f}% before, {f['accuracy_after']:.2f}% after.</p>"
        )
    checks = report.get("held_out_checks", [])
    if len(checks) > 1:
        rows = "".join(
            f"<tr><th scope='row'>{html.escape(c['label'])}</th><td>{size(c['param_bytes'])}</td>"
            f"<td>{c['accuracy']:.2f}%</td></tr>"
            for c in checks
        )
        parts.append(
            "<h2>Held-out checks</h2><p>The search's choice missed the budget on held-out data; these smaller plans "
            "it had accepted were checked in turn.</p><table id='held-out' class='numbers'><tr><th>plan</th>"
            f"<th>parameters</th><th>held-out accuracy</th></tr>{rows}</table>"
        )
    return "".join(parts)


def _norm_folding(report: dict) -> str:
    """One line when BatchNormalizations were folded into the layers before them (exact, kept where faster)."""
    applied = (report.get("norm_folding") or {}).get("applied")
    if not applied:
        return ""
    return f"<p id='norm-folding'>{html.escape(applied)} (exact; kept because ORT ran it faster).</p>"


def _time_steps(section: dict) -> str:
    """The time phase (compress with a speed goal): each T' judged, and what was kept."""
    once = html.escape(section["stem_once"] or section.get("stem_once_note") or "not applied")
    rows = "".join(
        f"<tr><td>{c['timesteps']}</td><td>{_percent(c['accuracy_search'])}</td><td class='text'>{c['verdict']}</td>"
        f"<td>{_percent(c['accuracy_held'])}</td><td>{_ms(c.get('latency_ms_b1'))}</td>"
        f"<td>{_times(c.get('speedup'))}</td></tr>"
        for c in section["candidates"]
    )
    return (
        f"<h2>Time steps</h2><p id='time-steps'>{section['original']} -> {section['chosen']} "
        f"({html.escape(section['reason'])}); stem: {once}.</p><table id='time-candidates' class='numbers'><tr>"
        "<th>T'</th><th>search accuracy</th><th>verdict</th><th>held-out accuracy</th><th>batch-1 latency</th>"
        f"<th>speed-up</th></tr>{rows}</table>{_tokens(section.get('tokens'))}"
    )


def _tokens(section: dict | None) -> str:
    """The tokens left out of the blocks after the time steps: each count judged, and what was kept."""
    if not section or "candidates" not in section:
        return f"<p id='tokens'>Tokens: all kept ({html.escape(section['note'])}).</p>" if section else ""
    rows = "".join(
        f"<tr><td>{c['left_out']}</td><td>{_percent(c['accuracy_search'])}</td><td class='text'>{c['verdict']}</td>"
        f"<td>{_percent(c['accuracy_held'])}</td><td>{_ms(c.get('latency_ms_b1'))}</td>"
        f"<td>{_over_last(c.get('speedup_over_last'))}</td></tr>"
        for c in section["candidates"]
    )
    return (
        f"<p id='tokens'>Tokens through the blocks: {section['total'] - section['left_out']} of {section['total']} "
        "(least important left out first, training-free).</p><table id='token-candidates' class='numbers'><tr>"
        "<th>tokens left out</th><th>search accuracy</th><th>verdict</th><th>held-out accuracy</th>"
        f"<th>batch-1 latency</th><th>faster than the last kept (batch 1 / 64)</th></tr>{rows}</table>"
    )


def _over_last(speedup: dict | None) -> str:
    return "–" if not speedup else f"{speedup['b1']:.2f}x / {speedup['b64']:.2f}x"


def _percent(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}%"


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:,.2f} ms"


def _times(x: float | None) -> str:
    return "–" if not x else f"{x:.2f}x"


def _figure(title: str, png: str, note: str = "", level: int = 2) -> str:
    return f"<h{level}>{title}</h{level}>{note}<img alt='{title}' src='data:image/png;base64,{png}'/>"


def _removed(report: dict) -> str:
    """What was removed (table), with the channels-per-group plot under it."""
    text = removed_table(report)
    if report.get("groups"):
        png = plots.figure_png(plots.widths(report), height=plots.rows_height(len(report["groups"])))
        text += f"<img alt='Channels kept per group' src='data:image/png;base64,{png}'/>"
    return text


def _profile(report: dict) -> str:
    """Where the batch-1 time goes, layer by layer (only when the run profiled its models)."""
    section = report.get("profile")
    sides = [side for side in ("original", "result") if (section or {}).get(side)]
    if not sides:
        return ""
    nodes = node_names(report.get("model"))
    rows = max(len(profile_rows(section[side])) for side in sides)
    png = plots.figure_png(plots.profile(section, nodes), len(sides), plots.rows_height(rows), stacked=True)
    note = "<p>The slowest layers of one batch-1 run (ONNX Runtime's profiler), and their share of it.</p>"
    return _figure("Where the time goes", png, note) + profile_table(section, nodes)


def _quantization(report: dict) -> str:
    if not report.get("quantization"):
        return ""
    layers = len(report["quantization"]["layers"])
    png = plots.figure_png(plots.bits(report), height=plots.rows_height(layers))
    return _figure("Weight bits per layer", png) + _bits_table(report)


def _search(report: dict) -> str:
    """How the search went: each group's sensitivity, every candidate, the trade-offs."""
    judged, parts = _judged(report), ["<h2>How the search went</h2>"]
    if report.get("sensitivity"):
        png = plots.figure_png(plots.sensitivity(report, judged))
        parts.append(_figure("Sensitivity of each group", png, level=3))
    png = plots.figure_png(plots.search_path(report, judged))
    parts.append(_figure("Search path: every candidate evaluated", png, level=3))
    if report.get("pareto"):
        png = plots.figure_png(plots.pareto(report["pareto"]), 2, height=4.5)
        parts.append(_figure("Trade-offs explored: bytes, accuracy, latency, RAM", png, level=3))
    return "".join(parts)


def _energy(report: dict) -> str:
    if not report.get("energy"):
        return ""
    spiking = sum(layer["spike_input"] for layer in report["energy"]["original"]["layers"])
    png = plots.figure_png(plots.firing_rates(report), height=plots.rows_height(spiking))
    return _energy_table(report) + _figure("Firing rates of spike-input layers", png)


def render_html(report: dict) -> str:
    """The page a person reads: the headline, the comparison table, what was removed, then the detail."""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>svtprune report</title>
<style>{STYLE}</style></head><body>
<h1>svtprune {html.escape(report["command"])}: {html.escape(report["method"])}</h1>
<p id="summary">Memory saved: <b>{report["memory_saving"]:.1%}</b> of parameter bytes; accuracy drop
<b>{report["accuracy_drop"]:.2f}</b> points on {held_out_images(report["data"])}
({html.escape(report["metric"])}); {_constraints(report)};
{_evaluation_count(report)}, {report.get("images_forwarded", 0):,} images forwarded{_phases(report)}, in
{report["wall_seconds"]:,.0f} s.</p>
{summary_table(report["original"], report["compressed"])}{_speed(report)}{_removed(report)}{_profile(report)}
{_time_steps(report["timesteps"]) if report.get("timesteps") else ""}{_norm_folding(report)}
{_quantization(report)}{_extras(report)}
{_energy(report)}{_search(report)}
</body></html>"""


def _constraints(report: dict) -> str:
    """'constraints met', or which were not and why."""
    if report["constraints_met"]:
        return "<b>constraints met</b>"
    return f"<b>constraints NOT met</b> ({html.escape(report['reason'])})"


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
