"""The package keeps its shape: layers, no import cycles, no private names across modules, short modules and functions.

Read from the source with ``ast`` (nothing is imported), so a cycle hidden inside a function,
which Python resolves only at call time, still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "svtprune"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60  # lines of body (docstring included): the signature of a CLI command is its option table


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"


def imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    """(module, names) for every import that runs (type-checking-only blocks left out)."""
    found: list[tuple[str, list[str]]] = []
    skip = {id(n) for block in ast.walk(tree) if _type_checking_only(block) for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def import_graph(trees: dict[str, ast.Module]) -> dict[str, set[str]]:
    """Module -> svtprune modules it imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    graph: dict[str, set[str]] = {name: set() for name in trees}
    for name, tree in trees.items():
        for module, names in imports(tree):
            if module not in trees:
                continue
            submodules = {f"{module}.{n}" for n in names if f"{module}.{n}" in trees}
            if len(submodules) < len(names) or not names:  # something defined in the module itself
                graph[name].add(module)
            graph[name].update(submodules)
    return {name: {t for t in targets if t != name} for name, targets in graph.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm, iterative enough here)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


# the pipeline's layers: the CLI builds options and calls jobs; jobs are scripts over the parts; the search is a
# policy over the parts; the parts use graph/ and the runtime; graph/ uses nothing above the base modules
PARTS = ("importance", "quantization", "recover", "hardware", "spiking")
MODEL_LEVEL = {"checks", "evaluate"}  # top-level modules that read a model's graph: above graph/, below the parts
ALLOWED: dict[str, set[str]] = {
    "api": {"jobs", "base"},
    "cli": {"jobs", "base"},
    "jobs": {"search", *PARTS, "graph", "model", "base"},
    "search": {*PARTS, "graph", "model", "base"},
    "recover": {"quantization", "spiking", "graph", "model", "base"},  # fine-tuning trains quantized files too
    "quantization": {"spiking", "graph", "model", "base"},  # integer layouts run where neurons feed spikes
    "importance": {"graph", "model", "base"},
    "hardware": {"graph", "model", "base"},
    "spiking": {"graph", "base"},
    "model": {"graph", "base"},
    "graph": {"base"},
    "base": {"base"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"
    if parts[1] in ("cli", "jobs", "search", "graph", *PARTS):
        return parts[1]
    return "model" if parts[1] in MODEL_LEVEL else "base"


def test_every_import_goes_down_the_layers() -> None:
    graph = import_graph(sources())
    crossings = sorted(
        f"{name} ({layer_of(name)}) -> {target} ({layer_of(target)})"
        for name, targets in graph.items()
        for target in targets
        if layer_of(target) != layer_of(name) and layer_of(target) not in ALLOWED[layer_of(name)]
    )
    assert crossings == []


def test_the_layer_table_names_every_module() -> None:
    assert {layer_of(name) for name in sources()} <= set(ALLOWED)
    assert layer_of("svtprune.graph.taps") == "graph" and layer_of("svtprune.runtime") == "base"
    assert layer_of("svtprune.cli.app") == "cli" and layer_of("svtprune") == "api"


def test_the_cycle_finder_finds_a_known_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(sources())) == []


def test_no_module_imports_a_private_name_of_another() -> None:
    offenders = []
    for name, tree in sources().items():
        for module, names in imports(tree):
            if module.startswith("svtprune"):
                offenders += [f"{name}: from {module} import {n}" for n in names if n.startswith("_")]
    assert offenders == []


def test_modules_and_functions_stay_short() -> None:
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(PACKAGE)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.body[0].lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert long_modules == []
    assert long_functions == []
