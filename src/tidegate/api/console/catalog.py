"""Catalog, product and lineage pages: what there is, what it promises, where it comes from.

Facts come from where the CLI reads them: the project (contracts, purposes, policy),
the metadata store (versions), the freshness ledger, the observation store (pillars,
quality) and the lineage graph (`observe/lineage.py`). The product page's live sample is
a lookup through `Serving.lookup`, under a purpose the signed-in roles hold: the guard
treats it and the API's own `serve` audit record is written. Quality history and a
check's failing rows come from `quality.py`, read through the guard the same way.
"""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.responses import Response

from tidegate.api.console import quality
from tidegate.api.console.core import Page
from tidegate.api.console.svg import column_map, line_chart, lineage_svg
from tidegate.egress.serve.service import Call, iso
from tidegate.errors import BadRequestError, NotFoundError, TidegateError

MAX_SAMPLE_KEYS = 50
PILLARS = {
    "freshness": ("freshness.event_lag_s", "freshness.since_update_s"),
    "volume": ("volume.rows", "volume.rows_changed", "volume.rows_removed"),
    "schema": ("schema.columns", "schema.changed"),
}


def _freshness(page: Page) -> dict[str, Any]:
    return dict(page.console.platform.meta.freshness.all())


def _quality(store: Any, product: str) -> tuple[str, list[dict[str, Any]]]:
    checks = store.quality(product)
    if not checks:
        return "no checks", []
    failed = [c for c in checks if not c.get("passed")]
    if not failed:
        return "passing", checks
    blocking = any(c.get("severity") == "error" for c in failed)
    return ("failing" if blocking else "warning"), checks


def _entries(page: Page) -> list[dict[str, Any]]:
    from tidegate.products.planner import plan_project

    platform = page.console.platform
    project = platform.project
    seen = _freshness(page)
    plans = plan_project(project)
    now = time.time()
    mine = page.purposes()
    rows = []
    store = platform.meta.observations
    for name, product in project.products.items():
        if not page.may_read(name):
            continue
        config = product.config
        live = platform.meta.live_version(name)
        slo = project.freshness_seconds(name)
        state = seen.get(name)
        lag = state.current_lag(now) if state else (now - live.built_at if live else None)
        status, _ = _quality(store, name)
        rows.append(
            {
                "name": name,
                "description": config.description,
                "owner": config.owner,
                "purposes": list(config.purposes),
                "allowed": [p for p in config.purposes if p in mine],
                "tags": list(config.tags),
                "slo": slo,
                "lag": lag,
                "within_slo": lag is not None and lag <= slo,
                "contract_version": config.version,
                "version": live.version if live else None,
                "built_at": live.built_at if live else None,
                "rows": live.rows if live else None,
                "quality": status,
                "mode": plans[name].mode if name in plans else "batch",
                "columns": {
                    column: [spec.type, spec.classification or "", spec.description or ""]
                    for column, spec in config.columns.items()
                },
            }
        )
    return rows


def _search_text(entry: dict[str, Any]) -> str:
    """What the search matches: names, descriptions, owner, tags, purposes, columns with
    their types, classifications and descriptions."""
    return " ".join(
        [
            entry["name"],
            entry["description"] or "",
            entry["owner"] or "",
            " ".join(entry["tags"]),
            " ".join(entry["purposes"]),
            " ".join(f"{c} {' '.join(v)}" for c, v in entry["columns"].items()),
        ]
    ).lower()


def catalog(page: Page) -> Response:
    query = page.param("q")
    entries = _entries(page)
    words = query.lower().split()
    for entry in entries:
        entry["search"] = _search_text(entry)
    shown = [e for e in entries if all(w in e["search"] for w in words)]
    page.audit("catalog", detail={"q": query[:100], "products": len(shown)})
    return page.render(
        "catalog.html", active="catalog", q=query, products=shown, total=len(entries)
    )


def _matrix(page: Page, name: str) -> tuple[list[str], list[dict[str, Any]]]:
    policy = page.console.platform.project.policy
    product = page.console.platform.project.products[name]
    purposes = list(product.config.purposes)
    rows = []
    for column, spec in product.config.columns.items():
        cells = []
        for purpose in purposes:
            treatment = policy.treatment_for(purpose, spec.classification)
            cells.append(treatment.treatment)
        rows.append(
            {
                "column": column,
                "type": spec.type,
                "classification": spec.classification or "",
                "description": spec.description or "",
                "nullable": spec.nullable,
                "cells": cells,
            }
        )
    return purposes, rows


def _pillars(page: Page, name: str) -> tuple[dict[str, list[str]], Any, list[dict[str, Any]]]:
    charts: dict[str, list[str]] = {"freshness": [], "volume": [], "distribution": [], "schema": []}
    store = page.console.platform.meta.observations
    names = store.series_names(name)
    for pillar, metrics in PILLARS.items():
        for metric in metrics:
            if (metric, "") in names:
                points = [(p.at, p.value) for p in store.series(name, metric, status=None)]
                unit = "s" if metric.endswith("_s") else ""
                charts[pillar].append(line_chart(metric, points[-60:], metric, unit))
    for metric, column in names:
        if column and metric in ("null_percent", "distinct_count", "mean"):
            points = [(p.at, p.value) for p in store.series(name, metric, column, status=None)]
            charts["distribution"].append(
                line_chart(f"{column} {metric}", points[-60:], f"{column}.{metric}")
            )
    schema = store.last_schema(name)
    _, checks = _quality(store, name)
    return charts, schema, checks


def _sample(page: Page, name: str, purpose: str, keys_text: str) -> dict[str, Any] | None:
    keys = [k.strip() for k in keys_text.replace("\n", ",").split(",") if k.strip()]
    if not purpose or not keys:
        return None
    if len(keys) > MAX_SAMPLE_KEYS:
        raise BadRequestError(f"at most {MAX_SAMPLE_KEYS} keys in a sample")
    serving = page.console.serving
    call = Call(action="serve", product=name, purpose=purpose, principal=page.principal)
    call.detail["via"] = "console"
    try:
        answer = serving.lookup(call, page.credentials.token, keys, authenticated=True)
    except TidegateError as err:
        serving.audit_denied(call, err)  # a refused sample is audited like a refused read
        raise
    columns = [c for c, t in answer["treatments"].items() if t != "drop"]
    return {
        "purpose": purpose,
        "columns": columns,
        "treatments": answer["treatments"],
        "results": answer["results"],
        "version": answer["version"],
    }


def product(page: Page) -> Response:
    from tidegate.products.planner import plan_project

    name = page.request.path_params["product"]
    project = page.console.platform.project
    found = project.products.get(name)
    if found is None:
        raise NotFoundError(f"no product named {name[:80]!r}")
    page.require(page.may_read(name), f"read product {name!r}", "its roles do not list it")
    purposes, matrix = _matrix(page, name)
    charts, schema, checks = _pillars(page, name)
    mine = [p for p in purposes if p in page.purposes()]
    purpose = page.param("purpose") or (mine[0] if mine else "")
    sample = _sample(page, name, purpose, page.param("keys"))
    plan = plan_project(project).get(name)
    versions = page.console.platform.meta.versions(name)
    checked = quality.history(page, name, [v.version for v in versions])
    check = page.param("check")
    failing = quality.failing_rows(page, name, purpose, check, page.param("check_version"))
    graph = page.console.lineage
    ups = sorted({p.rsplit(".", 1)[0] for n in graph.nodes_of(name) for p in graph.upstream[n]})
    downs = sorted(
        {c.rsplit(".", 1)[0] for n in graph.nodes_of(name) for c in graph.downstream.get(n, {})}
    )
    page.audit(
        "product",
        product=name,
        detail={"sample": bool(sample), "failing_rows": check or None, "purpose": purpose},
    )
    config = found.config
    return page.render(
        "product.html",
        active="catalog",
        name=name,
        config=config,
        purposes=purposes,
        matrix=matrix,
        charts=charts,
        schema=schema,
        checks=checks,
        mine=mine,
        purpose=purpose,
        keys=page.param("keys"),
        sample=sample,
        plan=plan,
        versions=sorted(versions, key=lambda v: v.version, reverse=True)[:20],
        upstream=ups,
        downstream=downs,
        slo=project.freshness_seconds(name),
        iso=iso,
        history=checked,
        history_checks=sorted({c for h in checked for c in h["checks"]}),
        failing=failing,
    )


def lineage(page: Page) -> Response:
    graph = page.console.lineage
    products = list(page.console.platform.project.build_order())
    focus = page.param("focus") or None
    svg = lineage_svg(graph, products, focus)
    columns = json.dumps(column_map(graph), sort_keys=True).replace("</", "<\\/")
    labels = json.dumps(graph.labels, sort_keys=True).replace("</", "<\\/")
    page.audit("lineage")
    return page.render(
        "lineage.html", active="lineage", svg=svg, columns=columns, labels=labels, focus=focus or ""
    )
