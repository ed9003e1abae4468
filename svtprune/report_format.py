"""Numbers and names as a person reads them in the HTML report: units, separators, ratios, short names.

The JSON report keeps raw keys and plain numbers (scripts read it); the HTML page says what each
number is, in one set of units (B, KiB, MiB; ms; %), and how the result compares with the original.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

KIB, MIB = 2**10, 2**20

# the original-vs-compressed table: key, label, kind (rows a report lacks, such as older reports', are left out)
ROWS = (
    ("param_bytes", "Parameters", "bytes"),
    ("file_bytes", "File size", "bytes"),
    ("accuracy", "Accuracy, held-out images", "accuracy"),
    ("latency_ms_b1", "Latency, batch 1 (median)", "ms"),
    ("fastest_ms_b1", "Latency, batch 1 (fastest run)", "ms"),
    ("latency_ms_b64", "Latency, batch 64 (median)", "ms"),
    ("fastest_ms_b64", "Latency, batch 64 (fastest run)", "ms"),
    ("latency_ms_b1_1thread", "Latency, batch 1 on one thread", "ms"),
    ("peak_rss_mb", "Peak memory running batch 1", "mib"),
    ("peak_rss_mb_runtime_only", "of it, Python and ONNX Runtime before the model", "mib"),
)
EXPORTER_HEADS = {"net", "model", "module", "_orig_mod", "onnx"}
TAILS = {"weight", "bias", "weight_bias", "kernel"}
OP_NAME = re.compile(r"^[A-Z][A-Za-z]*(_\d+)?$")  # an exporter's node suffix: Conv, MatMul_3


def size(n: float | None) -> str:
    """'646,332 B (631.2 KiB)': the exact count, and the binary unit a person can hold."""
    if n is None:
        return "–"
    if abs(n) < KIB:
        return f"{n:,.0f} B"
    unit, scale = ("KiB", KIB) if abs(n) < MIB else ("MiB", MIB)
    return f"{n:,.0f} B ({n / scale:,.1f} {unit})"


def kib(n: float) -> str:
    """A byte count in KiB or MiB alone (plot notes, where the exact count would crowd)."""
    return f"{n / KIB:,.1f} KiB" if abs(n) < MIB else f"{n / MIB:,.2f} MiB"


def value(x: float | None, kind: str) -> str:
    """One cell of the summary table, with its unit."""
    if x is None:
        return "–"
    if kind == "bytes":
        return size(x)
    if kind == "accuracy":
        return f"{x:.2f}%"
    if kind == "ms":
        return f"{x:,.2f} ms" if x < 100 else f"{x:,.1f} ms"
    if kind == "mib":
        return f"{x:,.1f} MiB"
    return f"{x:,}"


def change(before: float | None, after: float | None, kind: str) -> str:
    """How the result compares: '-30.6%' (sizes), '-1.00 pt' (accuracy), '1.38x faster' (times)."""
    if before is None or after is None:
        return ""
    if kind == "accuracy":
        return f"{after - before:+.2f} pt"
    if kind == "ms":
        if after <= 0 or before <= 0:
            return ""
        ratio = before / after
        if abs(ratio - 1) < 0.005:
            return "same"
        return f"{ratio:.2f}x faster" if ratio > 1 else f"{1 / ratio:.2f}x slower"
    if before == 0:
        return ""
    if before == after:
        return "same"
    return f"{after / before - 1:+.1%}".replace("+-", "-")


def summary_table(original: dict, compressed: dict) -> str:
    """Original against result, each row with its unit and the change (the JSON key as the row's tooltip)."""
    rows = []
    for key, label, kind in ROWS:
        if key not in original and key not in compressed:
            continue
        before, after = original.get(key), compressed.get(key)
        indent = " class='sub'" if key.endswith("_only") else ""
        rows.append(
            f"<tr><th scope='row' title='{key}'{indent}>{label}</th><td>{value(before, kind)}</td>"
            f"<td>{value(after, kind)}</td><td class='change'>{change(before, after, kind)}</td></tr>"
        )
    return (
        "<table id='compare' class='numbers'><tr><th></th><th>original</th><th>compressed</th><th>change</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def short_name(name: str) -> str:
    """A layer or group name without the exporter's noise.

    ``/blocks.3/attn/qkv/Conv`` -> ``blocks.3.attn.qkv``; ``net.blocks.0.mlp.fc1.0.weight`` ->
    ``blocks.0.mlp.fc1``; ``onnx::Conv_12`` -> ``Conv_12``; ``node_Conv_860`` -> ``Conv_860``.
    """
    text = re.sub(r"\[.*\]$", "", name.replace("onnx::", ""))
    text = re.sub(r"^node_", "", text)
    parts = [p for p in re.split(r"[/.:]+", text) if p]
    while len(parts) > 1 and parts[0] in EXPORTER_HEADS:
        parts.pop(0)
    while len(parts) > 1 and (parts[-1] in TAILS or OP_NAME.match(parts[-1])):
        parts.pop()
    if len(parts) > 2 and parts[-1].isdigit() and any(p.isdigit() for p in parts[:-1]):
        parts.pop()  # 'fc1.0' (a Sequential's index) once the block's own index is there
    return ".".join(parts) or name


def short_names(names: list[str]) -> dict[str, str]:
    """``short_name`` of each, except where two would read the same: those keep their full names."""
    short = {n: short_name(n) for n in names}
    seen: dict[str, int] = {}
    for s in short.values():
        seen[s] = seen.get(s, 0) + 1
    return {n: s if seen[s] == 1 else n for n, s in short.items()}


def node_names(model: str | Path | None) -> dict[str, str]:
    """Node -> a readable name (its weight's), read from the model's graph; empty when it cannot be read.

    The energy section names layers by ONNX node (``node_Conv_860``); the weight's name
    (``net.blocks.0.mlp.fc1.0.weight``) is the module a person wrote. A product of two activations
    (attention's ``node_matmul``) has no weight: it takes the module of the weight before it
    (``blocks.0.attn.matmul``).
    """
    import onnx

    if model is None or not Path(model).is_file():
        return {}
    try:
        graph = onnx.load(str(model), load_external_data=False).graph
    except (OSError, ValueError, RuntimeError):  # a file that is not a model: node names stay
        return {}
    weights = {init.name for init in graph.initializer}
    found, module = {}, ""
    for node in graph.node:
        named = [i for i in node.input[:2] if i in weights and re.search(r"[A-Za-z_]\w*\.\w", i)]
        if node.name and named:
            found[node.name] = named[0]
            module = short_name(named[0]).rpartition(".")[0]
        elif node.name and module and node.op_type == "MatMul" and not set(node.input[:2]) & weights:
            found[node.name] = f"{module}.{short_name(node.name)}"
    return found


def removed_table(report: dict) -> str:
    """What was removed: per channel group kept/total and the share removed; the time steps when cut."""
    groups = report.get("groups") or []
    section = report.get("timesteps") or {}
    if not groups and not section:
        return ""
    labels = short_names([g["group"] for g in groups])
    rows = []
    for g in groups:
        cut = g["before"] - g["after"]
        share = f"-{cut / g['before']:.0%}" if cut else "none"
        rows.append(
            f"<tr{'' if cut else ' class=muted'}><th scope='row' title='{html.escape(g['group'])}'>"
            f"{html.escape(labels[g['group']])}</th><td>{g['after']:,} / {g['before']:,}</td><td>{share}</td></tr>"
        )
    if groups:
        kept, total = sum(g["after"] for g in groups), sum(g["before"] for g in groups)
        rows.append(
            f"<tr class='total'><th scope='row'>all {len(groups)} groups</th><td>{kept:,} / {total:,}</td>"
            f"<td>{(kept - total) / max(total, 1):.0%}</td></tr>"
        )
    if section and section.get("chosen") is not None:
        steps, chosen = section["original"], section["chosen"]
        share = f"-{(steps - chosen) / steps:.0%}" if chosen < steps else "none"
        rows.append(f"<tr><th scope='row'>time steps</th><td>{chosen} / {steps}</td><td>{share}</td></tr>")
    if section and section.get("stem_once"):
        rows.append(
            f"<tr><th scope='row' title='{html.escape(section['stem_once'])}'>stem (layers before the first "
            f"neuron)</th><td>once per image</td><td>{section['original'] - 1} of {section['original']} runs</td></tr>"
        )
    tokens = (section or {}).get("tokens") or {}
    if tokens.get("left_out"):
        kept, total = tokens["total"] - tokens["left_out"], tokens["total"]
        rows.append(
            f"<tr><th scope='row'>tokens through the blocks</th><td>{kept} / {total}</td>"
            f"<td>-{tokens['left_out'] / total:.0%}</td></tr>"
        )
    touched = sum(g["after"] < g["before"] for g in groups)
    note = f"<p>{touched} of {len(groups)} channel groups pruned; hover a name for the full one.</p>" if groups else ""
    return (
        f"<h2>What was removed</h2>{note}<table id='removed' class='numbers'><tr><th>group</th>"
        f"<th>kept / total channels</th><th>removed</th></tr>{''.join(rows)}</table>"
    )


def profile_rows(rows: list[dict], top: int = 12) -> list[dict]:
    """The ``top`` slowest layers, and the summary's ``other`` row (all the rest) when it has one."""
    named = [row for row in rows if row["layer"] != "other"]
    return named[:top] + [row for row in rows if row["layer"] == "other"]


def layer_labels(layers: list[str], nodes: dict[str, str]) -> dict[str, str]:
    """Short names for profiled layers; a segment named after an ONNX node ('from node_Conv_973') takes
    that node's weight name where the original model gives one ('from blocks.1.attn.qkv_conv_bn')."""

    def readable(layer: str) -> str:
        return re.sub(r"node_\w+", lambda m: short_name(nodes.get(m.group(0), m.group(0))), layer)

    shown = short_names([readable(layer) for layer in layers])
    return {layer: shown[readable(layer)] for layer in layers}


def profile_table(profile: dict, nodes: dict[str, str], top: int = 12) -> str:
    """The slowest layers of the original and of the result, side by side: time and share of the batch-1 run.

    Two tables, not one keyed by layer: a rewritten graph may name its layers differently."""
    tables = []
    for side in ("original", "result"):
        rows = profile_rows(profile.get(side) or [], top)
        if not rows:
            continue
        labels = layer_labels([row["layer"] for row in rows], nodes)
        body = "".join(
            f"<tr><th scope='row' title='{html.escape(row['layer'])}'>{html.escape(labels[row['layer']])}</th>"
            f"<td class='text'>{html.escape(row['op'])}</td><td>{row['ms']:,.3f} ms</td>"
            f"<td>{row['share']:.1%}</td></tr>"
            for row in rows
        )
        tables.append(
            f"<table id='profile-{side}' class='numbers'><caption>{side}</caption><tr><th>layer</th><th>op</th>"
            f"<th>time</th><th>share</th></tr>{body}</table>"
        )
    return f"<div id='profile' class='side'>{''.join(tables)}</div>"


STYLE = """body{font-family:system-ui,sans-serif;max-width:1120px;margin:auto;padding:0 16px;color:#222}
body{line-height:1.45}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:2px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:4px 12px;border-bottom:1px solid #e4e4e4}
th{text-align:left;font-weight:600}th[scope=row]{font-weight:normal}#compare th[scope=row]{font-weight:600}
table.numbers td{text-align:right;font-variant-numeric:tabular-nums}
table.numbers td.text{text-align:left}tr.muted{color:#888}tr.total th,tr.total td{border-top:2px solid #bbb}
#compare th.sub{padding-left:28px;font-weight:normal}
div.side{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}caption{font-weight:600;text-align:left}
td.change{color:#333;font-weight:600}img{max-width:100%}p.note{color:#555;font-size:.92em}"""
