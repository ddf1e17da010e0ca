"""Safe syncs: `tidegate sync preview NAME` (a dry run) and `tidegate sync approve NAME`
(let a run stopped by its circuit breakers through once). Both audited; both work the
same when a runtime is up (the command line is forwarded to it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tidegate.cli.commands_egress import SyncName, sync_app
from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.options import JsonOption
from tidegate.console import console, print_json, table

Principal = Annotated[str, typer.Option(help="Who acts (recorded in the audit log).")]


def register(app: typer.Typer) -> None:
    """The commands join `tidegate sync` (registered on import of this module)."""


@sync_app.command("preview")
def sync_preview(
    name: SyncName,
    project_dir: ProjectDir = Path("."),
    principal: Principal = "cli",
    json_output: JsonOption = False,
) -> None:
    """What the next run would add, change and remove at the destination; writes nothing."""
    from tidegate.egress.sync.preview import preview_sync
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        result = preview_sync(platform, name, principal)
    data = result.as_dict()
    if json_output:
        print_json(data)
        return
    counts = data["counts"]
    console.print(
        f"sync [bold]{name}[/bold] → {result.destination} ({result.mode}, purpose "
        f"{result.purpose}, legal basis {result.legal_basis}); nothing was written"
    )
    console.print(
        f"  would insert {counts['insert']}, update {counts['update']}, delete "
        f"{counts['delete']} ({counts['delete_for_consent']} for consent); "
        f"{counts['unchanged']} unchanged"
    )
    _reasons("withheld by the guard", result.withheld)
    _reasons("skipped", result.skipped)
    for treatment, columns in sorted(result.columns.items()):
        console.print(f"  columns {treatment}: {', '.join(columns)}")
    for note in result.notes:
        console.print(f"  note: {note}")
    if result.breakers:
        state = "approved: the next run goes ahead" if result.approved else "the run would stop"
        console.print(f"  [red]circuit breakers tripped[/red] ({state}):")
        for reason in result.breakers:
            console.print(f"    {reason}", soft_wrap=True)
    if result.sample:
        columns = list(result.sample[0])
        rows = [[_cell(r.get(c)) for c in columns] for r in result.sample]
        console.print(table(f"Sample of rows as {result.destination} gets them", columns, rows))
    if result.sample_deletes:
        console.print(f"  keys it would delete: {', '.join(result.sample_deletes)}")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _reasons(what: str, reasons: dict[str, int]) -> None:
    for reason, rows in reasons.items():
        console.print(f"  {what} {rows}: {reason}")


@sync_app.command("approve")
def sync_approve(
    name: SyncName,
    project_dir: ProjectDir = Path("."),
    principal: Principal = "cli",
    json_output: JsonOption = False,
) -> None:
    """Let the next run of a sync stopped by its circuit breakers go ahead (once)."""
    from tidegate.cli.commands_egress import _known
    from tidegate.egress.sync.breakers import approve
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        _known(platform, name)
        detail = approve(platform, name, principal)
    if json_output:
        print_json(detail)
        return
    console.print(f"sync [bold]{name}[/bold]: approved past {'; '.join(detail['reasons'])}")
    console.print(f"  the next run goes ahead: tidegate sync run {name}")
