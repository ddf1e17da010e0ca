"""`GET /v1/subjects/{subject}` (access) and `DELETE /v1/subjects/{subject}` (erasure).

Who may call: an API key one of whose roles has `subject_requests: true` (a privacy
officer's tool, a DSAR portal's backend). Answering a request is not egress for a
purpose: no purpose is declared; both are audited (`subject_requests.py`). A refused call is
audited too (action `deny`), so repeated attempts show in monitoring.

The query names the kind of person: `?type=customer` (required when the project has
several subject types: 400 listing them otherwise) and, to find the person by a lookup
column the type declares instead of by id, `?by=email` (`GET
/v1/subjects/ada@example.com?type=customer&by=email`; 404 when nobody matches).

The access answer is the package `subject_requests.access` builds; the erasure answer is the
completion report (status 200 when every system is done, 202 when some are pending,
e.g. the warehouse was held by another process: the tombstone is already in force).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidegate.audit.log import AuditRecord
from tidegate.errors import ForbiddenError
from tidegate.platform.keys import Principal, authenticate

if TYPE_CHECKING:
    from tidegate.platform import Platform


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


#: (subject type, lookup column) a request names in its query (None: not given)
Which = tuple[str | None, str | None]


def _which(request: Request) -> Which:
    kind = request.query_params.get("type") or None
    by = request.query_params.get("by") or None
    return (kind[:64] if kind else None, by[:64] if by else None)


def may_answer_requests(platform: Platform, principal: Principal, action: str) -> None:
    roles = platform.project.policy.roles
    if not any(roles[r].subject_requests for r in principal.roles if r in roles):
        platform.audit_writer.submit(
            AuditRecord(
                action="deny",
                principal=principal.name,
                outcome="denied",
                detail={"key_id": principal.key_id, "request": action},
            )
        )
        raise ForbiddenError(
            f"principal {principal.name!r} may not answer subject requests: none of its "
            "roles has `subject_requests: true`"
        )


def _operation(method: str, summary: str, description: str, operation_id: str) -> dict[str, Any]:
    return {
        method: {
            "tags": ["subject requests"],
            "summary": summary,
            "description": description,
            "operationId": operation_id,
            "parameters": [
                {"name": "subject", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "type",
                    "in": "query",
                    "required": False,
                    "description": "the subject type; required when the project has several",
                    "schema": {"type": "string"},
                },
                {
                    "name": "by",
                    "in": "query",
                    "required": False,
                    "description": "a lookup column of the type (e.g. email): `subject` is "
                    "its value",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The answer (erasure: every system done)",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": True}
                        }
                    },
                }
            },
        }
    }


#: these routes in the OpenAPI document (`api/` adds the error answers every route shares)
OPENAPI_PATHS: dict[str, Any] = {
    "/v1/subjects/{subject}": {
        **_operation(
            "get",
            "Get Subject",
            "Everything held about a data subject (GDPR Art. 15), as JSON.",
            "get_subject_v1_subjects__subject__get",
        ),
        **_operation(
            "delete",
            "Delete Subject",
            "Erase a data subject everywhere (GDPR Art. 17); answers the completion report.",
            "delete_subject_v1_subjects__subject__delete",
        ),
    }
}


def requests_routes(platform: Platform) -> list[Route]:
    """Access and erasure; errors are raised as TidegateError for the app to answer."""
    from tidegate.requests.subject_access import access
    from tidegate.requests.subject_requests import erase

    def answer_access(subject: str, token: str | None, which: Which) -> dict[str, Any]:
        principal = authenticate(platform.meta, token)
        may_answer_requests(platform, principal, "access")
        return access(platform, subject, principal.name, subject_type=which[0], by=which[1])

    def answer_erasure(subject: str, token: str | None, reason: str, which: Which) -> JSONResponse:
        principal = authenticate(platform.meta, token)
        may_answer_requests(platform, principal, "erase")
        report = erase(
            platform, subject, principal.name, reason, subject_type=which[0], by=which[1]
        )
        return JSONResponse(report.as_json(), status_code=200 if report.complete else 202)

    async def get_subject(request: Request) -> JSONResponse:
        """Everything held about a data subject (GDPR Art. 15), as JSON."""
        subject = request.path_params["subject"]
        found = await run_in_threadpool(answer_access, subject, _token(request), _which(request))
        # an incomplete package is not an answer: 503 with what could not be read
        return JSONResponse(found, status_code=200 if found["complete"] else 503)

    async def delete_subject(request: Request) -> JSONResponse:
        """Erase a data subject everywhere (GDPR Art. 17); answers the completion report."""
        subject = request.path_params["subject"]
        reason = request.query_params.get("reason", "")[:500]
        return await run_in_threadpool(
            answer_erasure, subject, _token(request), reason, _which(request)
        )

    return [
        Route("/v1/subjects/{subject}", get_subject, methods=["GET"]),
        Route("/v1/subjects/{subject}", delete_subject, methods=["DELETE"]),
    ]
