"""The console's routes: sign-in and out, static assets, and one route per page."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from tidegate.api.console import catalog, operate
from tidegate.api.console.core import Console
from tidegate.api.console.session import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    SIGNIN_COOKIE,
    Sessions,
    clear_cookie,
    set_cookie,
)
from tidegate.audit.log import AuditRecord
from tidegate.egress.serve.service import Call
from tidegate.errors import TidegateError

if TYPE_CHECKING:
    from tidegate.egress.serve.service import Serving
    from tidegate.platform import Platform

STATIC = Path(__file__).parent / "static"


def _safe_next(target: str) -> str:
    """Only a console path: never an open redirect to another site."""
    parsed = urllib.parse.urlsplit(target)
    if parsed.scheme or parsed.netloc or not parsed.path.startswith("/console"):
        return "/console/"
    return urllib.parse.urlunsplit(("", "", parsed.path, parsed.query, ""))


class _Static(StaticFiles):
    """Packaged assets; cacheable (they change only with the package)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["cache-control"] = "public, max-age=3600"
        return response


def routes(platform: Platform, serving: Serving) -> list[BaseRoute]:
    console = Console(platform, serving)

    def signin_form(request: Request, error: str = "", status: int = 200) -> Response:
        nonce = Sessions.new_signin_nonce()
        response = console.render(
            None,
            "signin.html",
            status,
            error=error,
            nonce=nonce,
            next=_safe_next(request.query_params.get("next", "/console/")),
        )
        set_cookie(response, SIGNIN_COOKIE, nonce, 900, request)
        return response

    async def signin_page(request: Request) -> Response:
        return signin_form(request)

    async def signin(request: Request) -> Response:
        from tidegate.api.console.core import _form

        form = await _form(request)
        try:
            console.sessions.check_signin(request, form.get("nonce"))
            token = form.get("key", "").strip()
            call = Call(action="console")
            principal = await run_in_threadpool(serving.principal, call, token)
        except TidegateError as err:
            serving.audit_denied(Call(action="console", detail={"page": "signin"}), err)
            return signin_form(request, err.message, err.http_status)
        platform.audit_writer.submit(_signin_record(principal.name, principal.key_id, "signin"))
        response = RedirectResponse(_safe_next(form.get("next", "/console/")), 303)
        set_cookie(response, SESSION_COOKIE, console.sessions.seal(token), SESSION_SECONDS, request)
        clear_cookie(response, SIGNIN_COOKIE)
        return response

    async def signout(request: Request) -> Response:
        response = RedirectResponse("/console/signin", 303)
        clear_cookie(response, SESSION_COOKIE)
        return response

    def page(path: str, handler: object, name: str, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, console.page(handler, name), methods=list(methods))  # type: ignore[arg-type]

    return [
        Route("/console", lambda r: RedirectResponse("/console/", 308), methods=["GET"]),
        Mount(
            "/console",
            routes=[
                Route("/signin", signin_page, methods=["GET"]),
                Route("/signin", signin, methods=["POST"]),
                Route("/signout", signout, methods=["POST"]),
                Mount("/static", app=_Static(directory=STATIC), name="static"),
                page("/", catalog.catalog, "catalog"),
                page("/products/{product}", catalog.product, "catalog"),
                page("/lineage", catalog.lineage, "lineage"),
                page("/syncs", operate.syncs, "syncs"),
                page("/syncs/{sync}/run", operate.run_sync, "syncs", ("POST",)),
                page("/privacy", operate.privacy, "privacy"),
                page("/privacy/erase", operate.erase, "privacy", ("POST",)),
                page("/privacy/reports/{request_id}", operate.report, "privacy"),
                page("/privacy/access", operate.access_package, "privacy", ("POST",)),
                page("/audit", operate.audit, "audit"),
                page("/audit/verify", operate.verify, "audit", ("POST",)),
                page("/health", operate.health, "health"),
                page("/health/replay", operate.replay, "health", ("POST",)),
            ],
        ),
    ]


def _signin_record(principal: str, key_id: str, op: str) -> AuditRecord:
    return AuditRecord(action="console", principal=principal, detail={"page": op, "key_id": key_id})
