"""The serving API.

`GET /v1/products/{product}/entities/{key}` and `POST /v1/products/{product}/lookup`
with the purpose in `X-Purpose` and credentials in `Authorization: Bearer …` answer
entities as that purpose may see them; `GET /v1/products` and
`GET /v1/products/{product}` describe what the caller may read. A subject without a
legal basis for the purpose gets the same answer as a key that does not exist. Every
call, allowed or denied, is audited (through the background writer, off the
response path).

The serving routes are plain Starlette, not FastAPI: measured on this machine, FastAPI's
request handling costs about twice Starlette's per call (README, "Why this ASGI stack").
The one HTTP app is assembled in `tidegate.api` from these routes and the other stages';
its `/docs` page (a packaged Swagger UI) lives there too.
"""

from __future__ import annotations

import logging
import math
import re
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidegate.egress.serve.auth import bearer_token
from tidegate.egress.serve.http import (
    error_response,
    json_response,
)
from tidegate.egress.serve.ratelimit import RateLimitedError
from tidegate.egress.serve.service import MAX_KEY_LENGTH, MAX_LOOKUP_KEYS, Call, Serving
from tidegate.errors import TidegateError

log = logging.getLogger(__name__)


class _Invalid(TidegateError):
    code = "invalid_request"
    http_status = 422


class _UnsupportedMedia(TidegateError):
    code = "unsupported_media_type"
    http_status = 415


def _token(request: Request) -> str | None:
    headers = request.headers
    return bearer_token(headers.get("authorization"), headers.get("x-api-key"))


def tidegate_error(err: TidegateError) -> Response:
    """The JSON answer for a TidegateError (with Retry-After when rate-limited)."""
    headers = None
    if isinstance(err, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(err.retry_after)))}
    return json_response(err.to_error_detail(), err.http_status, headers)


_SECRETS = re.compile(
    r"tg_[0-9A-Za-z]+_[0-9A-Za-z_-]+|eyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]*\.[0-9A-Za-z_-]*"
)


def redact(text: str) -> str:
    """API keys and JWTs out of text bound for a log."""
    return _SECRETS.sub("<redacted credential>", text)


async def crash(request: Request, err: Exception) -> Response:
    trace = "".join(traceback.format_exception(err))
    log.error("unexpected error serving %s:\n%s", request.url.path, redact(trace))
    return error_response(500, "internal", "internal error; see the server log")


async def http_error(request: Request, err: Exception) -> Response:
    status = err.status_code if isinstance(err, HTTPException) else 500
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    detail = err.detail if isinstance(err, HTTPException) else "error"
    headers = dict(err.headers or {}) if isinstance(err, HTTPException) else None
    return error_response(status, code, str(detail), headers=headers)


def _lookup_keys(body: bytes) -> list[str]:
    """The keys of a lookup body, strictly: `{"keys": [str | int, ...]}`, 1..1,000 of them."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise _Invalid(f"the body is not valid JSON: {err}") from None
    if not isinstance(data, dict) or set(data) != {"keys"}:
        raise _Invalid('send {"keys": [...]} and nothing else')
    keys = data["keys"]
    if not isinstance(keys, list) or not keys:
        raise _Invalid("keys must be a non-empty array")
    if len(keys) > MAX_LOOKUP_KEYS:
        raise _Invalid(
            f"at most {MAX_LOOKUP_KEYS:,} keys per lookup, not {len(keys):,}",
            max_keys=MAX_LOOKUP_KEYS,
        )
    out = []
    for index, key in enumerate(keys):
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise _Invalid(f"keys[{index}] must be a string or an integer", index=index)
        text = str(key)
        if not text or len(text) > MAX_KEY_LENGTH:
            raise _Invalid(f"keys[{index}] must have 1 to {MAX_KEY_LENGTH} characters", index=index)
        out.append(text)
    return out


def serve_routes(serving: Serving, spec: Callable[[], dict[str, Any]], project: str) -> list[Route]:
    Handler = Callable[[Request, Call], Awaitable[Any]]

    def guarded(action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            call = Call(action=action, product=request.path_params.get("product"))
            call.purpose = request.headers.get("x-purpose")
            try:
                await serving.admit(call, _token(request))  # 401/429 first, loop not blocked
                return json_response(await handler(request, call))
            except TidegateError as err:
                serving.audit_denied(call, err)
                return tidegate_error(err)
            except Exception as err:  # never a traceback to the caller; still audited
                serving.audit_denied(call, TidegateError(f"internal error ({type(err).__name__})"))
                return await crash(request, err)

        return endpoint

    async def entity(request: Request, call: Call) -> Any:
        key = request.path_params["key"]
        call.detail["key"] = key[:MAX_KEY_LENGTH]
        return await serving.aentity(call, _token(request), key)

    async def lookup(request: Request, call: Call) -> Any:
        token = _token(request)
        serving.principal(call, token)  # 401/429 before reading the body
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _UnsupportedMedia("send the keys as application/json")
        keys = _lookup_keys(await request.body())
        return await serving.alookup(call, token, keys, authenticated=True)

    async def products(request: Request, call: Call) -> Any:
        return serving.list_products(call, _token(request))

    async def product(request: Request, call: Call) -> Any:
        return serving.describe(call, _token(request))

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "project": project})

    async def ready(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from tidegate.observe.health import readiness

        results = await run_in_threadpool(readiness, serving.platform)
        down = [c.name for c in results if not c.ok]
        body = {
            "status": "unavailable" if down else "ready",
            "project": project,
            "down": down,
            "checks": [c.as_json() for c in results],
        }
        return json_response(body, status=503 if down else 200)

    async def openapi_json(request: Request) -> Response:
        return json_response(spec())

    # the entity read first: routes are tried in order, and it is the hot path
    return [
        Route(
            "/v1/products/{product}/entities/{key:path}",
            guarded("serve", entity),
            methods=["GET"],
        ),
        Route("/v1/products/{product}/lookup", guarded("serve", lookup), methods=["POST"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/health/live", health, methods=["GET"]),
        Route("/v1/health/ready", ready, methods=["GET"]),
        Route("/v1/products", guarded("catalog", products), methods=["GET"]),
        Route("/v1/products/{product}", guarded("catalog", product), methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
