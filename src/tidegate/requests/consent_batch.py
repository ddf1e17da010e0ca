"""Bulk consent: a CMP's export loaded into the ledger, by `tidegate consent import FILE`
and `POST /v1/consent/batch` (same keys and roles as `POST /v1/consent`: `write_consent`).

`load_choices` reads the lines (`privacy/consent_import.py`: each validated on its own,
bad ones reported with their line number), and per chunk of `CHUNK` lines:

1. drops subjects that were erased (a tombstone; counted, as on the topic path) and
   lines whose key the ledger already holds (so a re-run records nothing twice);
2. appends the chunk's entries in one transaction, then writes one `consent_import`
   audit record naming the chunk's subjects, durably, as the API does;
3. collects the subjects who revoked or objected: they leave sync destinations through
   the same `propagation.propagate` the API, the topic and the CLI use (the CLI in the
   foreground, the API in the background).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidegate.audit.log import AuditRecord
from tidegate.errors import BadRequestError
from tidegate.platform import Platform
from tidegate.platform.keys import authenticate
from tidegate.privacy.consent import consent_ledger_of
from tidegate.privacy.consent_import import (
    Format,
    ImportedChoice,
    LineError,
    read_choices,
    row_keys,
    text_lines,
)
from tidegate.privacy.consent_input import may_write_consent
from tidegate.requests.propagation import propagator_for

CHUNK = 5000
#: line errors listed in a report (all are counted)
MAX_LISTED_ERRORS = 1000


@dataclass
class ImportReport:
    lines: int = 0
    recorded: int = 0
    duplicates: int = 0
    erased: int = 0
    invalid: int = 0
    errors: list[LineError] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)  # subjects sent to propagation

    def as_dict(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "erased": self.erased,
            "invalid": self.invalid,
            "errors": [{"line": e.line, "reason": e.reason} for e in self.errors],
            "withdrawn": len(self.withdrawn),
        }


class _Loader:
    def __init__(self, platform: Platform, principal: str, detail: dict[str, Any]) -> None:
        from tidegate.privacy.tombstones import tombstones_of

        self.platform = platform
        self.principal = principal
        self.detail = detail
        self.tombstones = tombstones_of(platform)
        self.tombstones.refresh()
        self.report = ImportReport()
        self._seen: set[tuple[Any, ...]] = set()
        self._withdrawn: set[str] = set()

    def add(self, found: ImportedChoice | LineError, chunk: list[ImportedChoice]) -> None:
        self.report.lines += 1
        if isinstance(found, LineError):
            self.report.invalid += 1
            if len(self.report.errors) < MAX_LISTED_ERRORS:
                self.report.errors.append(found)
        elif self.tombstones.is_erased(found.event.subject):
            self.report.erased += 1
        else:
            chunk.append(found)

    def flush(self, chunk: list[ImportedChoice]) -> None:
        if not chunk:
            return
        ledger = consent_ledger_of(self.platform)
        for subject in {c.event.subject for c in chunk}:
            for row in ledger.history(subject):
                self._seen.update(row_keys(row))
        fresh = []
        for choice in chunk:
            key = choice.key()
            if key in self._seen:
                self.report.duplicates += 1
                continue
            self._seen.add(key)
            fresh.append(choice)
        if not fresh:
            return
        ledger.record(c.event for c in fresh)  # one transaction per chunk
        self.report.recorded += len(fresh)
        subjects = sorted({c.event.subject for c in fresh})
        withdrawn = sorted({c.event.subject for c in fresh if c.event.action != "grant"})
        self._withdrawn.update(withdrawn)
        self.platform.audit.append(
            AuditRecord(
                action="consent_import",
                principal=self.principal,
                rows=len(fresh),
                subjects=tuple(subjects),
                detail={
                    **self.detail,
                    "lines": [fresh[0].line, fresh[-1].line],
                    "withdrawn": len(withdrawn),
                },
            )
        )

    def finish(self) -> ImportReport:
        self.report.withdrawn = sorted(self._withdrawn)
        return self.report


def load_choices(
    platform: Platform,
    data: Iterable[str],
    fmt: Format,
    *,
    principal: str,
    detail: dict[str, Any] | None = None,
    chunk_size: int = CHUNK,
) -> ImportReport:
    """Load a CMP export's lines (see the module docstring); propagation is the caller's:
    `report.withdrawn` lists the subjects to push out of sync destinations."""
    project = platform.project
    loader = _Loader(platform, principal, detail or {})
    chunk: list[ImportedChoice] = []
    for found in read_choices(
        data,
        fmt,
        project.policy.purposes,
        clock_skew=project.config.consent.clock_skew_seconds,
    ):
        loader.add(found, chunk)
        if len(chunk) >= chunk_size:
            loader.flush(chunk)
            chunk = []
    loader.flush(chunk)
    return loader.finish()


# ---------------------------------------------------------------- POST /v1/consent/batch

CONTENT_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/json-lines": "jsonl",
}

OPENAPI_PATHS: dict[str, Any] = {
    "/v1/consent/batch": {
        "post": {
            "tags": ["consent"],
            "summary": "Post Consent Batch",
            "description": (
                "Load many consent choices at once (a CMP export): CSV (text/csv, with a "
                "header) or JSON lines (application/x-ndjson), one choice per line with "
                "subject, purpose, action, occurred_at and optionally id, source, evidence, "
                "expires_at. Bad lines are reported with their number, the rest recorded; "
                "lines already recorded (same id, or same choice and time) are skipped."
            ),
            "operationId": "post_consent_batch_v1_consent_batch_post",
            "requestBody": {
                "required": True,
                "content": {
                    kind: {"schema": {"type": "string"}}
                    for kind in ("text/csv", "application/x-ndjson")
                },
            },
            "responses": {
                "200": {
                    "description": "Counts, line errors and the propagation",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": True}
                        }
                    },
                }
            },
        }
    }
}


def batch_route(platform: Platform, token_of: Callable[[Request], str | None]) -> Route:
    """`POST /v1/consent/batch`; `token_of(request)` is the consent API's key reader."""

    def load(payload: bytes, fmt: Format, token: str | None) -> dict[str, Any]:
        principal = authenticate(platform.meta, token)
        may_write_consent(platform, principal)
        if not payload.strip():
            raise BadRequestError("the body is empty: send CSV or JSON lines", field="body")
        report = load_choices(
            platform,
            text_lines(payload),
            fmt,
            principal=principal.name,
            detail={"key_id": principal.key_id, "via": "api"},
        )
        propagator = propagator_for(platform)
        for subject in report.withdrawn:
            propagator.submit(subject)
        body = report.as_dict()
        body["propagation"] = (
            {"status": "scheduled", "subjects": len(report.withdrawn)}
            if report.withdrawn
            else {"status": "none"}
        )
        return body

    async def post_batch(request: Request) -> JSONResponse:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = CONTENT_TYPES.get(kind)
        if fmt is None:
            raise BadRequestError(
                f"content type {kind or '(none)'!r} is not a batch format: send text/csv or "
                "application/x-ndjson",
                field="content-type",
            )
        payload = await request.body()
        return JSONResponse(await run_in_threadpool(load, payload, fmt, token_of(request)))

    return Route("/v1/consent/batch", post_batch, methods=["POST"])
