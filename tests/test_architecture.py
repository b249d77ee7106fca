"""The shape of the engine, read from its imports (ast): no import cycle between files or between the engine's
parts (its sub-packages and top-level modules), and every import runs down the layers that ARCHITECTURE.md draws.
A function-level or TYPE_CHECKING import counts like any other: a cycle is not hidden by where it is written."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "obliviate"

# The engine's parts from the ground up; a part may import parts of its own layer or below, never above.
LAYERS = [
    {"errors", "registry", "io", "hub", "environment", "plotting"},
    {"config", "data"},
    {"likelihood", "loggers"},
    {"models"},
    {"methods", "masks"},
    {"training", "evaluation"},
    {"attacks", "report", "comparison", "layer_curves", "sequence_plot"},
    {"plan"},
    {"runtime"},
    {"unlearner"},
    {"experiment", "cli"},
    {"study"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The engine's modules that ``path`` imports (a name imported from a package that is a module counts as it)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("obliviate")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("obliviate"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known}
    return {name for name in found if name in known}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def part(module: str) -> str:
    """The part a module belongs to: its sub-package (``obliviate.config.loader`` -> config) or itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def part_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph().items():
        edges.setdefault(part(module), set()).update(part(t) for t in targets if part(t) != part(module))
    return edges


def test_no_file_imports_another_that_imports_it_back():
    assert cycles(graph()) == []


def test_no_part_of_the_engine_imports_another_that_imports_it_back():
    assert cycles(part_graph()) == []


def test_every_part_has_a_layer_and_imports_run_down_the_layers():
    layer = {name: level for level, names in enumerate(LAYERS) for name in names}
    edges = part_graph()
    assert set(edges) - {"obliviate"} <= set(layer), f"parts without a layer: {set(edges) - set(layer)}"
    upward = sorted(f"{source} -> {target}" for source, targets in edges.items() if source in layer
                    for target in targets if target in layer and layer[target] > layer[source])
    assert upward == []


def test_the_graph_reader_sees_a_cycle(tmp_path):
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
