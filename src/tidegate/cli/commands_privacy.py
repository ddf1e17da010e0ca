"""Privacy and admin commands: consent, audit, API keys. Each admin action is audited."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer

from tidegate.audit.log import AuditRecord
from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.console import console, print_json, table
from tidegate.errors import BadRequestError, TidegateError

consent_app = typer.Typer(
    help="The consent ledger: record and inspect choices.", no_args_is_help=True
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for the serving API.", no_args_is_help=True)

ADMIN = "cli"


def register(app: typer.Typer) -> None:
    app.add_typer(consent_app, name="consent")
    app.add_typer(audit_app, name="audit")
    app.add_typer(keys_app, name="keys")


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _record_choice(
    project_dir: Path, action: str, subject: str, purpose: str, evidence: str
) -> None:
    from tidegate.privacy.consent import ConsentEvent
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        if purpose not in platform.project.policy.purposes:
            raise BadRequestError(
                f"unknown purpose {purpose!r} "
                f"(defined: {', '.join(sorted(platform.project.policy.purposes))})"
            )
        event = ConsentEvent(subject, purpose, action, time.time(), "cli", evidence)  # type: ignore[arg-type]
        platform.consent.record([event])
        platform.audit.append(
            AuditRecord(
                action="consent",
                principal=ADMIN,
                purpose=purpose,
                subjects=(subject,),
                detail={"choice": action, "evidence": evidence},
            )
        )
    console.print(f"recorded: subject {subject} {action} {purpose}")


@consent_app.command("grant")
def consent_grant(
    subject: str,
    purpose: str,
    project_dir: ProjectDir = Path("."),
    evidence: Annotated[str, typer.Option(help="Where the choice was made.")] = "cli",
) -> None:
    """Record that SUBJECT grants consent for PURPOSE."""
    _record_choice(project_dir, "grant", subject, purpose, evidence)


@consent_app.command("revoke")
def consent_revoke(
    subject: str,
    purpose: str,
    project_dir: ProjectDir = Path("."),
    evidence: Annotated[str, typer.Option(help="Where the choice was made.")] = "cli",
) -> None:
    """Record that SUBJECT withdraws consent for PURPOSE (effective on the next read)."""
    _record_choice(project_dir, "revoke", subject, purpose, evidence)


@consent_app.command("object")
def consent_object(
    subject: str,
    purpose: str,
    project_dir: ProjectDir = Path("."),
    evidence: Annotated[str, typer.Option(help="Where the objection was made.")] = "cli",
) -> None:
    """Record that SUBJECT objects to PURPOSE (ends legitimate-interest processing)."""
    _record_choice(project_dir, "object", subject, purpose, evidence)


@consent_app.command("show")
def consent_show(
    subject: str,
    project_dir: ProjectDir = Path("."),
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """A subject's consent history and the state it gives per purpose."""
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        history = platform.consent.history(subject)
        view = platform.consent_view
        view.refresh()
        states = {
            name: view.allowed(subject, name, purpose.legal_basis)
            for name, purpose in platform.project.policy.purposes.items()
        }
    if json_output:
        print_json(
            {"subject": subject, "history": [h.__dict__ for h in history], "allowed": states}
        )
        return
    console.print(
        table(
            f"Consent history of {subject}",
            ["when", "purpose", "choice", "source", "evidence"],
            [[_when(h.occurred_at), h.purpose, h.action, h.source, h.evidence] for h in history],
        )
    )
    console.print(
        table(
            "Current state",
            ["purpose", "allowed"],
            [[p, "yes" if ok else "no"] for p, ok in states.items()],
        )
    )


@audit_app.command("verify")
def audit_verify(project_dir: ProjectDir = Path(".")) -> None:
    """Walk the hash chain; report any edited, deleted, inserted or reordered record."""
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        issues = platform.audit.verify()
        count = len(platform.meta.audit_records())
    if issues:
        for issue in issues:
            console.print(f"[red]✗[/red] {issue}")
        raise TidegateError(f"the audit log has been tampered with: {len(issues)} problem(s)")
    console.print(f"[green]✓[/green] audit chain intact: {count} records")


@audit_app.command("tail")
def audit_tail(
    project_dir: ProjectDir = Path("."),
    limit: Annotated[int, typer.Option(help="How many records.")] = 20,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The latest audit records."""
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        records = list(platform.audit.records())[-limit:]
    if json_output:
        print_json([{"seq": s, **r.__dict__} for s, r in records])
        return
    console.print(
        table(
            "Audit log",
            ["seq", "when", "action", "principal", "purpose", "product", "rows", "outcome"],
            [
                [
                    s,
                    _when(r.at),
                    r.action,
                    r.principal,
                    r.purpose or "",
                    r.product or "",
                    r.rows,
                    r.outcome,
                ]
                for s, r in records
            ],
        )
    )


@keys_app.command("create")
def keys_create(
    principal: Annotated[str, typer.Option(help="Who uses the key (an app or a person).")],
    role: Annotated[list[str], typer.Option(help="A role from policies/ (repeatable).")],
    project_dir: ProjectDir = Path("."),
    ttl: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d; default: no expiry.")] = None,
) -> None:
    """Create an API key; it is shown once and stored only as a hash."""
    from tidegate.egress.serve.keys import create_key
    from tidegate.project.models import parse_duration
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        unknown = [r for r in role if r not in platform.project.policy.roles]
        if unknown:
            raise BadRequestError(f"unknown role(s): {', '.join(unknown)}")
        seconds = parse_duration(ttl).total_seconds() if ttl else None
        token, row = create_key(platform.meta, principal, role, seconds)
        platform.audit.append(
            AuditRecord(
                action="admin",
                principal=ADMIN,
                detail={"op": "key.create", "key_id": row.key_id, "for": principal, "roles": role},
            )
        )
    console.print(f"key id {row.key_id} for {principal} ({', '.join(role)}):")
    console.print(token, markup=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(project_dir: ProjectDir = Path(".")) -> None:
    """Every key: principal, roles, expiry and revocation (never the secret)."""
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        rows = platform.meta.api_keys()
    console.print(
        table(
            "API keys",
            ["id", "principal", "roles", "created", "expires", "revoked"],
            [
                [
                    r.key_id,
                    r.principal,
                    ",".join(r.roles),
                    _when(r.created_at),
                    _when(r.expires_at),
                    _when(r.revoked_at),
                ]
                for r in rows
            ],
        )
    )


@keys_app.command("revoke")
def keys_revoke(key_id: str, project_dir: ProjectDir = Path(".")) -> None:
    """Revoke a key at once."""
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        if not platform.meta.revoke_api_key(key_id, time.time()):
            raise TidegateError(f"no active key {key_id!r}")
        platform.audit.append(
            AuditRecord(
                action="admin", principal=ADMIN, detail={"op": "key.revoke", "key_id": key_id}
            )
        )
    console.print(f"revoked key {key_id}")
