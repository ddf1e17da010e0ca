"""`POST /v1/events/{source}`: a batch of events in, counts and per-index reasons out.

The body is a JSON array of events, `{"events": [...]}`, or JSON lines
(`Content-Type: application/x-ndjson`); with JSON lines a malformed line is rejected
by itself and the rest of the batch goes on. The answer is always
`{"accepted": n, "rejected": [{"index": i, "reason": "..."}], "unknown_fields":
{"policy": "drop", "events": n, "fields": {"coupon": n}}}`: accepted events are in the
event log when it returns, rejected ones in the dead-letter store, and the fields the
source does not declare are counted whatever its `unknown_fields` policy.

Who may post: an API key one of whose roles lists the source (or `*`) under `ingest:`
in the policies. Posting is not egress (nothing leaves), so no purpose is needed; every
call, allowed or denied, still writes an audit record (action `ingest`: who, which
source, how many events accepted and rejected, or why it was refused).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidegate.audit.log import AuditRecord
from tidegate.errors import BadRequestError, ForbiddenError, TidegateError
from tidegate.ingest.intake import IntakeResult, intake_of
from tidegate.platform import Platform
from tidegate.platform.keys import Principal, authenticate

MAX_BODY_BYTES = 64 << 20
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")


class PayloadTooLargeError(TidegateError):
    code = "payload_too_large"
    http_status = 413


#: this route in the OpenAPI document (`api/` adds the error answers every route shares)
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/events/{source}": {
        "post": {
            "tags": ["ingest"],
            "summary": "Post Events",
            "description": "Validate each event against the source's columns; log the valid, "
            "dead-letter the rest.",
            "operationId": "post_events_v1_events__source__post",
            "parameters": [
                {"name": "source", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "Counts, the reason for each rejected event, and the "
                    "fields accepted events carried beyond the source's columns",
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


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def ingest_routes(platform: Platform) -> list[Route]:
    """`POST /v1/events/{source}`; errors are raised as TidegateError for the app to answer."""

    async def post_events(request: Request) -> JSONResponse:
        """Validate each event against the source's columns; log the valid, dead-letter the rest."""
        source: str = request.path_params["source"]
        principal: Principal | None = None
        try:
            principal = authenticate(platform.meta, _token(request))
            result = await _ingest(principal, source, request)
        except TidegateError as err:  # every call is audited, allowed or denied
            platform.audit_writer.submit(_record(principal, source, err=err))
            raise
        platform.audit_writer.submit(_record(principal, source, result=result))
        return JSONResponse(result.as_json())

    async def _ingest(principal: Principal, source: str, request: Request) -> IntakeResult:
        target = intake_of(platform)
        target.schema(source)  # 404 for an unknown source, before reading the body
        roles = platform.project.policy.roles
        if not any(
            source in roles[r].ingest or "*" in roles[r].ingest
            for r in principal.roles
            if r in roles
        ):
            raise ForbiddenError(
                f"the key's roles ({', '.join(principal.roles)}) may not post events to "
                f"{source!r}; list it under `ingest:` of a role"
            )
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"request body over {MAX_BODY_BYTES:,} bytes; split it")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in NDJSON_TYPES:
            lines = [line for line in body.split(b"\n") if line.strip()]
            return await run_in_threadpool(target.submit, source, lines, "http", raw=True)
        events, exact = _events(body)
        return await run_in_threadpool(target.submit, source, events, "http", exact=exact)

    return [Route("/v1/events/{source}", post_events, methods=["POST"])]


def _record(
    principal: Principal | None,
    source: str,
    result: IntakeResult | None = None,
    err: TidegateError | None = None,
) -> AuditRecord:
    """One audit record per call: who posted how many events to which source, or why not
    (posting is not egress, but who writes what the products are built from matters)."""
    detail: dict[str, Any] = {"source": source}
    if principal is not None:
        detail["key_id"] = principal.key_id
    if err is not None:
        detail.update(code=err.code, reason=err.message[:300])
    elif result is not None:
        detail.update(accepted=result.accepted, rejected=len(result.rejected))
        if result.unknown_events:
            detail.update(unknown_fields=sorted(result.unknown_fields)[:20])
    return AuditRecord(
        action="ingest",
        principal=principal.name if principal is not None else "anonymous",
        rows=result.accepted if result is not None else 0,
        outcome="denied" if err is not None else "allowed",
        detail=detail,
    )


def _events(body: bytes) -> tuple[list[Any], Callable[[], Sequence[Any]] | None]:
    """The events of a JSON body, and how to read them again with the standard decoder.

    orjson reads a batch several times faster, but reads an integer beyond 64 bits as a
    float; the intake's fast path only takes values both read alike and asks the second
    reading (done at most once, lazily) for the events it leaves to the full validator.
    A body orjson refuses (NaN, a lone surrogate) is read by the standard decoder alone,
    so what is accepted and every reason stay those of the standard decoder."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _unwrap(_standard(body)), None
    events = _unwrap(data)
    cache: list[list[Any]] = []

    def exact() -> list[Any]:
        if not cache:
            cache.append(_unwrap(_standard(body)))
        return cache[0]

    return events, exact


def _standard(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequestError(
            f"the body is not JSON ({err}); send a JSON array of events, or JSON lines with "
            "Content-Type: application/x-ndjson to have bad lines rejected one by one"
        ) from None


def _unwrap(data: Any) -> list[Any]:
    if isinstance(data, dict) and isinstance(data.get("events"), list):
        return list(data["events"])
    if isinstance(data, list):
        return data
    raise BadRequestError('send a JSON array of events, or {"events": [...]}')
