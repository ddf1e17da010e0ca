"""Data subject requests: `tidegate request access SUBJECT`, `tidegate request erase SUBJECT`.

`--type` names the kind of person (required when the project defines several subject
types: a missing or unknown type is a usage error, exit 2, listing the types); `--by`
finds the person by a lookup column the type declares (`--by email ada@example.com`).
Both print JSON (the access package; the erasure's completion report) and are audited
(`requests/subject_requests.py`). Erasure asks for confirmation unless `--yes` is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.forward import confirm_locally
from tidegate.cli.options import JsonOption
from tidegate.console import console, errors, print_json, table

if TYPE_CHECKING:
    from tidegate.project.project import Project

request_app = typer.Typer(
    help="Data subject requests: access and erasure (GDPR Art. 15 and 17).", no_args_is_help=True
)

Principal = Annotated[
    str, typer.Option(help="Who answers the request (recorded in the audit log).")
]


SubjectType = Annotated[
    str | None,
    typer.Option(
        "--type",
        help="The subject type (customer, employee, ...); required when the project has several.",
    ),
]
By = Annotated[
    str | None,
    typer.Option(
        "--by", help="Find the subject by this lookup column (e.g. email) instead of its id."
    ),
]
SubjectArgument = Annotated[
    str, typer.Argument(help="The data subject's id (with --by: the lookup column's value).")
]


def checked_type(project: Project, subject_type: str | None, by: str | None) -> str:
    """The request's subject type, or a usage error (exit 2) naming the types or the
    lookup columns."""
    from tidegate.errors import BadRequestError
    from tidegate.project.subjects import lookup_columns, request_type

    try:
        kind = request_type(project, subject_type)
    except BadRequestError as err:
        raise typer.BadParameter(err.message, param_hint="--type") from None
    allowed = lookup_columns(project, kind)
    if by is not None and by not in allowed:
        raise typer.BadParameter(
            f"{by!r} is not a lookup column of subject type {kind!r} "
            f"(lookup: {', '.join(allowed) or 'none declared'})",
            param_hint="--by",
        )
    return kind


def register(app: typer.Typer) -> None:
    app.add_typer(request_app, name="request")


@request_app.command("access")
def request_access(
    subject: SubjectArgument,
    project_dir: ProjectDir = Path("."),
    subject_type: SubjectType = None,
    by: By = None,
    principal: Principal = "cli",
    out: Annotated[
        Path | None, typer.Option(help="Write the JSON here instead of standard output.")
    ] = None,
) -> None:
    """Everything held about SUBJECT, as JSON: warehouse, online store, destinations,
    dead letters, consent and audit."""
    import json

    from tidegate.platform import Platform
    from tidegate.requests.subject_access import access

    with Platform.open(project_dir) as platform:
        kind = checked_type(platform.project, subject_type, by)
        found = access(platform, subject, principal, subject_type=kind, by=by)
    if out is None:
        print_json(found)
    else:
        out.write_text(json.dumps(found, indent=2, default=str))
        console.print(f"access package for {subject} written to {out}: {found['counts']}")
    if not found["complete"]:  # an incomplete answer to a data subject is not a success
        errors.print(
            "[red]error:[/red] the access package is INCOMPLETE: " + "; ".join(found["missing"]),
            markup=True,
            soft_wrap=True,
        )
        raise typer.Exit(1)


@confirm_locally(("request", "erase"), "yes", "--yes")
def erase_question(params: dict[str, object]) -> str:
    kind = f"{params['subject_type']} " if params.get("subject_type") else ""
    return f"Erase {kind}subject {params['subject']} everywhere? This cannot be undone"


@request_app.command("erase")
def request_erase(
    subject: SubjectArgument,
    project_dir: ProjectDir = Path("."),
    subject_type: SubjectType = None,
    by: By = None,
    principal: Principal = "cli",
    reason: Annotated[str, typer.Option(help="Why (e.g. the ticket of the request).")] = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Erase SUBJECT everywhere, keep a tombstone, and print the completion report."""
    from tidegate.platform import Platform
    from tidegate.requests.subject_requests import erase

    if not yes and not typer.confirm(
        erase_question({"subject": subject, "subject_type": subject_type})
    ):
        raise typer.Abort()
    with Platform.open(project_dir) as platform:
        kind = checked_type(platform.project, subject_type, by)
        report = erase(platform, subject, principal, reason, subject_type=kind, by=by)
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
            f"{report.subject_type} tombstone {report.subject_hash[:16]}…; "
            f"report is audit record {report.audit_seq}"
        )
    if not report.complete:
        raise typer.Exit(1)
