"""Data subject requests: `tidegate request access SUBJECT`, `tidegate request erase SUBJECT`.

Both print JSON (the access package; the erasure's completion report) and are audited
(`requests/subject_requests.py`). Erasure asks for confirmation unless `--yes` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.console import console, print_json, table

request_app = typer.Typer(
    help="Data subject requests: access and erasure (GDPR Art. 15 and 17).", no_args_is_help=True
)

Principal = Annotated[
    str, typer.Option(help="Who answers the request (recorded in the audit log).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(request_app, name="request")


@request_app.command("access")
def request_access(
    subject: Annotated[str, typer.Argument(help="The data subject's id.")],
    project_dir: ProjectDir = Path("."),
    principal: Principal = "cli",
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON here instead of standard output.")
    ] = None,
) -> None:
    """Everything held about SUBJECT, as JSON: warehouse, online store, destinations,
    dead letters, consent and audit."""
    import json

    from tidegate.platform import Platform
    from tidegate.requests.subject_requests import access

    with Platform.open(project_dir) as platform:
        found = access(platform, subject, principal)
    if out is None:
        print_json(found)
        return
    out.write_text(json.dumps(found, indent=2, default=str))
    console.print(f"access package for {subject} written to {out}: {found['counts']}")


@request_app.command("erase")
def request_erase(
    subject: Annotated[str, typer.Argument(help="The data subject's id.")],
    project_dir: ProjectDir = Path("."),
    principal: Principal = "cli",
    reason: Annotated[str, typer.Option(help="Why (e.g. the ticket of the request).")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Erase SUBJECT everywhere, keep a tombstone, and print the completion report."""
    from tidegate.platform import Platform
    from tidegate.requests.subject_requests import erase

    if not yes and not typer.confirm(f"Erase subject {subject} everywhere? This cannot be undone"):
        raise typer.Abort()
    with Platform.open(project_dir) as platform:
        report = erase(platform, subject, principal, reason)
    if json_output:
        print_json(report.as_json())
    else:
        console.print(
            table(
                f"Erasure {report.request_id} ({'complete' if report.complete else 'PARTIAL'})",
                ["system", "where", "status", "removed", "note"],
                [[s.system, s.location, s.status, s.removed, s.note] for s in report.systems],
            )
        )
        console.print(
            f"tombstone {report.subject_hash[:16]}…; report is audit record {report.audit_seq}"
        )
    if not report.complete:
        raise typer.Exit(1)
