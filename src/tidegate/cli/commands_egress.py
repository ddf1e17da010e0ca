"""Egress commands: serve the API, run syncs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.console import console, print_json, table
from tidegate.errors import TidegateError

sync_app = typer.Typer(
    help="Reverse-ETL syncs: product → destination, through a purpose.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(sync_app, name="sync")


def serve(
    project_dir: ProjectDir = Path("."),
    host: Annotated[
        str | None, typer.Option(help="Bind address (default from tidegate.yml).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from tidegate.yml).")] = None,
) -> None:
    """Serve products over HTTP, through the guard. Ctrl-C stops it."""
    import uvicorn

    from tidegate.egress.serve.app import create_app
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        settings = platform.project.config.serve
        bind_host, bind_port = host or settings.host, port or settings.port
        console.print(
            f"serving [bold]{platform.project.name}[/bold] on http://{bind_host}:{bind_port}"
        )
        uvicorn.run(create_app(platform), host=bind_host, port=bind_port, log_level="warning")


@sync_app.command("run")
def sync_run(
    name: Annotated[str, typer.Argument(help="The sync's name (syncs/NAME.yml).")],
    project_dir: ProjectDir = Path("."),
    full: Annotated[
        bool, typer.Option("--full", help="Resend every row, not just changes.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run one sync now: diff against what was sent last time, send the changes."""
    from tidegate.egress.sync import run_sync
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        report = run_sync(platform, name, full=full)
    if json_output:
        print_json(report.__dict__)
    else:
        console.print(
            f"sync [bold]{name}[/bold]: {report.added} added, {report.changed} changed, "
            f"{report.removed} removed, {report.unchanged} unchanged, {report.failed} failed "
            f"({report.seconds:.2f}s)"
        )
        for error in report.errors[:10]:
            console.print(f"  [red]error:[/red] {error}")
    if report.failed:
        raise typer.Exit(1)


@sync_app.command("history")
def sync_history(
    name: Annotated[str, typer.Argument(help="The sync's name.")],
    project_dir: ProjectDir = Path("."),
    limit: Annotated[int, typer.Option(help="How many runs.")] = 20,
) -> None:
    """Past runs of a sync, newest first."""
    import datetime as dt

    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        if name not in platform.project.syncs:
            raise TidegateError(f"no sync named {name!r}")
        runs = platform.meta.runs("sync", name, limit)
    console.print(
        table(
            f"Runs of {name}",
            ["run", "started", "status", "added", "changed", "removed", "failed", "error"],
            [
                [
                    r["run_id"],
                    dt.datetime.fromtimestamp(r["started_at"], dt.UTC).strftime(
                        "%Y-%m-%d %H:%M:%S"
                    ),
                    r["status"],
                    r["stats"].get("added", ""),
                    r["stats"].get("changed", ""),
                    r["stats"].get("removed", ""),
                    r["stats"].get("failed", ""),
                    r["error"],
                ]
                for r in runs
            ],
        )
    )
