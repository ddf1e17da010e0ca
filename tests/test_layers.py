"""The package graph of src/tidegate is a DAG that follows the layers below.

Every import counts: module level, inside functions, and under `TYPE_CHECKING` (a type
that names an upper layer is a dependency too). A package may import a package of a
lower layer, or one earlier in its own layer (the order inside a layer is declared
here, so the same-layer edges cannot form a cycle). The README's architecture section
shows the same map.
"""

from __future__ import annotations

import ast
import itertools
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tidegate"

#: Layers from the bottom up; inside a layer, a package may import those listed before it.
LAYERS: list[list[str]] = [
    [
        "errors",
        "extras",
        "type_families",
        "timestamps",
        "console",
        "private",
        "sqlite_db",
        "project",
    ],  # 0
    ["meta", "log", "store", "audit"],  # 1: backends behind small interfaces
    ["platform"],  # 2: the wiring: every backend opened once, handed down
    ["privacy", "ingest", "observe", "products"],  # 3: stages
    ["egress"],  # 4: serve handlers, sync, destinations, export
    ["requests", "runtime"],  # 5: data-subject requests, worker and scheduler
    ["api"],  # 6: the one HTTP app
    ["demo", "cli"],  # 7: what people run
]
RANK = {
    package: (layer, order)
    for layer, names in enumerate(LAYERS)
    for order, package in enumerate(names)
}


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, *([node.module] if node.module else [])])
    else:
        target = node.module or ""
    if target == "tidegate":  # `from tidegate import x`: x is the package
        return [f"tidegate.{alias.name}" for alias in node.names]
    return [target]


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tidegate" and len(parts) > 1 else None


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> ["module:line imports target", ...]."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        module, is_package = _module_name(path)
        source = _package(module)
        if source is None:  # tidegate/__init__.py: the public facade over every layer
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, module, is_package):
                imported = "tidegate" if target == "tidegate" else _package(target)
                if imported and imported != source:
                    edges[(source, imported)].append(f"{module}:{node.lineno} imports {target}")
    return edges


def _packages() -> set[str]:
    found = {p.name for p in SRC.iterdir() if p.is_dir() and any(p.glob("*.py"))}
    return found | {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}


def test_every_package_has_a_layer() -> None:
    missing = sorted(_packages() - set(RANK))
    assert not missing, f"place these packages in LAYERS (tests/test_layers.py): {missing}"


def test_imports_point_down() -> None:
    upward = []
    for (source, imported), where in sorted(import_edges().items()):
        if imported == "tidegate":
            upward += [f"{w}: the public facade `tidegate` is for users only" for w in where]
        elif imported in RANK and RANK[imported] >= RANK[source]:
            upward += [
                f"{w}: {source} (layer {RANK[source][0]}) may not import {imported} "
                f"(layer {RANK[imported][0]})"
                for w in where
            ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, imported in import_edges():
        graph[source].add(imported)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            edges = import_edges()
            detail = [edges[(a, b)][0] for a, b in itertools.pairwise(cycle)]
            raise AssertionError(f"import cycle {' -> '.join(cycle)}:\n" + "\n".join(detail))


def test_the_graph_is_read_from_every_kind_of_import() -> None:
    """The checker itself: function-level and TYPE_CHECKING imports are edges too."""
    edges = import_edges()
    assert ("cli", "platform") in edges  # function-level imports in the commands
    assert any("imports tidegate.platform" in w for w in edges[("observe", "platform")])


def test_one_http_framework() -> None:
    """Every route is plain Starlette, assembled in `tidegate.api`: nothing imports FastAPI."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        module, is_package = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, module, is_package):
                if target.split(".")[0] == "fastapi":
                    found.append(f"{module}:{node.lineno} imports {target}")
    assert not found, found
