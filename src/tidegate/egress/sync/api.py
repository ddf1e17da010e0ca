"""Safe syncs on the API: `GET /v1/syncs/{sync}/preview` and `POST /v1/syncs/{sync}/approve`.

Who may call: an API key one of whose roles may use the sync's purpose and read its
product (the same rule as the console's "run sync"): a preview shows rows of the product
as that purpose sees them. Both are audited (`sync_preview`, `sync_approval`); a refused
call is audited as `deny`. Errors are the API's JSON errors: 401 without a key, 403
outside the key's roles, 404 for an unknown sync, 400 for an approval nothing waits for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidegate.audit.log import AuditRecord
from tidegate.errors import ForbiddenError, NotFoundError
from tidegate.platform.keys import Principal, authenticate

if TYPE_CHECKING:
    from tidegate.platform import Platform


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def may_operate(platform: Platform, principal: Principal, name: str, action: str) -> None:
    """The key's roles must cover the sync's purpose and product; else 403, audited."""
    sync = platform.project.syncs.get(name)
    if sync is None:
        raise NotFoundError(f"no sync named {name!r}", sync=name)
    cfg = sync.config
    roles = platform.project.policy.roles
    for role in (roles[r] for r in principal.roles if r in roles):
        if cfg.purpose in role.purposes and ("*" in role.products or cfg.product in role.products):
            return
    platform.audit_writer.submit(
        AuditRecord(
            action="deny",
            principal=principal.name,
            purpose=cfg.purpose,
            product=cfg.product,
            outcome="denied",
            detail={"key_id": principal.key_id, "sync": name, "request": action},
        )
    )
    raise ForbiddenError(
        f"principal {principal.name!r} may not {action} sync {name!r}: none of its roles "
        f"covers purpose {cfg.purpose!r} and product {cfg.product!r}"
    )


def _operation(method: str, summary: str, description: str) -> dict[str, Any]:
    return {
        method: {
            "tags": ["syncs"],
            "summary": summary,
            "description": description,
            "operationId": f"{method}_sync_{summary.split()[0].lower()}",
            "parameters": [
                {"name": "sync", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "The answer",
                    "content": {
                        "application/json": {
                            "schema": {"type": "object", "additionalProperties": True}
                        }
                    },
                }
            },
        }
    }


OPENAPI_PATHS: dict[str, Any] = {
    "/v1/syncs/{sync}/preview": _operation(
        "get",
        "Preview Sync",
        "What the next run would insert, update and delete at the destination, the rows "
        "the guard withholds and why, the columns treated, a sample; writes nothing.",
    ),
    "/v1/syncs/{sync}/approve": _operation(
        "post",
        "Approve Sync",
        "Let the next run of a sync stopped by its circuit breakers go ahead, once.",
    ),
}


def sync_routes(platform: Platform) -> list[Route]:
    from tidegate.egress.sync.breakers import approve
    from tidegate.egress.sync.preview import preview_sync

    def do_preview(name: str, token: str | None) -> dict[str, Any]:
        principal = authenticate(platform.meta, token)
        may_operate(platform, principal, name, "preview")
        return preview_sync(platform, name, principal.name).as_dict()

    def do_approve(name: str, token: str | None) -> dict[str, Any]:
        principal = authenticate(platform.meta, token)
        may_operate(platform, principal, name, "approve")
        return approve(platform, name, principal.name)

    async def preview(request: Request) -> JSONResponse:
        name = request.path_params["sync"]
        return JSONResponse(await run_in_threadpool(do_preview, name, _token(request)))

    async def approval(request: Request) -> JSONResponse:
        name = request.path_params["sync"]
        return JSONResponse(await run_in_threadpool(do_approve, name, _token(request)))

    return [
        Route("/v1/syncs/{sync}/preview", preview, methods=["GET"]),
        Route("/v1/syncs/{sync}/approve", approval, methods=["POST"]),
    ]
