"""The serving API (FastAPI).

`GET /v1/products/{product}/entities/{key}` with the purpose in `X-Purpose` and an API
key in `Authorization: Bearer …` returns the entity as that purpose may see it. A
subject without a legal basis for the purpose gets the same 404 as a key that does not
exist, so the answer reveals nothing about them. Every call, allowed or denied, is
audited.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.keys import Principal, authenticate
from tidegate.errors import NotFoundError, TidegateError
from tidegate.privacy.guard import AccessContext
from tidegate.runtime.platform import Platform
from tidegate.store.online.codec import decode_row

log = logging.getLogger(__name__)
MAX_KEY_LENGTH = 256


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="tidegate",
        version="0.1.0",
        description="Governed data products, served through purpose and consent checks.",
    )
    project = platform.project

    @app.exception_handler(TidegateError)
    async def _tidegate_error(request: Request, err: TidegateError) -> JSONResponse:
        return JSONResponse(err.to_error_detail(), status_code=err.http_status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "message": e.get("msg", "")}
            for e in err.errors()
        ]
        body = {
            "error": {"code": "invalid_request", "message": "invalid request", "details": details}
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, err: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else "http_error"
        return JSONResponse(
            {"error": {"code": code, "message": str(err.detail)}}, status_code=err.status_code
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error serving %s", request.url.path)
        return JSONResponse(
            {"error": {"code": "internal", "message": "internal error; see the server log"}},
            status_code=500,
        )

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "project": project.name}

    @app.get("/v1/products")
    def list_products(request: Request) -> dict[str, Any]:
        principal = authenticate(platform.meta, _token(request))
        visible = [
            {
                "name": name,
                "description": p.config.description,
                "owner": p.config.owner,
                "purposes": list(p.config.purposes),
            }
            for name, p in project.products.items()
            if project.policy.roles_allow_product(principal.roles, name)
        ]
        return {"products": visible}

    @app.get("/v1/products/{product}/entities/{key}")
    def get_entity(product: str, key: str, request: Request) -> dict[str, Any]:
        purpose = request.headers.get("x-purpose")
        principal: Principal | None = None
        audited = False
        try:
            principal = authenticate(platform.meta, _token(request))
            if len(key) > MAX_KEY_LENGTH:
                raise NotFoundError(f"no entity {key[:20]}… in {product!r}")
            context = AccessContext(principal.name, principal.roles, purpose)
            plan = platform.guard.plan(context, product)
            encoded = platform.online.read(product, key)
            types = {name: spec.type for name, spec in project.products[product].columns.items()}
            row = decode_row(encoded, types) if encoded is not None else None
            treated = plan.apply_row(row) if row is not None else None
            subject = None
            if row is not None and plan.subject_column:
                subject = row.get(plan.subject_column)
            if treated is None:
                platform.audit.append(
                    AuditRecord(
                        action="serve",
                        principal=principal.name,
                        purpose=plan.purpose,
                        product=product,
                        columns={},
                        rows=0,
                        subjects=(str(subject),) if subject is not None else (),
                        outcome="filtered" if row is not None else "absent",
                        detail={"key": key, "key_id": principal.key_id},
                    )
                )
                audited = True
                raise NotFoundError(f"no entity {key!r} in {product!r}", product=product)
        except TidegateError as err:
            if not audited:
                platform.audit.append(
                    AuditRecord(
                        action="serve",
                        principal=principal.name if principal else "anonymous",
                        purpose=purpose,
                        product=product,
                        outcome="denied",
                        detail={
                            "key": key[:MAX_KEY_LENGTH],
                            "code": err.code,
                            "reason": err.message,
                        },
                    )
                )
            raise
        version = platform.meta.live_version(product)
        platform.audit.append(
            AuditRecord(
                action="serve",
                principal=principal.name,
                purpose=plan.purpose,
                product=product,
                columns={name: plan.treatments()[name] for name in treated},
                rows=1,
                subjects=(str(subject),) if subject is not None else (),
                detail={"key": key, "key_id": principal.key_id},
            )
        )
        return {
            "product": product,
            "key": key,
            "purpose": plan.purpose,
            "version": version.version if version else None,
            "built_at": (
                dt.datetime.fromtimestamp(version.built_at, dt.UTC).isoformat() if version else None
            ),
            "treatments": {c.name: c.treatment.treatment for c in plan.columns},
            "data": {name: _json_value(value) for name, value in treated.items()},
        }

    return app
