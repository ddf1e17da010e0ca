"""Syncs, consent and requests, audit, dead letters and health: the pages that act.

Each action calls the function the CLI calls (`run_sync`, `erase`, `access`,
`AuditLog.verify`, `ingest.intake.replay`), after the same role check the API makes
(`core.Page.may_*`), and leaves a durable audit record naming the console.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from starlette.responses import RedirectResponse, Response

from tidegate.api.console.core import Page
from tidegate.errors import BadRequestError, NotFoundError, TidegateError
from tidegate.private import private_dir, private_file
from tidegate.project.project import stream_sources
from tidegate.project.subjects import subject_types
from tidegate.timestamps import format_timestamp

REQUEST_ID = re.compile(r"^[0-9a-f]{8,32}$")
AUDIT_LIMIT = 200


# ---------------------------------------------------------------- syncs


def _next_run(schedule: str | None, last: dict[str, Any] | None) -> dict[str, Any] | None:
    """When the scheduler fires next: the cron's first moment after the last run's start
    (what `tidegate sync status` and `egress/sync/schedule.py` use); a moment already
    past means the sync is due and runs on the runtime's next tick."""
    if not schedule:
        return None
    from tidegate.project.cron import next_fire

    now = dt.datetime.now(dt.UTC)
    after = dt.datetime.fromtimestamp(last["started_at"], dt.UTC) if last else now
    fire = next_fire(schedule, after)
    return {"at": str(format_timestamp(fire)), "iso": fire.isoformat(), "due": fire <= now}


def syncs(page: Page) -> Response:
    platform = page.console.platform
    shown = []
    hidden = 0
    for name, sync in sorted(platform.project.syncs.items()):
        cfg = sync.config
        if not page.may_run_sync(name):
            hidden += 1
            continue
        runs = platform.meta.runs("sync", name, limit=20)
        errors = platform.meta.sync_row_errors(name)
        shown.append(
            {
                "name": name,
                "product": cfg.product,
                "purpose": cfg.purpose,
                "destination": cfg.destination.type,
                "mode": cfg.mode,
                "trigger": cfg.trigger,
                "schedule": cfg.schedule,
                "next_run": _next_run(cfg.schedule, runs[0] if runs else None),
                "runs": runs,
                "retries": sum(max(0, e.attempts - 1) for e in errors),
                "errors": errors[:50],
                "error_count": len(errors),
            }
        )
    page.audit("syncs", detail={"syncs": [s["name"] for s in shown]})
    return page.render(
        "syncs.html", active="syncs", syncs=shown, hidden=hidden, ran=page.param("ran")
    )


def run_sync(page: Page) -> Response:
    from tidegate.egress.sync import run_sync as run

    name = page.request.path_params["sync"]
    if name not in page.console.platform.project.syncs:
        raise NotFoundError(f"no sync named {name[:80]!r}")
    page.require(
        page.may_run_sync(name),
        f"run sync {name!r}",
        "its roles must hold the sync's purpose and may read its product",
    )
    full = page.form.get("full") == "1"
    try:
        report = run(page.console.platform, name, full=full)
    except TidegateError as err:
        page.audit_now(
            "admin",
            outcome="failed",
            detail={"op": "sync.trigger", "sync": name, "error": err.message[:300]},
        )
        raise
    page.audit_now(
        "admin",
        detail={
            "op": "sync.trigger",
            "sync": name,
            "full": full,
            "status": report.status,
            **report.counts(),
        },
    )
    return RedirectResponse(f"/console/syncs?ran={name}#sync-{name}", 303)


# ---------------------------------------------------------------- consent and requests


def _reports_dir(page: Page) -> Path:
    return page.console.platform.state_dir / "console" / "erasure-reports"


def privacy(page: Page) -> Response:
    from tidegate.privacy.consent import consent_ledger_of, consent_view_of

    page.require(
        page.may_read_consent,
        "read consent",
        "none of its roles has `write_consent: true` or `subject_requests: true`",
    )
    platform = page.console.platform
    subject = page.param("subject")
    history: list[Any] = []
    states: dict[str, bool] = {}
    if subject:
        history = consent_ledger_of(platform).history(subject)
        view = consent_view_of(platform)
        view.refresh()
        states = {
            name: view.allowed(subject, name, purpose.legal_basis)
            for name, purpose in platform.project.policy.purposes.items()
        }
        page.audit("consent", subjects=(subject,), detail={"history": len(history)})
    else:
        page.audit("privacy")
    trends, propagation = _consent_overview(page)
    reports = (
        sorted(_reports_dir(page).glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)[
            :20
        ]
        if page.may_answer_requests
        else []
    )
    recent = [json.loads(p.read_text()) for p in reports]
    return page.render(
        "privacy.html",
        active="privacy",
        subject=subject,
        history=history,
        states=states,
        purposes=platform.project.policy.purposes,
        may_answer=page.may_answer_requests,
        subject_types=sorted(subject_types(platform.project)),
        reports=recent,
        done=page.param("done"),
        trends=trends,
        propagation=propagation,
    )


def _consent_overview(page: Page) -> tuple[list[dict[str, Any]], Any]:
    """Choices per purpose per day (charts) and revocation propagation times: counts
    and durations only, so any role that may read consent may see them."""
    from tidegate.api.console.consent_stats import choices_per_day, propagation_times
    from tidegate.api.console.svg import line_chart

    platform = page.console.platform
    rows = list(platform.meta.consent_rows())
    trends = [
        {
            "purpose": s.purpose,
            "grants": s.total_grants,
            "revocations": s.total_revocations,
            "chart_grants": line_chart(f"{s.purpose}: grants per day", s.grants, "grants"),
            "chart_revocations": line_chart(
                f"{s.purpose}: revocations per day", s.revocations, "revocations"
            ),
        }
        for s in choices_per_day(rows).values()
    ]
    return trends, propagation_times(platform.audit, rows)


def _need_requests(page: Page, what: str) -> str:
    page.require(page.may_answer_requests, what, "none of its roles has `subject_requests: true`")
    subject = page.param("subject")
    if not subject:
        raise BadRequestError("give the subject's id")
    return subject


def erase(page: Page) -> Response:
    from tidegate.requests.subject_requests import erase as erase_subject

    subject = _need_requests(page, "answer erasure requests")
    if page.form.get("confirm") != subject:
        raise BadRequestError("type the subject's id again in the confirmation field to erase")
    report = erase_subject(
        page.console.platform,
        subject,
        page.principal.name,
        page.param("reason"),
        subject_type=page.param("type") or None,
    )  # audited by erase() itself (action erasure)
    folder = _reports_dir(page)
    private_dir(folder)
    body = report.as_json()  # names the subject only by its hash
    private_file(folder / f"{report.request_id}.json", create=True)
    (folder / f"{report.request_id}.json").write_text(json.dumps(body, indent=2))
    return RedirectResponse(f"/console/privacy?done={report.request_id}", 303)


def report(page: Page) -> Response:
    page.require(
        page.may_answer_requests,
        "read erasure reports",
        "none of its roles has `subject_requests: true`",
    )
    request_id = page.request.path_params["request_id"].removesuffix(".json")
    path = _reports_dir(page) / f"{request_id}.json"
    if not REQUEST_ID.match(request_id) or not path.exists():
        raise NotFoundError(f"no erasure report {request_id[:40]!r}")
    page.audit("erasure_report", detail={"request_id": request_id})
    return Response(
        path.read_bytes(),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="erasure-{request_id}.json"'},
    )


def access_package(page: Page) -> Response:
    from tidegate.requests.subject_access import access

    subject = _need_requests(page, "answer access requests")
    package = access(
        page.console.platform, subject, page.principal.name, subject_type=page.param("type") or None
    )  # audited by access()
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", subject)[:60]
    return Response(
        json.dumps(package, indent=2, default=str),
        media_type="application/json",
        headers={"content-disposition": f'attachment; filename="access-{safe}.json"'},
    )


# ---------------------------------------------------------------- audit


def audit(page: Page) -> Response:
    from tidegate.audit.search import AuditQuery, parse_time, search

    page.require(
        page.may_audit, "read the audit log", "none of its roles has `subject_requests: true`"
    )
    fields = {
        f: page.param(f) or None
        for f in ("principal", "purpose", "subject", "product", "action", "outcome")
    }
    since, until = page.param("since"), page.param("until")
    try:
        query = AuditQuery(
            principal=fields["principal"],
            purpose=fields["purpose"],
            subject=fields["subject"],
            product=fields["product"],
            action=fields["action"],
            outcome=fields["outcome"],
            since=parse_time(since) if since else None,
            until=parse_time(until) if until else None,
        )
    except (ValueError, TidegateError) as err:
        raise BadRequestError(f"cannot read the time: {err}") from None
    searched = any(fields.values()) or since or until
    found = []
    if searched:
        found = list(search(page.console.platform.audit, query, None))[-AUDIT_LIMIT:]
    page.audit(
        "audit",
        subjects=(fields["subject"],) if fields["subject"] else (),
        detail={
            "filters": {k: v for k, v in fields.items() if v and k != "subject"},
            "found": len(found),
        },
    )
    return page.render(
        "audit.html",
        active="audit",
        fields=fields,
        since=since,
        until=until,
        found=list(reversed(found)),
        searched=bool(searched),
        verified=page.param("verified"),
        limit=AUDIT_LIMIT,
    )


def verify(page: Page) -> Response:
    page.require(
        page.may_audit, "verify the audit log", "none of its roles has `subject_requests: true`"
    )
    platform = page.console.platform
    platform.audit.flush()
    issues = platform.audit.verify()
    count = platform.audit.last_seq()
    page.audit_now(
        "admin",
        outcome="allowed" if not issues else "failed",
        detail={"op": "audit.verify", "records": count, "issues": len(issues)},
    )
    return page.render("verify.html", active="audit", issues=[str(i) for i in issues], count=count)


# ---------------------------------------------------------------- dead letters and health


def _backends(page: Page) -> list[dict[str, Any]]:
    """Readiness: one cheap call to each backend, timed (`observe/health.py`, the same
    checks as `/v1/health/ready`); a failure is shown, not raised."""
    from tidegate.observe.health import readiness

    return [check.as_json() for check in readiness(page.console.platform)]


def _lag(page: Page) -> list[dict[str, Any]]:
    from tidegate.observe.metrics import WORKER_GROUP

    platform = page.console.platform
    rows: list[dict[str, Any]] = []
    for name, config in sorted(stream_sources(platform.project).items()):
        topic = config.topic_name
        try:
            ends = platform.event_log.end_offsets(topic)
            committed = platform.event_log.committed(WORKER_GROUP, topic)
        except Exception as err:
            rows.append(
                {
                    "source": name,
                    "topic": topic,
                    "partition": "—",
                    "end": "—",
                    "committed": "—",
                    "lag": f"unreadable: {type(err).__name__}",
                }
            )
            continue
        if not ends:  # the topic is empty or not created yet: say so, not nothing
            rows.append(
                {
                    "source": name,
                    "topic": topic,
                    "partition": "—",
                    "end": 0,
                    "committed": "—",
                    "lag": 0,
                }
            )
        for partition, end in sorted(ends.items()):
            done = committed.get(partition, 0)
            rows.append(
                {
                    "source": name,
                    "topic": topic,
                    "partition": partition,
                    "end": end,
                    "committed": done,
                    "lag": max(0, end - done),
                }
            )
    return rows


def health(page: Page) -> Response:
    store = page.console.platform.meta.dead_letters
    letters = store.list(None, 100)
    counts = store.counts_by_source()
    payloads = page.may_answer_requests  # raw events hold personal data
    page.audit("health", detail={"dead_letters": len(letters), "payloads": payloads})
    return page.render(
        "health.html",
        active="health",
        backends=_backends(page),
        lag=_lag(page),
        letters=[
            {**d.__dict__, "preview": (d.payload or b"").decode("utf-8", "replace")[:200]}
            for d in letters
        ],
        counts=counts,
        payloads=payloads,
        replayable={s for s in counts if page.may_replay(s)},
        replayed=page.param("replayed"),
    )


def replay(page: Page) -> Response:
    from tidegate.ingest.intake import intake_of
    from tidegate.ingest.intake import replay as replay_letters

    source = page.param("source")
    page.require(
        page.may_replay(source),
        f"replay dead letters of {source!r}",
        "its roles may not post events to this source (`ingest`)",
    )
    intake = intake_of(page.console.platform)
    letters = intake.dead.list(source, limit=10_000)
    result = replay_letters(intake, letters)
    page.audit_now(
        "admin",
        detail={
            "op": "dlq.replay",
            "source": source,
            "replayed": result.replayed,
            "still_failing": result.still_failing,
        },
    )
    return RedirectResponse(
        f"/console/health?replayed={result.replayed}+replayed,+{result.still_failing}+still+fail",
        303,
    )
