"""Charts and the lineage graph as SVG drawn on the server: no chart library, no CDN.

Server-drawn SVG shows without JavaScript, is tested as markup, and a page's size
does not grow with a library. The lineage graph is laid out in columns by kind
(sources → products → syncs and the API, products ordered by depth), one box per
relation; `console.js` adds the clicks (a relation's columns and their upstream
columns, from the JSON the page carries).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from tidegate.observe.lineage import LineageGraph
from tidegate.timestamps import format_timestamp

WIDTH, HEIGHT, PAD = 340, 120, 28


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str, points: Sequence[tuple[float, float]], metric: str, unit: str = ""
) -> str:
    """A small line chart of (time, value) points, oldest first; empty data says so."""
    head = (
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" data-metric="{escape(metric)}" data-points="{len(points)}">'
        f"<title>{escape(title)}</title>"
        f'<text class="chart-title" x="4" y="12">{escape(title)}</text>'
    )
    if not points:
        return head + f'<text class="chart-empty" x="{PAD}" y="{HEIGHT // 2}">no data</text></svg>'
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    span_x = (x1 - x0) or 1.0
    inner_w, inner_h = WIDTH - PAD - 8, HEIGHT - PAD - 20

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            PAD + (x - x0) / span_x * inner_w if len(points) > 1 else PAD + inner_w / 2,
            20 + inner_h - (y - y0) / (y1 - y0) * inner_h,
        )

    coords = [at(x, y) for x, y in points]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
    dots = "".join(
        f'<circle class="dot" cx="{x:.1f}" cy="{y:.1f}" r="2.5"><title>'
        f"{format_timestamp(t)}: {_fmt(v)}{unit}"
        "</title></circle>"
        for (x, y), (t, v) in zip(coords, points, strict=True)
    )
    axis = (
        f'<line class="axis" x1="{PAD}" y1="{20 + inner_h}" x2="{WIDTH - 8}" y2="{20 + inner_h}"/>'
        f'<text class="tick" x="2" y="24">{_fmt(y1)}</text>'
        f'<text class="tick" x="2" y="{20 + inner_h}">{_fmt(y0)}</text>'
        f'<text class="tick" x="{WIDTH - 8}" y="{HEIGHT - 4}" text-anchor="end">'
        f"last {_fmt(ys[-1])}{unit}</text>"
    )
    return head + axis + f'<path class="line" d="{path}"/>' + dots + "</svg>"


@dataclass(frozen=True)
class Box:
    relation: str
    kind: str  # source | product | sync | api
    x: float
    y: float
    columns: int


BOX_W, BOX_H, GAP_X, GAP_Y = 190, 34, 70, 18


def relation_of(node: str) -> str:
    return node.rsplit(".", 1)[0]


def kind_of(relation: str, products: set[str]) -> str:
    if relation.startswith("sync:"):
        return "sync"
    if relation.startswith("api:"):
        return "api"
    return "product" if relation in products else "source"


def relation_edges(graph: LineageGraph) -> dict[tuple[str, str], set[str]]:
    """(upstream relation, downstream relation) -> kinds, from the column graph."""
    edges: dict[tuple[str, str], set[str]] = defaultdict(set)
    for node, parents in graph.upstream.items():
        for parent, kinds in parents.items():
            a, b = relation_of(parent), relation_of(node)
            if a != b:
                edges[(a, b)] |= kinds
    return edges


def layout(graph: LineageGraph, products: Sequence[str]) -> list[Box]:
    """Columns: sources, products by depth, then syncs and API endpoints."""
    known = set(products)
    relations: dict[str, int] = defaultdict(int)
    for node in graph.upstream:
        relations[relation_of(node)] += 1
    edges = relation_edges(graph)
    depth: dict[str, int] = {}
    for name in products:  # products come in build order: parents first
        ups = [a for (a, b) in edges if b == name and a in known]
        depth[name] = 1 + max((depth.get(u, 1) for u in ups), default=0)
    last = max(depth.values(), default=1)
    columns: dict[int, list[str]] = defaultdict(list)
    for relation in sorted(relations):
        kind = kind_of(relation, known)
        col = {"source": 0, "sync": last + 1, "api": last + 1}.get(kind, depth.get(relation, 1))
        columns[col].append(relation)
    boxes = []
    for col, names in sorted(columns.items()):
        for row, relation in enumerate(sorted(names, key=lambda r: (kind_of(r, known), r))):
            boxes.append(
                Box(
                    relation,
                    kind_of(relation, known),
                    10 + col * (BOX_W + GAP_X),
                    10 + row * (BOX_H + GAP_Y),
                    relations[relation],
                )
            )
    return boxes


def lineage_svg(graph: LineageGraph, products: Sequence[str], focus: str | None = None) -> str:
    boxes = layout(graph, products)
    where = {b.relation: b for b in boxes}
    width = max((b.x for b in boxes), default=0) + BOX_W + 20
    height = max((b.y for b in boxes), default=0) + BOX_H + 20
    parts = [
        f'<svg id="lineage" role="img" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}"><title>lineage</title>'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>'
    ]
    for (a, b), kinds in sorted(relation_edges(graph).items()):
        if a not in where or b not in where:
            continue
        s, t = where[a], where[b]
        x1, y1, x2, y2 = s.x + BOX_W, s.y + BOX_H / 2, t.x, t.y + BOX_H / 2
        mid = (x1 + x2) / 2
        parts.append(
            f'<path class="edge" data-from="{escape(a)}" data-to="{escape(b)}" '
            f'data-kinds="{escape(",".join(sorted(kinds)))}" marker-end="url(#arrow)" '
            f'd="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}"/>'
        )
    for box in boxes:
        label = box.relation if len(box.relation) <= 26 else box.relation[:25] + "…"
        focused = " focus" if focus and box.relation == focus else ""
        parts.append(
            f'<g class="node {box.kind}{focused}" data-relation="{escape(box.relation)}" '
            f'tabindex="0"><rect x="{box.x:.0f}" y="{box.y:.0f}" width="{BOX_W}" '
            f'height="{BOX_H}" rx="6"/><text x="{box.x + 8:.0f}" y="{box.y + 15:.0f}">'
            f"{escape(label)}</text>"
            f'<text class="sub" x="{box.x + 8:.0f}" y="{box.y + 28:.0f}">{box.kind} · '
            f"{box.columns} col</text><title>{escape(box.relation)}</title></g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def column_map(graph: LineageGraph) -> dict[str, dict[str, list[list[str]]]]:
    """relation -> column -> [[upstream node, kinds], ...]: what a click shows."""
    out: dict[str, dict[str, list[list[str]]]] = defaultdict(dict)
    for node, parents in sorted(graph.upstream.items()):
        relation, _, column = node.rpartition(".")
        out[relation][column] = [[p, ",".join(sorted(k))] for p, k in sorted(parents.items())]
    return out
