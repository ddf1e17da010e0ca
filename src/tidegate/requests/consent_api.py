"""`POST /v1/consent` and `GET /v1/consent/{subject}`: consent choices in, state out.

Who may call: an API key one of whose roles has `write_consent: true` in the policies
(a CMP backend, a preference centre, a support tool). Recording consent is not egress,
so no purpose is declared; every call is audited, allowed or refused.

The body names a subject and any of:

* `choices`: `[{"purpose": "marketing.email", "action": "grant" | "revoke" | "object",
  "expires_at": <unix time, optional>}]`;
* `tcf`: an IAB TCF v2 TC string (optionally with `tcf_vendor`, our vendor id): decoded
  and mapped to the purposes that list `tcf_purposes` (see `tcf.py`);
* the `Sec-GPC: 1` header (Global Privacy Control): opts out of every purpose marked
  `sale_or_sharing` (or, when unset, whose data uses are sale or sharing:
  `marketing.advertising.third_party`, `third_party_sharing`): `revoke` for consent
  purposes, `object` for the others.

`occurred_at` (unix time or ISO 8601) is when the person chose; it defaults to now, and
for TCF to the string's LastUpdated. A revocation or objection is effective for the
API at once (the guard reads the ledger on every request) and is pushed to sync
destinations in the background (`propagation.py`); the answer says so.
"""

from __future__ import annotations

import email.message
import json
from typing import Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidegate.audit.log import AuditRecord
from tidegate.errors import TidegateError
from tidegate.platform import Platform
from tidegate.platform.keys import Principal, authenticate
from tidegate.privacy.consent import consent_ledger_of
from tidegate.privacy.consent_input import (
    Choice,
    ConsentBody,
    events_for,
    may_write_consent,
    state_of,
)
from tidegate.requests.propagation import propagator_for


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


class InvalidBodyError(TidegateError):
    """422: a body that does not match its schema; `details` lists each problem."""

    code = "invalid_request"
    http_status = 422

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("invalid request")
        self.problems = problems

    def to_error_detail(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.problems}}


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False  # strict: a body without a content type is not taken as JSON
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


async def consent_body(request: Request) -> ConsentBody:
    """The request's body as a ConsentBody, checked before anything else (as the consent
    API has always done: a malformed body is a 422 whoever sends it)."""
    raw = await request.body()
    if not raw:
        raise InvalidBodyError([{"loc": ["body"], "message": "Field required"}])
    data: Any = raw
    if _is_json(request.headers.get("content-type")):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as err:
            loc = ["body", str(err.pos)]
            raise InvalidBodyError([{"loc": loc, "message": "JSON decode error"}]) from None
        except UnicodeDecodeError:
            raise HTTPException(400, "There was an error parsing the body") from None
    try:
        return ConsentBody.model_validate(data, from_attributes=True)  # as FastAPI did
    except ValidationError as err:
        problems = [
            {"loc": ["body", *(str(part) for part in e["loc"])], "message": e["msg"]}
            for e in err.errors()
        ]
        raise InvalidBodyError(problems) from None


def _ok(description: str) -> dict[str, Any]:
    schema = {"type": "object", "additionalProperties": True}
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


#: these routes in the OpenAPI document (`api/` adds the error answers every route shares)
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/consent": {
        "post": {
            "tags": ["consent"],
            "summary": "Post Consent",
            "description": "Record consent choices, a TCF string or a GPC signal for one subject.",
            "operationId": "post_consent_v1_consent_post",
            "requestBody": {
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ConsentBody"}}
                },
                "required": True,
            },
            "responses": _ok("What was recorded, the subject's state and the propagation"),
        }
    },
    "/v1/consent/{subject}": {
        "get": {
            "tags": ["consent"],
            "summary": "Get Consent",
            "description": "A subject's consent history and current state per purpose.",
            "operationId": "get_consent_v1_consent__subject__get",
            "parameters": [
                {"name": "subject", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": _ok("The subject's history and state"),
        }
    },
}


def openapi_schemas() -> dict[str, Any]:
    """The component schemas OPENAPI_PATHS refers to, from the pydantic models."""
    template = "#/components/schemas/{model}"
    body = ConsentBody.model_json_schema(ref_template=template)
    body.pop("$defs", None)
    return {"Choice": Choice.model_json_schema(ref_template=template), "ConsentBody": body}


def consent_routes(platform: Platform) -> list[Route]:
    """Record and read consent; errors are raised as TidegateError for the app to answer."""

    def denied(action: str, principal: Principal | None, subject: str, err: TidegateError) -> None:
        """Refused consent calls are audited too (who tried to write or read whose
        choices, and why not)."""
        detail: dict[str, Any] = {"code": err.code, "reason": err.message[:300]}
        if principal is not None:
            detail["key_id"] = principal.key_id
        platform.audit_writer.submit(
            AuditRecord(
                action=action,
                principal=principal.name if principal is not None else "anonymous",
                subjects=(subject,),
                outcome="denied",
                detail=detail,
            )
        )

    def record(body: ConsentBody, token: str | None, gpc: bool) -> dict[str, Any]:
        principal: Principal | None = None
        try:
            principal = authenticate(platform.meta, token)
            may_write_consent(platform, principal)
            events = events_for(platform, body, gpc)
        except TidegateError as err:
            denied("consent", principal, body.subject, err)
            raise
        seqs = consent_ledger_of(platform).record(events)
        withdrawn = sorted({e.purpose for e in events if e.action != "grant"})
        platform.audit.append(  # consent is evidence: durable before we answer
            AuditRecord(
                action="consent",
                principal=principal.name,
                purpose=events[0].purpose if len(events) == 1 else None,
                subjects=(body.subject,),
                detail={
                    "key_id": principal.key_id,
                    "choices": [[e.purpose, e.action, e.source] for e in events],
                    "gpc": gpc,
                    "tcf": bool(body.tcf),
                },
            )
        )
        if withdrawn:
            propagator_for(platform).submit(body.subject)
        return {
            "subject": body.subject,
            "recorded": [
                {"seq": seq, "purpose": e.purpose, "action": e.action, "source": e.source}
                for seq, e in zip(seqs, events, strict=True)
            ],
            "allowed": state_of(platform, body.subject),
            "propagation": (
                {"status": "scheduled", "purposes": withdrawn} if withdrawn else {"status": "none"}
            ),
        }

    def read(subject: str, token: str | None) -> dict[str, Any]:
        principal: Principal | None = None
        try:
            principal = authenticate(platform.meta, token)
            may_write_consent(platform, principal)
        except TidegateError as err:
            denied("consent_read", principal, subject, err)
            raise
        history = consent_ledger_of(platform).history(subject)
        platform.audit_writer.submit(
            AuditRecord(
                action="consent_read",
                principal=principal.name,
                subjects=(subject,),
                detail={"key_id": principal.key_id},
            )
        )
        return {
            "subject": subject,
            "history": [h.__dict__ for h in history],
            "allowed": state_of(platform, subject),
        }

    async def post_consent(request: Request) -> JSONResponse:
        """Record consent choices, a TCF string or a GPC signal for one subject."""
        body = await consent_body(request)
        gpc = request.headers.get("sec-gpc", "").strip() == "1"
        return JSONResponse(await run_in_threadpool(record, body, _token(request), gpc))

    async def get_consent(request: Request) -> JSONResponse:
        """A subject's consent history and current state per purpose."""
        subject = request.path_params["subject"]
        return JSONResponse(await run_in_threadpool(read, subject, _token(request)))

    return [
        Route("/v1/consent", post_consent, methods=["POST"]),
        Route("/v1/consent/{subject}", get_consent, methods=["GET"]),
    ]
