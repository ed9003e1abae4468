"""Where a model's batch-1 time goes: ORT's own profiler, per node, summed into layers a person can read.

A user who sees a compressed file run no faster needs to see which layers hold the time: an SViT
graph has hundreds of tiny nodes (every neuron unrolled over T steps), so the kernel times are
summed per layer. A layer is the module the exporter names: the ``pkg.torch.onnx.name_scopes``
metadata of the dynamo exporter (``net.blocks.0.attn.q_lif``), or the name scope of the classic one
(``/blocks.0/attn/q_conv/Conv`` -> ``blocks.0.attn.q_conv``); nodes a rewrite added without a scope
take a neighbour's. A graph without scopes (dynamo files saved without metadata) is cut into
segments instead: each weighted node (Conv, MatMul, Gemm with weights) and every node after it up to
the next one, named ``from <weighted node>``. ORT's own nodes (fusions, layout reorders) are read
back to the graph's through the optimised graph ORT saves beside its trace.
"""

from __future__ import annotations

import ast
import bisect
import json
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path

import onnx

from svtprune.runtime import make_session, run_times_ms

PROFILE_RUNS = 20  # profiled runs after the warm-up (eval --profile)
REPORT_RUNS = 10  # compress and quantize reports: 1.7-2.9 s for both reference files on a loaded 2-core machine
TOP_LAYERS = 15  # rows a summary keeps before its "other" row
KERNEL = "_kernel_time"
SCOPES = "pkg.torch.onnx.name_scopes"
TOP_LEVEL = "(top level)"
BEFORE_WEIGHTS = "(before the first weighted node)"
ADDED_BY_ORT = "(added by ONNX Runtime)"
IN_PLACE = {"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"}  # ORT's CPU kernels alias their input
WEIGHTED = {"Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}


def layer_profile(model: onnx.ModelProto | str | Path, runs: int = PROFILE_RUNS) -> list[dict]:
    """Kernel time per layer at batch 1 (a fixed-batch graph at its batch), slowest first.

    Rows ``{"layer", "op", "ms", "share"}``: ``op`` is the op type holding most of the layer's time as
    ORT ran it (``FusedMatMul`` where ORT fused), ``ms`` the sum over the layer's nodes of each node's
    kernel time over ``runs`` runs after a warm-up, less the profiler's own cost (``node_times_ms``),
    ``share`` its part of all layers' ms. The session is made as every other (``SVTPRUNE_THREADS``
    threads); ORT's trace and optimised graph go to a temporary folder, deleted after.
    """
    proto = named(model if isinstance(model, onnx.ModelProto) else onnx.load(str(model)))
    with tempfile.TemporaryDirectory(prefix="svtprune-profile-") as folder:
        session = make_session(proto, profile_to=Path(folder))
        run_times_ms(session, 1, runs)
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text())
        optimized = onnx.load(str(Path(folder) / "optimized.onnx"), load_external_data=False)
        del session
    times = node_times_ms(events)
    layers = ran_layers(optimized, proto, graph_layers(proto))
    return layer_rows(times, layers)


def profile_summary(
    original: onnx.ModelProto | str | Path,
    result: onnx.ModelProto | str | Path,
    top: int = TOP_LAYERS,
    runs: int = REPORT_RUNS,
) -> dict[str, list[dict]]:
    """Both files' layer profiles for a report: the ``top`` slowest layers of each and one ``other`` row."""
    return {
        "original": top_rows(layer_profile(original, runs), top),
        "result": top_rows(layer_profile(result, runs), top),
    }


def top_rows(rows: list[dict], top: int = TOP_LAYERS) -> list[dict]:
    """The first ``top`` rows, the rest summed into one row ``other`` (its op: how many layers it holds)."""
    if len(rows) <= top + 1:
        return rows
    rest = rows[top:]
    other = {
        "layer": "other",
        "op": f"{len(rest)} layers",
        "ms": round(sum(r["ms"] for r in rest), 4),
        "share": round(sum(r["share"] for r in rest), 5),
    }
    return [*rows[:top], other]


def named(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model``, or a copy whose nameless or repeated node names are made unique: the profiler and
    ORT's saved graph are matched by node name."""
    names = [n.name for n in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    seen: set[str] = set()
    for index, node in enumerate(copy.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.name or node.op_type}__{index}"
        seen.add(node.name)
    return copy


def node_times_ms(events: list[dict]) -> dict[str, tuple[str, float]]:
    """Node name -> (op type as ORT ran it, kernel ms per run), the first run (the warm-up) left out.

    ORT records whole microseconds, and its profiler spends 2-5 us of each node's recorded time writing
    the node's shapes down: a node's time is the mean of its fastest three quarters of runs (a loaded
    machine's outliers out, sub-microsecond resolution back), less that per-node cost
    (``profiler_cost_ms``). Summed over the nodes, what is left matched the fastest unprofiled batch-1
    run within 5% on the reference Spikformer (2.55 ms vs 2.54), SDT (0.83 vs 0.87) and its T=2 cut
    (1.42 vs 1.38), where the raw times summed to 2-6x that."""
    spans = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    spans = spans[1:]
    starts = [s for s, _ in spans]
    per_run: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(spans))
    ops: dict[str, str] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith(KERNEL):
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index < 0 or event["ts"] > spans[index][1]:
            continue
        name = event["name"][: -len(KERNEL)]
        per_run[name][index] += event["dur"] / 1000  # a node run several times in one run (a subgraph): the sum
        ops[name] = event.get("args", {}).get("op_name", "?")
    times = {name: (ops[name], typical(values)) for name, values in per_run.items()}
    cost = profiler_cost_ms(times)
    return {name: (op, max(spent - cost, 0.0)) for name, (op, spent) in times.items()}


def typical(values: list[float]) -> float:
    """Mean of the fastest three quarters: slow outliers (another process ran) out, the rest averaged."""
    kept = sorted(values)[: max(1, len(values) * 3 // 4)]
    return sum(kept) / len(kept)


def profiler_cost_ms(times: dict[str, tuple[str, float]]) -> float:
    """The profiler's own time in each node's record: the median time of nodes that do no work (ORT runs
    Reshape, Squeeze, Unsqueeze, Flatten and Identity in place), else the fastest node's time."""
    idle = [spent for op, spent in times.values() if op in IN_PLACE]
    if len(idle) >= 3:
        return statistics.median(idle)
    return min((spent for _, spent in times.values()), default=0.0)


def layer_rows(times: dict[str, tuple[str, float]], layers: dict[str, str]) -> list[dict]:
    """Sum node times per layer: rows slowest first, shares of the total."""
    ms: dict[str, float] = defaultdict(float)
    by_op: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for name, (op, spent) in times.items():
        layer = layers.get(name, ADDED_BY_ORT)
        ms[layer] += spent
        by_op[layer][op] += spent
    total = sum(ms.values()) or 1.0
    rows = [
        {"layer": layer, "op": max(by_op[layer].items(), key=lambda item: item[1])[0], "ms": round(spent, 4),
         "share": round(spent / total, 5)}
        for layer, spent in ms.items()
    ]  # fmt: skip
    return sorted(rows, key=lambda row: (-row["ms"], row["layer"]))


def ran_layers(optimized: onnx.ModelProto, model: onnx.ModelProto, layers: dict[str, str]) -> dict[str, str]:
    """Layer of every node ORT ran (its saved, optimised graph): by the graph's node of the same name,
    else the one that produced the same output, else the node or tensor ORT named it after
    (``node_matmul/MatmulTransposeFusion/``, ``getitem_14_nchwc``), else (layout reorders) a neighbour's
    layer, consumers first, so a reorder counts with the convolution it serves."""
    of_output = {o: layers[n.name] for n in model.graph.node for o in n.output if n.name in layers}
    nodes = list(optimized.graph.node)
    found = {}
    for node in nodes:
        layer = layers.get(node.name) or next((of_output[o] for o in node.output if o in of_output), None)
        layer = layer or named_after(node.name, layers, of_output)
        if layer is not None:
            found[node.name] = layer
    by_output = {output: n.name for n in nodes for output in n.output}
    return spread(nodes, found, by_output)


def named_after(name: str, layers: dict[str, str], of_output: dict[str, str]) -> str | None:
    """The layer of the longest node or tensor name that ``name`` starts with, up to a ``_`` or ``/``."""
    for cut in sorted((i for i, c in enumerate(name) if c in "_/" and i >= 3), reverse=True):
        layer = layers.get(name[:cut]) or of_output.get(name[:cut])
        if layer is not None:
            return layer
    return None


def spread(nodes: list[onnx.NodeProto], found: dict[str, str], producer: dict[str, str]) -> dict[str, str]:
    """Give each node not in ``found`` the layer of a consumer, else of a producer, until none changes."""
    consumers: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node.name)
    changed = True
    while changed:
        changed = False
        for node in nodes:
            if node.name in found:
                continue
            near = [c for o in node.output for c in consumers[o]] + [producer[i] for i in node.input if i in producer]
            layer = next((found[n] for n in near if n in found), None)
            if layer is not None:
                found[node.name] = layer
                changed = True
    return found


def graph_layers(model: onnx.ModelProto) -> dict[str, str]:
    """Node name -> layer: by the exporter's scopes when at least half the nodes have one, else by weighted segments."""
    nodes = list(model.graph.node)
    scopes = {n.name: s for n in nodes if (s := declared_scope(n)) is not None}
    if nodes and 2 * len(scopes) >= len(nodes):
        producer = {o: n.name for n in nodes for o in n.output}
        return readable(spread(nodes, scopes, producer))
    return segments(model)


def declared_scope(node: onnx.NodeProto) -> str | None:
    """The module a node belongs to as the exporter wrote it ('' at the top), or None where it says nothing."""
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            return str(scopes[-2]) if isinstance(scopes, list) and len(scopes) >= 2 else ""
    if node.name.startswith("/"):
        return ".".join(part for part in node.name.split("/")[1:-1] if part)
    return None


def readable(scopes: dict[str, str]) -> dict[str, str]:
    """Scopes without the module path every node shares (a wrapper's ``net``), the top level named so."""
    parts = [s.split(".") for s in scopes.values() if s]
    root: list[str] = []
    for column in zip(*parts, strict=False) if parts else ():
        if len(set(column)) != 1:
            break
        root.append(column[0])
    if parts and all(len(p) == len(root) for p in parts):  # one module only: keep its name
        root = root[:-1]
    cut = len(".".join(root)) + 1 if root else 0
    return {name: scope[cut:] if len(scope) > cut else TOP_LEVEL for name, scope in scopes.items()}


def segments(model: onnx.ModelProto) -> dict[str, str]:
    """Node -> ``from <weighted node>``: the last weighted node at or before it in graph order.

    Nodes that only compute weights (a DequantizeLinear of an initializer, a Constant) go with the
    node that uses them."""
    weights = {t.name for t in model.graph.initializer}
    nodes = list(model.graph.node)
    weight_nodes: set[str] = set()
    for node in nodes:
        if all(i in weights for i in node.input if i):
            weights.update(node.output)
            weight_nodes.add(node.name)
    layers: dict[str, str] = {}
    current = BEFORE_WEIGHTS
    for node in nodes:
        if node.name in weight_nodes:
            continue
        if node.op_type in WEIGHTED and any(i in weights for i in node.input[1:]):
            current = f"from {node.name}"
        layers[node.name] = current
    producer = {o: n.name for n in nodes for o in n.output}
    return spread(nodes, layers, producer)
