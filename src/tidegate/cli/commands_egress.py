"""Egress commands: serve the API; run syncs and look at their state, history and errors."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.console import console, print_json, table
from tidegate.errors import NotFoundError
from tidegate.timestamps import format_timestamp, timestamp_text

if TYPE_CHECKING:
    from tidegate.platform import Platform

sync_app = typer.Typer(
    help="Reverse-ETL syncs: product → destination, through a purpose.", no_args_is_help=True
)
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SyncName = Annotated[str, typer.Argument(help="The sync's name (syncs/NAME.yml).")]


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(sync_app, name="sync")


def serve(
    project_dir: ProjectDir = Path("."),
    host: Annotated[
        str | None, typer.Option(help="Bind address (default from tidegate.yml).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from tidegate.yml).")] = None,
    server: Annotated[
        str | None,
        typer.Option(help="uvicorn or granian (default: serve.server in tidegate.yml)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=64, help="Worker processes (default: serve.workers)."),
    ] = None,
) -> None:
    """Serve products over HTTP, through the guard. Ctrl-C stops it."""
    from tidegate.api.server import serve_forever
    from tidegate.platform import Platform

    if server is not None and server not in ("uvicorn", "granian"):
        raise typer.BadParameter(f"{server!r}: choose uvicorn or granian", param_hint="--server")
    with Platform.open(project_dir) as platform:
        settings = platform.project.config.serve
        bind_host, bind_port = host or settings.host, port or settings.port
        chosen, count = server or settings.server, workers or settings.workers
        console.print(
            f"serving [bold]{platform.project.name}[/bold] on http://{bind_host}:{bind_port}"
            f" ({chosen}, {count} worker{'s' if count > 1 else ''})"
        )
        serve_forever(platform, bind_host, bind_port, chosen, count)


def _when(at: float | None) -> str:
    if not at:
        return ""
    return timestamp_text(at, "")


def _known(platform: Platform, name: str) -> Any:
    sync = platform.project.syncs.get(name)
    if sync is None:
        known = ", ".join(sorted(platform.project.syncs)) or "none"
        raise NotFoundError(f"no sync named {name!r} (known: {known})")
    return sync.config


@sync_app.command("run")
def sync_run(
    name: SyncName,
    project_dir: ProjectDir = Path("."),
    full: Annotated[
        bool, typer.Option("--full", help="Resend every row, not just changes.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Run one sync now: diff against what was sent last time, send the changes."""
    from tidegate.egress.sync import run_sync
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        report = run_sync(platform, name, full=full)
    if json_output:
        print_json(
            report.counts()
            | {
                "sync": name,
                "status": report.status,
                "seconds": report.seconds,
                "errors": report.errors,
                "notes": report.notes,
            }
        )
    else:
        if report.blocked:
            console.print(
                f"sync [bold]{name}[/bold]: [red]blocked by its circuit breakers[/red]; "
                "nothing was written"
            )
            for reason in report.blocked:
                console.print(f"  {reason}", soft_wrap=True)
            console.print(
                f"  look: tidegate sync preview {name}; "
                f"let it through: tidegate sync approve {name}"
            )
        console.print(
            f"sync [bold]{name}[/bold]: {report.added} inserted, {report.changed} updated, "
            f"{report.removed} deleted ({report.revoked} for consent), {report.failed} failed",
            soft_wrap=True,
        )
        console.print(
            f"  {report.unchanged} unchanged, {report.withheld_total} withheld by the guard, "
            f"{report.skipped_total} skipped ({report.seconds:.2f}s)",
            soft_wrap=True,
        )
        for reason, rows in report.withheld.items():
            console.print(f"  withheld {rows}: {reason}")
        for reason, rows in report.skipped.items():
            console.print(f"  skipped {rows}: {reason}")
        for reason, count in report.retries.items():
            console.print(f"  retried {count}x: {reason}", soft_wrap=True)
        for note in report.notes:
            console.print(f"  note: {note}")
        for error in report.errors[:10]:
            console.print(f"  [red]refused:[/red] {error}", soft_wrap=True)
        if report.failed:
            console.print(f"  see them all: tidegate sync errors {name}")
    if report.failed or report.blocked:
        raise typer.Exit(1)


@sync_app.command("list")
def sync_list(project_dir: ProjectDir = Path("."), json_output: JsonOption = False) -> None:
    """Every sync of the project with its last run."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        rows = []
        for name, sync in sorted(platform.project.syncs.items()):
            cfg = sync.config
            last = platform.meta.runs("sync", name, limit=1)
            rows.append(
                {
                    "sync": name,
                    "product": cfg.product,
                    "purpose": cfg.purpose,
                    "destination": cfg.destination.type,
                    "mode": cfg.mode,
                    "trigger": cfg.trigger,
                    "last_run": _when(last[0]["started_at"]) if last else "",
                    "last_status": last[0]["status"] if last else "never run",
                }
            )
    if json_output:
        print_json(rows)
        return
    columns = list(rows[0]) if rows else ["sync"]
    console.print(table("Syncs", columns, [list(r.values()) for r in rows]))


@sync_app.command("status")
def sync_status(
    name: SyncName, project_dir: ProjectDir = Path("."), json_output: JsonOption = False
) -> None:
    """What a sync is, what it holds in its destination, and how its last run went."""
    from tidegate.egress.sync.breakers import pending_approval
    from tidegate.platform import Platform
    from tidegate.project.cron import next_fire

    with Platform.open(project_dir) as platform:
        cfg = _known(platform, name)
        last = platform.meta.runs("sync", name, limit=1)
        status: dict[str, Any] = {
            "sync": name,
            "product": cfg.product,
            "purpose": cfg.purpose,
            "destination": cfg.destination.type,
            "mode": cfg.mode,
            "trigger": cfg.trigger,
            "schedule": cfg.schedule,
            "rows_written": platform.meta.synced_count(name),
            "open_errors": len(platform.meta.sync_row_errors(name)),
            "interrupted_batch_rows": len(platform.meta.sync_inflight(name)),
            "suppressed": len(platform.meta.sync_suppressions(name)),
            "last_run": last[0] if last else None,
            "blocked_by_breakers": bool(last and last[0]["status"] == "blocked"),
            "approved": pending_approval(platform, name) is not None,
        }
        if cfg.schedule:
            after = (
                dt.datetime.fromtimestamp(last[0]["started_at"], dt.UTC)
                if last
                else dt.datetime.now(dt.UTC)
            )
            status["next_run"] = format_timestamp(next_fire(cfg.schedule, after))
    if json_output:
        print_json(status)
        return
    console.print(f"sync [bold]{name}[/bold]: {cfg.product} → {cfg.destination.type}")
    console.print(f"  purpose {cfg.purpose}, mode {cfg.mode}, trigger {cfg.trigger}")
    if cfg.schedule:
        console.print(f"  schedule {cfg.schedule} (next {status['next_run']})")
    console.print(
        f"  {status['rows_written']} rows written, {status['open_errors']} open row errors, "
        f"{status['suppressed']} suppressed keys"
    )
    if status["blocked_by_breakers"]:
        waiting = (
            "approved: the next run goes ahead"
            if status["approved"]
            else f"waiting: tidegate sync preview {name}, then tidegate sync approve {name}"
        )
        console.print(f"  [red]stopped by its circuit breakers[/red]; {waiting}")
    if status["interrupted_batch_rows"]:
        console.print(
            f"  an interrupted batch of {status['interrupted_batch_rows']} rows will be "
            "reconciled by the next run"
        )
    if last:
        run = last[0]
        stats = run["stats"]
        console.print(
            f"  last run {_when(run['started_at'])}: {run['status']}; "
            f"{_stat(stats, 'inserted') or 0} inserted, {_stat(stats, 'updated') or 0} updated, "
            f"{_stat(stats, 'deleted') or 0} deleted, {stats.get('failed', 0)} failed"
        )
        if run["error"]:
            console.print(f"  [red]error:[/red] {run['error']}", soft_wrap=True)
    else:
        console.print("  never run")


@sync_app.command("history")
def sync_history(
    name: SyncName,
    project_dir: ProjectDir = Path("."),
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """Past runs of a sync, newest first."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        _known(platform, name)
        runs = platform.meta.runs("sync", name, limit)
    if json_output:
        print_json(runs)
        return
    columns = ["inserted", "updated", "deleted", "unchanged", "failed", "withheld", "skipped"]
    if any(r["stats"].get("retries") for r in runs):  # a column only when there were any
        columns.append("retries")
    console.print(
        table(
            f"Runs of {name} (all counts and reasons: --json)",
            ["run", "started", "status", *columns, "error"],
            [
                [
                    r["run_id"],
                    _when(r["started_at"]),
                    r["status"],
                    *[_stat(r["stats"], c) for c in columns],
                    r["error"] or "; ".join(r["stats"].get("blocked", [])),
                ]
                for r in runs
            ],
        )
    )


#: runs recorded before the counts had their names (issue 19)
_OLD_NAMES = {"inserted": "added", "updated": "changed", "deleted": "removed"}


def _stat(stats: dict[str, Any], name: str) -> Any:
    return stats.get(name, stats.get(_OLD_NAMES.get(name, name), ""))


@sync_app.command("errors")
def sync_errors(
    name: SyncName,
    project_dir: ProjectDir = Path("."),
    dismiss: Annotated[
        bool,
        typer.Option(
            "--dismiss",
            help="Dismiss open errors (all, or those given with --key): the rows are skipped "
            "until their content changes.",
        ),
    ] = False,
    keys: Annotated[
        list[str] | None, typer.Option("--key", help="Only these destination keys.")
    ] = None,
    show_all: Annotated[bool, typer.Option("--all", help="Include dismissed errors.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Rows the destination refused, with its own message; retried every run until they
    land or are dismissed."""
    import time

    from tidegate.audit.log import AuditRecord
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        _known(platform, name)
        if dismiss:
            count = platform.meta.dismiss_sync_errors(name, keys, time.time())
            platform.audit.append(
                AuditRecord(
                    action="admin",
                    principal="cli",
                    detail={"sync": name, "dismissed_errors": count, "keys": keys or "all"},
                )
            )
            if json_output:
                print_json({"dismissed": count})
            else:
                console.print(f"dismissed {count} row errors of sync {name}")
            return
        errors = platform.meta.sync_row_errors(name, include_dismissed=show_all)
        if keys:
            errors = [e for e in errors if e.key in set(keys)]
    if json_output:
        print_json([e.__dict__ for e in errors])
        return
    if not errors:
        console.print(f"sync {name}: no open row errors")
        return
    console.print(
        table(
            f"Rows refused by the destination of {name}",
            ["key", "attempts", "first", "last", "dismissed", "message"],
            [
                [
                    e.key,
                    e.attempts,
                    _when(e.first_at),
                    _when(e.last_at),
                    _when(e.dismissed_at),
                    e.message,
                ]
                for e in errors
            ],
        )
    )
