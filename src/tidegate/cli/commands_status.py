"""`status` and `explain`: how fresh each product is and why, judged once
(`products/slo.py`) so both agree with `/metrics`; CDC slots and their lag; and
`cdc reset`, the way back from a dropped replication slot."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.options import JsonOption
from tidegate.console import console, print_json, table
from tidegate.errors import ServiceUnavailableError, TidegateError
from tidegate.timestamps import timestamp_text

cdc_app = typer.Typer(
    help="PostgreSQL change data capture: replication slots of `cdc: logical` sources.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("explain")(explain)
    app.add_typer(cdc_app, name="cdc")


def _when(timestamp: float | None) -> str:
    return timestamp_text(timestamp)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "∞"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def _number(value: float) -> float | None:
    """JSON has no infinity: a lag that never ends (never built) is null."""
    return None if math.isinf(value) else value


def _share(windows: dict[str, float], window: str) -> str:
    share = windows.get(window)
    return "-" if share is None else f"{share * 100:.1f}%"


def explain(project_dir: ProjectDir = Path("."), json_output: JsonOption = False) -> None:
    """How each product is kept fresh (incremental, batch or static), why, and whether
    it is within its freshness SLO now."""
    from tidegate.platform import Platform
    from tidegate.products.planner import plan_project
    from tidegate.products.slo import slo_states

    with Platform.open(project_dir) as platform:
        plans = plan_project(platform.project)
        states = {s.product: s for s in slo_states(platform, plans)}
    if json_output:
        print_json(
            [
                {
                    "product": plan.product,
                    "mode": plan.mode,
                    "freshness_seconds": plan.freshness,
                    "reasons": list(plan.reasons),
                    "streams": sorted(plan.streams),
                    "within_slo": states[plan.product].within,
                    "lag_seconds": _number(states[plan.product].lag),
                    "slo_reason": states[plan.product].reason,
                }
                for plan in plans.values()
            ]
        )
        return
    for plan in plans.values():
        state = states[plan.product]
        verdict = "within SLO" if state.within else "SLO BREACH"
        console.print(plan.explain(), markup=False)
        console.print(
            f"  - now: {verdict} (lag {_seconds(state.lag)}; {state.reason})", markup=False
        )


def status(
    project_dir: ProjectDir = Path("."),
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per product: mode, lag against its freshness SLO, SLO compliance over the last
    hour/day/week, breaches; CDC slots and their lag; dead letters; the fields events
    carried beyond their source's columns (`unknown_fields`)."""
    from tidegate.ingest.unknown import unknown_field_totals
    from tidegate.platform import Platform
    from tidegate.products.slo import compliance, slo_states, slot_states
    from tidegate.project.project import stream_sources

    with Platform.open(project_dir) as platform:
        now = time.time()
        states = slo_states(platform, now=now)
        history = compliance(platform, now)
        seen = platform.meta.freshness.all()
        slots = slot_states(platform)
        dead_counts = platform.meta.dead_letters.counts_by_source()
        streams = stream_sources(platform.project)
        unknown = unknown_field_totals(platform.meta.observations, streams)
    unknown_json = {
        source: {
            "policy": streams[source].unknown_fields,
            "events": fields.get("", 0),
            "fields": {f: n for f, n in sorted(fields.items()) if f},
        }
        for source, fields in sorted(unknown.items())
    }
    rows: list[dict[str, Any]] = []
    for state in states:
        known = seen.get(state.product)
        rows.append(
            {
                "product": state.product,
                "mode": state.mode,
                "freshness_slo": state.slo,
                "last_update": state.last_refresh,
                "last_lag": known.last_lag if known else None,
                "max_lag": known.max_lag if known else None,
                "current_lag": _number(state.lag),
                "within_slo": state.within,
                "reason": state.reason,
                "compliance": history.get(state.product, {}),
                "updates": known.updates if known else 0,
                "breaches": known.breaches if known else 0,
            }
        )
    cdc: list[dict[str, Any]] = [
        {
            "source": s.source,
            "slot": s.slot,
            "confirmed_lsn": s.confirmed_lsn,
            "lag_bytes": s.lag_bytes,
            "lag_seconds": s.lag_seconds,
            "error": s.error,
            "reported_at": s.at,
        }
        for s in slots
    ]
    if json_output:
        print_json(
            {
                "products": rows,
                "cdc": cdc,
                "dead_letters": dead_counts,
                "unknown_fields": unknown_json,
            }
        )
        return
    _print_products(rows, states)
    if cdc:
        console.print(
            table(
                "CDC slots",
                ["source", "slot", "confirmed LSN", "lag bytes", "lag", "reported", "error"],
                [
                    [
                        c["source"],
                        c["slot"],
                        c["confirmed_lsn"] or "-",
                        "-" if c["lag_bytes"] is None else c["lag_bytes"],
                        _seconds(c["lag_seconds"]),
                        _when(c["reported_at"]),
                        c["error"] or "",
                    ]
                    for c in cdc
                ],
            )
        )
    if dead_counts:
        console.print(
            "dead letters: "
            + ", ".join(f"{source} {count}" for source, count in dead_counts.items())
            + " (tidegate dlq list)"
        )
    for source, fields in sorted(unknown.items()):
        verb = {"drop": "dropped", "keep": "kept in the log"}.get(streams[source].unknown_fields)
        named = ", ".join(f"{f} {n}" for f, n in sorted(fields.items()) if f)
        console.print(
            f"unknown fields in {source}: {fields.get('', 0)} events ({named}), {verb}",
            markup=False,
        )


def _print_products(rows: list[dict[str, Any]], states: list[Any]) -> None:
    console.print(
        table(
            "Products",
            [
                "product",
                "mode",
                "SLO",
                "last refresh",
                "lag now",
                "in SLO 1h",
                "1d",
                "7d",
                "updates",
                "breaches",
            ],
            [
                [
                    r["product"],
                    r["mode"],
                    _seconds(r["freshness_slo"]),
                    _when(r["last_update"]),
                    _seconds(s.lag) + ("" if r["within_slo"] else " [red]BREACH[/red]"),
                    _share(r["compliance"], "1h"),
                    _share(r["compliance"], "1d"),
                    _share(r["compliance"], "7d"),
                    r["updates"],
                    r["breaches"],
                ]
                for r, s in zip(rows, states, strict=True)
            ],
        )
    )


@cdc_app.command("reset")
def cdc_reset(
    source: Annotated[str, typer.Argument(help="The `cdc: logical` source.")],
    project_dir: ProjectDir = Path("."),
    json_output: JsonOption = False,
) -> None:
    """Start a source's capture over: drop its replication slot if it still exists and
    forget its snapshot, so the runtime takes a fresh consistent snapshot (after a
    dropped slot, the only way to know the table again)."""
    from tidegate.extras import require
    from tidegate.platform import Platform
    from tidegate.project.project import cdc_slot, cdc_sources

    with Platform.open(project_dir) as platform:
        sources = cdc_sources(platform.project)
        config = sources.get(source)
        if config is None:
            known = ", ".join(sorted(sources)) or "none"
            raise typer.BadParameter(
                f"no cdc source named {source!r} (cdc sources: {known})", param_hint="SOURCE"
            )
        slot = cdc_slot(platform.project, config)
        dsn = config.resolved_dsn()
        if not dsn:
            raise TidegateError(
                f"source {source!r}: environment variable {config.dsn_env} is unset; the slot"
                " cannot be dropped without reaching PostgreSQL"
            )
        require("postgres", "psycopg")
        import psycopg

        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
                dropped = bool(
                    conn.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM"
                        " pg_replication_slots WHERE slot_name = %s AND NOT active",
                        (slot,),
                    ).fetchall()
                )  # a publication stays: it holds no WAL, and the new slot uses it
        except psycopg.Error as err:
            raise ServiceUnavailableError(f"cannot drop slot {slot!r}: {err}") from None
        platform.meta.cdc_positions.forget(slot)
    if json_output:
        print_json({"source": source, "slot": slot, "slot_dropped": dropped})
        return
    console.print(
        f"{source}: slot {slot} {'dropped' if dropped else 'was gone'}; snapshot forgotten."
        " The runtime takes a fresh snapshot within seconds (or at its next start)."
    )
