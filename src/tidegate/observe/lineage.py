"""Column-level lineage: product SQL (sqlglot.lineage), then syncs and the serving API.

Two kinds of dependency, as in OpenLineage's column lineage:

* **direct**: the value of an output column is computed from these input columns
  (`sqlglot.lineage`, walked to the base tables);
* **indirect**: the input columns decide *which rows* there are or how they group:
  columns in `WHERE`, `JOIN ... ON`, `GROUP BY`, `HAVING`, `QUALIFY`. sqlglot's lineage
  does not return these, so the qualified tree is walked scope by scope: an output
  column gets the indirect dependencies of every scope (CTE, derived table, the outer
  query) its value passes through, each resolved through CTEs to base columns.

The graph's nodes are `relation.column` for sources and products, `sync:NAME.FIELD`
for destination fields (from the sync's field mapping, seen through the sync's purpose:
a column the purpose drops does not flow, a hashed, masked or generalized one is marked
so on its edge and label, and the label names the destination's real location), and
`api:PRODUCT.COLUMN` for what `GET /v1/products/PRODUCT/entities/{key}` returns
(before purpose treatments).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from sqlglot import exp, parse_one
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import Scope, build_scope

from tidegate.project.locations import location_label
from tidegate.project.project import Product, Project

DIALECT = "duckdb"
CLAUSES = {
    "where": "filter",
    "having": "filter",
    "qualify": "filter",
    "joins": "join",
    "group": "group_by",
}

Ref = tuple[str, str]  # (relation, column)


@dataclass
class ProductLineage:
    product: str
    direct: dict[str, set[Ref]] = field(default_factory=dict)
    indirect: dict[str, dict[Ref, set[str]]] = field(default_factory=dict)
    #: every indirect dependency of the query, whichever output it reaches
    dataset: dict[Ref, set[str]] = field(default_factory=lambda: defaultdict(set))


def _qualified(product: Product, project: Project) -> exp.Query:
    from tidegate.project.checks import relation_schema

    tree = qualify(
        parse_one(product.sql, dialect=DIALECT),
        schema=relation_schema(project),
        dialect=DIALECT,
        validate_qualify_columns=False,
        identify=False,
    )
    assert isinstance(tree, exp.Query)
    return tree


def _resolve(scope: Scope, column: exp.Column, depth: int = 0) -> set[Ref]:
    """The base columns a column reference in `scope` stands for."""
    source = scope.sources.get(column.table or "")
    if isinstance(source, exp.Table):
        return {(source.name, column.name)}
    if not isinstance(source, Scope) or depth > 50:
        return set()
    found: set[Ref] = set()
    branches = getattr(source, "union_scopes", None) or [source]
    for branch in branches:
        expression = branch.expression
        if not isinstance(expression, exp.Select):
            continue
        for select in expression.selects:
            if select.alias_or_name == column.name:
                for inner in select.find_all(exp.Column):
                    found |= _resolve(branch, inner, depth + 1)
    return found


def _clause(column: exp.Column, scope: Scope) -> str | None:
    node: exp.Expr = column
    while node.parent is not None and node.parent is not scope.expression:
        node = node.parent
    if node.parent is None:
        return None
    return CLAUSES.get(node.arg_key or "")


def _scope_dependencies(scope: Scope) -> dict[Ref, set[str]]:
    deps: dict[Ref, set[str]] = defaultdict(set)
    for column in scope.columns:
        kind = "filter" if scope.is_subquery else _clause(column, scope)
        if kind is None:
            continue
        for ref in _resolve(scope, column):
            deps[ref].add(kind)
    return deps


def product_lineage(product: Product, project: Project) -> ProductLineage:
    from sqlglot.lineage import lineage

    tree = _qualified(product, project)
    root = build_scope(tree)
    assert root is not None
    scopes = {id(s.expression): s for s in root.traverse()}
    scope_deps = {key: _scope_dependencies(s) for key, s in scopes.items()}
    subquery_deps: dict[Ref, set[str]] = defaultdict(set)
    for key, scope in scopes.items():
        if scope.is_subquery:
            for ref, kinds in scope_deps[key].items():
                subquery_deps[ref] |= kinds
    result = ProductLineage(product.name)
    for deps in scope_deps.values():
        for ref, kinds in deps.items():
            result.dataset[ref] |= kinds
    nodes = lineage(
        None, tree, schema={}, dialect=DIALECT, scope=root, copy=False, trim_selects=False
    )
    assert isinstance(nodes, dict)
    for name, node in nodes.items():
        direct: set[Ref] = set()
        indirect: dict[Ref, set[str]] = defaultdict(set)
        visited = {id(root.expression)}
        for step in node.walk():
            if isinstance(step.source, exp.Table) and not step.downstream:
                direct.add((step.source.name, step.name.split(".")[-1]))
            elif id(step.source) in scopes:
                visited.add(id(step.source))
        for key in visited:
            for ref, kinds in scope_deps[key].items():
                indirect[ref] |= kinds
        for ref, kinds in subquery_deps.items():
            indirect[ref] |= kinds
        result.direct[name] = direct
        result.indirect[name] = dict(indirect)
    return result


# ---------------------------------------------------------------- syncs

TREATED = {"hash": "hashed", "mask": "masked", "generalize": "generalized"}


def sync_fields(project: Project, sync_name: str) -> dict[str, list[tuple[str, str]]]:
    """The fields a sync really sends, each with its product columns and their treatment
    under the sync's purpose (`clear`, `hash`, `mask`, `generalize`).

    The same rule as the sync engine's mapping (`egress/sync/mapping.py`): a field that
    reads a column the purpose drops is not sent, so it has no lineage; with the default
    "all columns" mapping a dropped column simply is not a field."""
    cfg = project.syncs[sync_name].config
    product = project.products[cfg.product]
    policy = project.policy
    treatments = {
        name: policy.treatment_for(cfg.purpose, spec.classification).treatment
        for name, spec in product.columns.items()
    }
    fields: dict[str, list[tuple[str, str]]] = {}
    for field_name, spec in cfg.field_specs(list(product.columns)).items():
        sources: list[tuple[str, str]] = [(c, treatments.get(c, "drop")) for c in spec.sources()]
        if any(t == "drop" for _, t in sources):
            continue
        fields[field_name] = sources
    return fields


# ---------------------------------------------------------------- the whole graph


@dataclass
class LineageGraph:
    #: node -> {upstream node -> kinds ("direct", "filter", "join", "group_by", "sync", "api",
    #: and on sync edges the treatment when not clear: "hash", "mask", "generalize")}
    upstream: dict[str, dict[str, set[str]]] = field(default_factory=lambda: defaultdict(dict))
    labels: dict[str, str] = field(default_factory=dict)

    def add(self, node: str, parent: str, kind: str) -> None:
        self.upstream[node].setdefault(parent, set()).add(kind)
        self.upstream.setdefault(parent, {})

    @property
    def downstream(self) -> dict[str, dict[str, set[str]]]:
        down: dict[str, dict[str, set[str]]] = defaultdict(dict)
        for node, parents in self.upstream.items():
            for parent, kinds in parents.items():
                down[parent][node] = kinds
        return down

    def nodes_of(self, relation: str) -> list[str]:
        return sorted(n for n in self.upstream if n.rsplit(".", 1)[0] == relation)

    def walk(self, start: str, direction: str) -> dict[str, dict[str, set[str]]]:
        """Edges reachable from `start` (child -> parent -> kinds), up or down."""
        graph = self.upstream if direction == "up" else self.downstream
        edges: dict[str, dict[str, set[str]]] = {}
        todo, seen = [start], {start}
        while todo:
            node = todo.pop()
            for other, kinds in graph.get(node, {}).items():
                child, parent = (node, other) if direction == "up" else (other, node)
                edges.setdefault(child, {})[parent] = kinds
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return edges


def build_graph(project: Project) -> LineageGraph:
    graph = LineageGraph()
    for name in project.build_order():
        product = project.products[name]
        found = product_lineage(product, project)
        for column in product.columns:
            node = f"{name}.{column}"
            graph.upstream.setdefault(node, {})
            for relation, source_column in found.direct.get(column, set()):
                graph.add(node, f"{relation}.{source_column}", "direct")
            for (relation, source_column), kinds in found.indirect.get(column, {}).items():
                for kind in kinds:
                    graph.add(node, f"{relation}.{source_column}", kind)
            api = f"api:{name}.{column}"
            graph.add(api, node, "api")
            graph.labels[api] = f"GET /v1/products/{name}/entities/{{key}} → {column}"
    for sync_name, sync in project.syncs.items():
        cfg = sync.config
        if cfg.product not in project.products:
            continue
        location = location_label(cfg.destination, project.root)
        for field_name, sources in sync_fields(project, sync_name).items():
            node = f"sync:{sync_name}.{field_name}"
            graph.upstream.setdefault(node, {})
            treated = sorted({t for _, t in sources if t != "clear"})
            note = f" ({', '.join(TREATED[t] for t in treated)})" if treated else ""
            graph.labels[node] = f"{location}.{field_name}{note}"
            for column, treatment in sources:
                graph.add(node, f"{cfg.product}.{column}", "sync")
                if treatment != "clear":
                    graph.add(node, f"{cfg.product}.{column}", treatment)
    return graph


# ---------------------------------------------------------------- rendering


def _node_id(node: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in node)


def to_mermaid(edges: dict[str, dict[str, set[str]]], labels: dict[str, str]) -> str:
    lines = ["flowchart LR"]
    nodes = sorted({n for child, parents in edges.items() for n in (child, *parents)})
    for node in nodes:
        label = labels.get(node, node).replace('"', "'")
        lines.append(f'  {_node_id(node)}["{label}"]')
    for child, parents in sorted(edges.items()):
        for parent, kinds in sorted(parents.items()):
            arrow = "-->" if "direct" in kinds or kinds & {"sync", "api"} else "-.->"
            lines.append(
                f"  {_node_id(parent)} {arrow}|{','.join(sorted(kinds))}| {_node_id(child)}"
            )
    return "\n".join(lines) + "\n"


def to_dot(edges: dict[str, dict[str, set[str]]], labels: dict[str, str]) -> str:
    lines = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box];"]
    nodes = sorted({n for child, parents in edges.items() for n in (child, *parents)})
    for node in nodes:
        label = labels.get(node, node).replace('"', '\\"')
        lines.append(f'  "{node}" [label="{label}"];')
    for child, parents in sorted(edges.items()):
        for parent, kinds in sorted(parents.items()):
            style = "solid" if "direct" in kinds or kinds & {"sync", "api"} else "dashed"
            lines.append(
                f'  "{parent}" -> "{child}" [label="{",".join(sorted(kinds))}", style={style}];'
            )
    lines.append("}")
    return "\n".join(lines) + "\n"
