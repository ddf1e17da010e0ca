"""The one HTTP app (layer 6), assembled from the routes that live with their stage.

* serving (plain Starlette, `egress/serve/app.py`): products, entities, lookups, the
  OpenAPI document and its docs page;
* event ingestion (`ingest/http.py`), the consent API (`requests/consent_api.py`) and
  data-subject requests (`requests/requests_api.py`): plain Starlette routes too, each
  with its OpenAPI paths beside it; they join `/openapi.json`;
* the web console under `/console` and the packaged Swagger UI at `/docs`
  (`api/console/`), after the API's routes.

One framework, one set of error handlers: a route raises TidegateError and the app
answers `{"error": {...}}` with its status; an unexpected exception is a logged 500.

Around them: the hardening middleware (header and body limits, headers), CORS when
configured, Prometheus metrics (`GET /metrics`, request timing; behind a key when
`serve.metrics_roles` is set), and, outermost, the per-address limit on callers that
fail to authenticate (`serve.unauthenticated_rate_limit`).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import math
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidegate.egress.serve import openapi
from tidegate.egress.serve.app import (
    EntityReads,
    crash,
    http_error,
    serve_routes,
    tidegate_error,
)
from tidegate.egress.serve.auth import bearer_token
from tidegate.egress.serve.http import ASGIApp, GuestLimit, Hardening, Receive, Scope, Send
from tidegate.egress.serve.service import Call, Serving
from tidegate.errors import ForbiddenError, TidegateError
from tidegate.platform import Platform

#: ingestion enforces its own (larger) body limit
OWN_BODY_LIMIT = ("/v1/events/",)


async def _tidegate_error(request: Request, err: Exception) -> Response:
    if isinstance(err, TidegateError):
        return tidegate_error(err)
    return await crash(request, err)


def stage_routes(platform: Platform) -> list[Route]:
    """The routes other stages add: event ingestion, consent, data-subject requests, syncs."""
    from tidegate.egress.sync.api import sync_routes
    from tidegate.ingest.http import ingest_routes
    from tidegate.requests.consent_api import consent_routes
    from tidegate.requests.requests_api import requests_routes

    routes = [
        *ingest_routes(platform),
        *consent_routes(platform),
        *requests_routes(platform),
        *sync_routes(platform),
    ]
    for route in routes:  # a GET here does work and is audited: no implicit HEAD
        route.methods = (route.methods or set()) - {"HEAD"}
    return routes


def stage_openapi() -> dict[str, Any]:
    """The OpenAPI paths and schemas of `stage_routes`, for `/openapi.json`."""
    from tidegate.egress.sync.api import OPENAPI_PATHS as SYNCS
    from tidegate.ingest.http import OPENAPI_PATHS as INGEST
    from tidegate.requests.consent_api import OPENAPI_PATHS as CONSENT
    from tidegate.requests.consent_api import openapi_schemas
    from tidegate.requests.requests_api import OPENAPI_PATHS as REQUESTS

    paths = copy.deepcopy({**INGEST, **CONSENT, **REQUESTS, **SYNCS})
    return {"paths": paths, "components": {"schemas": openapi_schemas()}}


def _lifespan(serving: Serving, platform: Platform) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        from tidegate.privacy.policy_reload import reloader_of

        # every serving replica polls policies/ and applies a valid edit by itself
        reloader_of(platform).start()
        settled()
        yield
        # store every held audit record while the server waits for this worker, not in an
        # atexit hook that a server's kill timeout may cut short (granian, under load)
        platform.audit_writer.flush(timeout=30)
        await serving.limiter.aclose()  # the shared limiter's client lives on this loop
        await serving.platform.online.aclose()  # so does the online store's async reader
        serving.close()

    return lifespan


def settled() -> None:
    """Once the app has started: collect, then move every object alive now (modules,
    the project, caches warmed at startup) out of the collector's generations, so no
    generation-2 collection walks the startup heap again while requests run.

    Why: a read allocates dicts and lists, so collections run often under load, and the
    oldest generation held the whole startup heap (config models, Starlette, DuckDB and
    Redis clients): each full pass cost milliseconds, paid in the tail latency."""
    gc.collect()
    gc.freeze()


def create_app(platform: Platform, *, fast_reads: bool = True) -> ASGIApp:
    """The one HTTP app. `fast_reads=False` leaves the hot routes to Starlette too (the
    tests compare both paths; `EntityReads` in egress/serve/app.py)."""
    project = platform.project
    serving = Serving(platform)
    cached: dict[str, Any] = {}

    def spec() -> dict[str, Any]:
        if "doc" not in cached:
            cached["doc"] = openapi.build(stage_openapi(), products=list(project.products))
        doc: dict[str, Any] = cached["doc"]
        return doc

    from tidegate.api.console import console_routes
    from tidegate.api.console.docs import docs_routes

    # the serving routes first: the hot path matches before any other stage's route
    main = Starlette(
        routes=[
            *serve_routes(serving, spec, project.name),
            *stage_routes(platform),
            *docs_routes(),
            *console_routes(platform, serving),
        ],
        exception_handlers={
            TidegateError: _tidegate_error,
            HTTPException: http_error,
            Exception: crash,
        },
        lifespan=_lifespan(serving, platform),
    )
    settings = project.config.serve
    # the entity read and the lookup skip Starlette's routing and objects; the rest, and
    # every middleware around them, is the same for both paths
    app: ASGIApp = Hardening(
        EntityReads(main, serving) if fast_reads else main,
        settings.max_body_bytes,
        exempt=OWN_BODY_LIMIT,
        max_header_bytes=settings.max_header_bytes,
    )
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
    from tidegate.products.slo import slo_report

    # GET /metrics (Prometheus) and request timing
    app = instrument(app, platform, lambda: slo_report(platform))
    if settings.metrics_roles:
        app = _metrics_gate(app, serving, frozenset(settings.metrics_roles))
    guests = settings.unauthenticated_rate_limit
    if guests is not None:
        burst = guests.burst or max(1, math.ceil(guests.requests_per_second))
        app = GuestLimit(app, guests.requests_per_second, burst)
    return app


def _metrics_gate(app: ASGIApp, serving: Serving, roles: frozenset[str]) -> ASGIApp:
    """`/metrics` for keys holding one of `roles` only (`serve.metrics_roles`); refusals are
    audited like any denied call."""

    async def gate(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        call = Call(action="metrics")
        try:
            principal = serving.principal(
                call, bearer_token(headers.get("authorization"), headers.get("x-api-key"))
            )
            if not roles & set(principal.roles):
                raise ForbiddenError(
                    f"principal {principal.name!r} may not read /metrics "
                    f"(roles allowed: {', '.join(sorted(roles))})"
                )
        except TidegateError as err:
            serving.audit_denied(call, err)
            await tidegate_error(err)(scope, receive, send)
            return
        await app(scope, receive, send)

    return gate


def app_from_env() -> ASGIApp:
    """For several worker processes: `TIDEGATE_PROJECT=dir uvicorn --factory --workers 2
    tidegate.api.app:app_from_env`. Each worker opens the project; its audit
    writer stores what it holds when the worker exits (an atexit hook)."""
    import os

    return create_app(Platform.open(os.environ.get("TIDEGATE_PROJECT", ".")))
