"""Privacy and admin commands: consent, audit, API keys. Each admin action is audited."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer

from tidegate.audit.log import AuditRecord
from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.options import JsonOption
from tidegate.console import console, errors, print_json, table
from tidegate.errors import BadRequestError, TidegateError
from tidegate.privacy.consent import consent_ledger_of, consent_view_of
from tidegate.timestamps import timestamp_text

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
    return timestamp_text(timestamp)


CHOICES = {
    "grant": "Record that SUBJECT grants consent for PURPOSE.",
    "revoke": "Record that SUBJECT withdraws consent for PURPOSE: the next API read already "
    "filters them, and every sync destination that holds them for it removes them now.",
    "object": "Record that SUBJECT objects to PURPOSE (ends legitimate-interest processing); "
    "destinations that hold them for it remove them now.",
}


def usage_error(option: str, message: str) -> typer.Exit:
    """Print a usage error naming the option; the returned Exit makes the status 2."""
    errors.print(f"[red]error:[/red] {option}: {message}", markup=True, soft_wrap=True)
    return typer.Exit(2)


def _parse_moment(text: str | None) -> float | None:
    """`--occurred-at`: unix seconds or ISO 8601 (UTC when no zone is given)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise usage_error("--occurred-at", f"{text!r} is not a unix time or ISO 8601") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def _record_choice(
    project_dir: Path,
    action: str,
    subject: str,
    purpose: str,
    evidence: str,
    occurred_at: str | None = None,
    json_output: bool = False,
) -> None:
    from tidegate.platform import Platform
    from tidegate.privacy.consent import ConsentEvent, check_not_future
    from tidegate.requests.propagation import propagate

    moment = _parse_moment(occurred_at)
    with Platform.open(project_dir) as platform:
        if purpose not in platform.project.policy.purposes:
            raise BadRequestError(
                f"unknown purpose {purpose!r} "
                f"(defined: {', '.join(sorted(platform.project.policy.purposes))})"
            )
        now = time.time()
        if moment is not None:
            try:
                check_not_future(moment, now, platform.project.config.consent.clock_skew_seconds)
            except BadRequestError as err:
                raise usage_error("--occurred-at", err.message) from None
        when = now if moment is None else moment
        event = ConsentEvent(subject, purpose, action, when, "cli", evidence)  # type: ignore[arg-type]
        consent_ledger_of(platform).record([event])
        platform.audit.append(
            AuditRecord(
                action="consent",
                principal=ADMIN,
                purpose=purpose,
                subjects=(subject,),
                detail={"choice": action, "evidence": evidence},
            )
        )
        # the same propagation the API and the consent topic run, here in the foreground
        report = propagate(platform, subject, principal=ADMIN) if action != "grant" else None
    if json_output:
        removals = report.removals if report else []
        print_json(
            {
                "subject": subject,
                "choice": action,
                "purpose": purpose,
                "removed_from": [{"sync": r.sync, "how": r.how} for r in removals],
            }
        )
        return
    console.print(f"recorded: subject {subject} {action} {purpose}")
    for removal in report.removals if report else []:
        console.print(f"  removed from sync {removal.sync}: {removal.how}")


def _choice_command(action: str) -> None:
    def command(
        subject: str,
        purpose: str,
        project_dir: ProjectDir = Path("."),
        evidence: Annotated[str, typer.Option(help="Where the choice was made.")] = "cli",
        occurred_at: Annotated[
            str | None,
            typer.Option(help="When the person chose (unix time or ISO 8601; default now)."),
        ] = None,
        json_output: JsonOption = False,
    ) -> None:
        _record_choice(project_dir, action, subject, purpose, evidence, occurred_at, json_output)

    command.__doc__ = CHOICES[action]
    consent_app.command(action)(command)


for _action in CHOICES:
    _choice_command(_action)


@consent_app.command("import")
def consent_import(
    file: Annotated[Path, typer.Argument(help="A CMP export: CSV with a header, or JSON lines.")],
    project_dir: ProjectDir = Path("."),
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: from the name)")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Load many consent choices (one per line: subject, purpose, action, occurred_at; id,
    source, evidence, expires_at optional). Bad lines are reported by number and the rest
    loaded; a re-run records nothing twice. Exit 1 when any line was refused."""
    from tidegate.platform import Platform
    from tidegate.privacy.consent_import import detect_format
    from tidegate.requests.consent_batch import load_choices
    from tidegate.requests.propagation import propagate

    if file_format not in (None, "csv", "jsonl"):
        raise usage_error("--format", f"{file_format!r} is not csv or jsonl")
    if not file.is_file():
        raise usage_error("FILE", f"{file} is not a readable file")
    with file.open("rb") as head:
        fmt = file_format or detect_format(file.name, head.read(64))
    with Platform.open(project_dir) as platform, file.open(encoding="utf-8-sig", newline="") as f:
        try:
            report = load_choices(
                platform,
                f,
                fmt,  # type: ignore[arg-type]
                principal=ADMIN,
                detail={"via": "cli", "file": file.name},
            )
        except UnicodeDecodeError as err:
            raise usage_error("FILE", f"{file} is not UTF-8 text ({err.reason})") from None
        except BadRequestError as err:  # the file as a whole (e.g. a CSV header) is unusable
            raise usage_error("FILE", err.message) from None
        # the same propagation the API and the consent topic run, here in the foreground
        removals = [
            removal
            for subject in report.withdrawn
            for removal in propagate(platform, subject, principal=ADMIN).removals
        ]
    if json_output:
        print_json({**report.as_dict(), "removed_from_syncs": len(removals)})
    else:
        console.print(
            f"{report.lines} lines: {report.recorded} recorded, {report.duplicates} already "
            f"recorded, {report.erased} about erased subjects, {report.invalid} refused"
        )
        for error in report.errors[:20]:
            console.print(f"  line {error.line}: {error.reason}")
        if report.invalid > 20:
            console.print(f"  … and {report.invalid - 20} more (--json lists up to 1000)")
        if removals:
            console.print(f"{len(removals)} removals from sync destinations")
    if report.invalid:
        raise typer.Exit(1)


@consent_app.command("show")
def consent_show(
    subject: str,
    project_dir: ProjectDir = Path("."),
    json_output: JsonOption = False,
) -> None:
    """A subject's consent history and the state it gives per purpose."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        history = consent_ledger_of(platform).history(subject)
        view = consent_view_of(platform)
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
def audit_verify(project_dir: ProjectDir = Path("."), json_output: JsonOption = False) -> None:
    """Walk the keyed chain; report any forged, edited, deleted, inserted or reordered
    record, and say what cannot be proven (records written before the chain was keyed)."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        report = platform.audit.verification()
    if json_output:
        print_json(
            {
                "intact": not report.issues,
                "records": report.records,
                "issues": [str(i) for i in report.issues],
                "notes": report.notes,
            }
        )
        if report.issues:
            raise typer.Exit(1)
        return
    for note in report.notes:
        console.print(f"[yellow]![/yellow] {note}")
    if report.issues:
        for issue in report.issues:
            console.print(f"[red]✗[/red] {issue}")
        raise TidegateError(
            f"the audit log has been tampered with: {len(report.issues)} problem(s)"
        )
    console.print(f"[green]✓[/green] audit chain intact: {report.records} records")


@audit_app.command("seal")
def audit_seal(project_dir: ProjectDir = Path(".")) -> None:
    """Seal records written before the audit chain was keyed, after reviewing them.

    Appends a keyed record naming the last of them: from then on any change to them is
    detected. Nothing can prove they were not forged before the seal; `verify` says so."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        seq = platform.audit.seal(ADMIN)
    if seq is None:
        console.print("nothing to seal: every record is keyed, or already sealed")
    else:
        console.print(f"sealed the unkeyed records before the keyed chain (seal: record {seq})")


@audit_app.command("tail")
def audit_tail(
    project_dir: ProjectDir = Path("."),
    limit: Annotated[int, typer.Option(help="How many records.")] = 20,
    json_output: JsonOption = False,
) -> None:
    """The latest audit records."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        records = list(platform.audit.records())[-limit:]
    if json_output:
        print_json([{"seq": s, **r.__dict__} for s, r in records])
        return
    console.print(
        table(
            "Audit log",
            [
                "seq",
                "when",
                "action",
                "principal",
                "purpose",
                "product",
                "rows",
                "subjects",
                "outcome",
            ],
            _audit_rows(records),
        )
    )


def _audit_rows(records: list[tuple[int, AuditRecord]]) -> list[list[object]]:
    return [
        [
            s,
            _when(r.at),
            r.action,
            r.principal,
            r.purpose or "",
            r.product or "",
            r.rows,
            ",".join(r.subjects[:3]) + ("…" if (r.subject_count or 0) > 3 else ""),
            r.outcome,
        ]
        for s, r in records
    ]


@audit_app.command("search")
def audit_search(
    project_dir: ProjectDir = Path("."),
    principal: Annotated[str | None, typer.Option(help="Who acted.")] = None,
    purpose: Annotated[str | None, typer.Option(help="Declared purpose.")] = None,
    subject: Annotated[str | None, typer.Option(help="A data subject the record names.")] = None,
    product: Annotated[str | None, typer.Option(help="Product read or sent.")] = None,
    action: Annotated[
        str | None, typer.Option(help="serve, sync, sync_removal, export, consent, admin, …")
    ] = None,
    outcome: Annotated[str | None, typer.Option(help="allowed, denied, filtered, …")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time: ISO, Unix time, or an age (2h, 7d).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Before this time (same forms).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records.")] = 100,
    json_output: JsonOption = False,
) -> None:
    """Audit records matching every filter given, oldest first."""
    from tidegate.audit.search import AuditQuery, parse_time, search
    from tidegate.platform import Platform

    query = AuditQuery(
        principal=principal,
        purpose=purpose,
        subject=subject,
        product=product,
        action=action,
        outcome=outcome,
        since=parse_time(since) if since else None,
        until=parse_time(until) if until else None,
    )
    with Platform.open(project_dir) as platform:
        found = list(search(platform.audit, query, limit))
    if json_output:
        print_json([{"seq": s, **r.__dict__} for s, r in found])
        return
    console.print(
        table(
            f"Audit records ({len(found)})",
            [
                "seq",
                "when",
                "action",
                "principal",
                "purpose",
                "product",
                "rows",
                "subjects",
                "outcome",
            ],
            _audit_rows(found),
        )
    )


@audit_app.command("anchor")
def audit_anchor(
    project_dir: ProjectDir = Path("."),
    reset: Annotated[
        bool, typer.Option("--reset", help="Re-anchor at the current head (after a review).")
    ] = False,
) -> None:
    """Show the external anchor of the log's head; `--reset` re-anchors (audited)."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        anchor = platform.audit.anchor
        assert anchor is not None
        if reset:
            before = None
            try:
                before = anchor.read()
            except ValueError as err:
                console.print(f"previous anchor unreadable: {err}")
            platform.audit.append(
                AuditRecord(
                    action="admin",
                    principal=ADMIN,
                    detail={
                        "op": "audit.anchor.reset",
                        "previous": before.__dict__ if before else None,
                    },
                )
            )
            head = anchor.reset(platform.meta)
        else:
            try:
                head = anchor.read()
            except ValueError as err:
                raise TidegateError(f"audit anchor: {err}") from None
    if head is None:
        console.print("no anchor (the log is empty or was never anchored)")
    else:
        console.print(f"anchored at record {head.seq} ({head.hash[:16]}…), {_when(head.at)}")


@keys_app.command("create")
def keys_create(
    principal: Annotated[str, typer.Option(help="Who uses the key (an app or a person).")],
    role: Annotated[list[str], typer.Option(help="A role from policies/ (repeatable).")],
    project_dir: ProjectDir = Path("."),
    ttl: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d; default: no expiry.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Create an API key; it is shown once and stored only as a hash."""
    from tidegate.platform import Platform
    from tidegate.platform.keys import create_key
    from tidegate.project.models import parse_duration

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
    if json_output:
        print_json({"key_id": row.key_id, "principal": principal, "roles": role, "key": token})
        return
    console.print(f"key id {row.key_id} for {principal} ({', '.join(role)}):")
    console.print(token, markup=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(project_dir: ProjectDir = Path("."), json_output: JsonOption = False) -> None:
    """Every key: principal, roles, expiry and revocation (never the secret)."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        rows = platform.meta.api_keys()
    if json_output:
        print_json(
            [
                {
                    "key_id": r.key_id,
                    "principal": r.principal,
                    "roles": list(r.roles),
                    "created_at": r.created_at,
                    "expires_at": r.expires_at,
                    "revoked_at": r.revoked_at,
                }
                for r in rows
            ]
        )
        return
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
def keys_revoke(
    key_id: str, project_dir: ProjectDir = Path("."), json_output: JsonOption = False
) -> None:
    """Revoke a key at once."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        if not platform.meta.revoke_api_key(key_id, time.time()):
            raise TidegateError(f"no active key {key_id!r}")
        platform.audit.append(
            AuditRecord(
                action="admin", principal=ADMIN, detail={"op": "key.revoke", "key_id": key_id}
            )
        )
    if json_output:
        print_json({"revoked": key_id})
        return
    console.print(f"revoked key {key_id}")


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    project_dir: ProjectDir = Path("."),
    grace: Annotated[
        str, typer.Option(help="How long the old key keeps working, e.g. 1h; 0s: revoke now.")
    ] = "1h",
    ttl: Annotated[str | None, typer.Option(help="Lifetime of the new key, e.g. 90d.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Replace a key: a new secret for the same principal and roles (shown once)."""
    from tidegate.platform import Platform
    from tidegate.platform.keys import rotate_key
    from tidegate.project.models import parse_duration

    grace_seconds = 0.0 if grace.strip() in {"0", "0s"} else parse_duration(grace).total_seconds()
    seconds = parse_duration(ttl).total_seconds() if ttl else None
    with Platform.open(project_dir) as platform:
        token, row, stops = rotate_key(platform.meta, key_id, grace_seconds, seconds)
        platform.audit.append(
            AuditRecord(
                action="admin",
                principal=ADMIN,
                detail={
                    "op": "key.rotate",
                    "key_id": key_id,
                    "new_key_id": row.key_id,
                    "old_key_stops_at": stops,
                },
            )
        )
    if json_output:
        print_json(
            {"key_id": row.key_id, "replaces": key_id, "old_key_stops_at": stops, "key": token}
        )
        return
    console.print(
        f"key id {row.key_id} replaces {key_id} ({row.principal}); {key_id} stops "
        f"{'now' if grace_seconds == 0 else 'at ' + _when(stops)}:"
    )
    console.print(token, markup=False, soft_wrap=True)
