"""The one HTTP app (layer 6), assembled from the routes that live with their stage.

* serving (plain Starlette, `egress/serve/app.py`): products, entities, lookups, the
  OpenAPI document and its docs page;
* event ingestion (`ingest/http.py`), the consent API (`requests/consent_api.py`) and
  data-subject requests (`requests/requests_api.py`): FastAPI routers, dispatched to by
  path prefix; their paths join `/openapi.json`.

Around them: the hardening middleware (body limits, headers), CORS when configured, and
Prometheus metrics (`GET /metrics`, request timing).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tidegate.egress.serve import openapi
from tidegate.egress.serve.app import crash, http_error, serve_routes, tidegate_error
from tidegate.egress.serve.http import ASGIApp, Hardening, Receive, Scope, Send, error_response
from tidegate.egress.serve.service import Serving
from tidegate.errors import TidegateError
from tidegate.platform import Platform

#: ingestion enforces its own (larger) body limit
OWN_BODY_LIMIT = ("/v1/events/",)


def _extensions(platform: Platform) -> Any:
    """Routers of other stages (FastAPI): event ingestion and the consent API."""
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError

    from tidegate.ingest.http import create_ingest_router
    from tidegate.requests.consent_api import create_consent_router
    from tidegate.requests.requests_api import create_requests_router

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(TidegateError)
    async def _tidegate_error(request: Request, err: TidegateError) -> Response:
        return tidegate_error(err)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, err: RequestValidationError) -> Response:
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "message": e.get("msg", "")}
            for e in err.errors()
        ]
        return error_response(422, "invalid_request", "invalid request", details)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, crash)
    app.include_router(create_ingest_router(platform))
    app.include_router(create_consent_router(platform))
    app.include_router(create_requests_router(platform))  # requests/requests_api.py
    return app


def _prefixes(app: Any) -> tuple[str, ...]:
    """The literal start of each route's path: `/v1/events/{source}` -> `/v1/events/`."""
    return tuple(sorted({path.split("{", 1)[0] for path in app.openapi().get("paths", {})}))


def _lifespan(serving: Serving) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        serving.close()

    return lifespan


def create_app(platform: Platform) -> ASGIApp:
    project = platform.project
    serving = Serving(platform)
    extension = _extensions(platform)
    extension_prefixes = _prefixes(extension)
    cached: dict[str, Any] = {}

    def spec() -> dict[str, Any]:
        if "doc" not in cached:
            cached["doc"] = openapi.build(extension.openapi(), products=list(project.products))
        doc: dict[str, Any] = cached["doc"]
        return doc

    main = Starlette(
        routes=serve_routes(serving, spec, project.name),
        exception_handlers={HTTPException: http_error, Exception: crash},
        lifespan=_lifespan(serving),
    )

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(extension_prefixes):
            await extension(scope, receive, send)
        else:
            await main(scope, receive, send)

    settings = project.config.serve
    app: ASGIApp = Hardening(dispatch, settings.max_body_bytes, exempt=OWN_BODY_LIMIT)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(
            app,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "X-Purpose", "Content-Type"],
            max_age=600,
        )
    from tidegate.observe.metrics import instrument

    return instrument(app, platform)  # GET /metrics (Prometheus) and request timing


def app_from_env() -> ASGIApp:
    """For several worker processes: `TIDEGATE_PROJECT=dir uvicorn --factory --workers 2
    tidegate.api.app:app_from_env`. Each worker opens the project; its audit
    writer stores what it holds when the worker exits (an atexit hook)."""
    import os

    return create_app(Platform.open(os.environ.get("TIDEGATE_PROJECT", ".")))
