"""`GET /v1/subjects/{subject}` (access) and `DELETE /v1/subjects/{subject}` (erasure).

Who may call: an API key one of whose roles has `subject_requests: true` (a privacy
officer's tool, a DSAR portal's backend). Answering a request is not egress for a
purpose: no purpose is declared; both are audited (`requests.py`). A refused call is
audited too (action `deny`), so repeated attempts show in monitoring.

The access answer is the package `requests.access` builds; the erasure answer is the
completion report (status 200 when every system is done, 202 when some are pending,
e.g. the warehouse was held by another process: the tombstone is already in force).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

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


def create_requests_router(platform: Platform) -> APIRouter:
    from tidegate.requests.subject_requests import access, erase

    router = APIRouter(tags=["subject requests"])

    @router.get("/v1/subjects/{subject}")
    def get_subject(subject: str, request: Request) -> dict[str, Any]:
        """Everything held about a data subject (GDPR Art. 15), as JSON."""
        principal = authenticate(platform.meta, _token(request))
        may_answer_requests(platform, principal, "access")
        return access(platform, subject, principal.name)

    @router.delete("/v1/subjects/{subject}")
    def delete_subject(subject: str, request: Request) -> JSONResponse:
        """Erase a data subject everywhere (GDPR Art. 17); answers the completion report."""
        principal = authenticate(platform.meta, _token(request))
        may_answer_requests(platform, principal, "erase")
        reason = request.query_params.get("reason", "")[:500]
        report = erase(platform, subject, principal.name, reason)
        return JSONResponse(report.as_json(), status_code=200 if report.complete else 202)

    return router
