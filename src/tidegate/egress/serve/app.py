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
The two hot routes (the entity read and the lookup) are also answered by `EntityReads`,
a raw ASGI callable in front of the Starlette app: it skips routing, `Request` and
`Response` objects (measured in-process on the demo over Redis: about a quarter of a
single-key read's CPU) and runs the very same guarded pipeline (`guarded_reply`) as
the Starlette endpoints, so status, headers, body and audit are identical on both
paths (tests/egress/test_serve_fast_path.py sends the same requests to both).
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
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route, compile_path

from tidegate.egress.serve.auth import bearer_token
from tidegate.egress.serve.http import (
    ASGIApp,
    Receive,
    Scope,
    Send,
    dumps,
    error_body,
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


#: what a guarded endpoint answers: status, JSON body, extra headers (Retry-After)
Reply = tuple[int, bytes, dict[str, str] | None]


def _token(request: Request) -> str | None:
    headers = request.headers
    return bearer_token(headers.get("authorization"), headers.get("x-api-key"))


def reply_response(reply: Reply) -> Response:
    """A Reply as Starlette's Response (what `json_response` builds)."""
    status, body, headers = reply
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_reply(err: TidegateError) -> Reply:
    """The JSON answer for a TidegateError (with Retry-After when rate-limited)."""
    headers = None
    if isinstance(err, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(err.retry_after)))}
    return err.http_status, dumps(err.to_error_detail()), headers


def tidegate_error(err: TidegateError) -> Response:
    """The JSON answer for a TidegateError (with Retry-After when rate-limited)."""
    return reply_response(error_reply(err))


_SECRETS = re.compile(
    r"tg_[0-9A-Za-z]+_[0-9A-Za-z_-]+|eyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]*\.[0-9A-Za-z_-]*"
)


def redact(text: str) -> str:
    """API keys and JWTs out of text bound for a log."""
    return _SECRETS.sub("<redacted credential>", text)


def crash_reply(path: str, err: Exception) -> Reply:
    """Log an unexpected error (credentials redacted); the caller gets a bare 500."""
    trace = "".join(traceback.format_exception(err))
    log.error("unexpected error serving %s:\n%s", path, redact(trace))
    return 500, dumps(error_body("internal", "internal error; see the server log")), None


async def crash(request: Request, err: Exception) -> Response:
    return reply_response(crash_reply(request.url.path, err))


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
    if {type(key) for key in keys} <= {str, int}:  # the usual body (no bool: its own type)
        texts = list(map(str, keys))
        if min(map(len, texts)) > 0 and max(map(len, texts)) <= MAX_KEY_LENGTH:
            return texts
    out = []  # some key is wrong: find the first, to name it
    for index, key in enumerate(keys):
        if isinstance(key, bool) or not isinstance(key, str | int):
            raise _Invalid(f"keys[{index}] must be a string or an integer", index=index)
        text = str(key)
        if not text or len(text) > MAX_KEY_LENGTH:
            raise _Invalid(f"keys[{index}] must have 1 to {MAX_KEY_LENGTH} characters", index=index)
        out.append(text)
    return out


Work = Callable[[], Awaitable[Any]]


async def guarded_reply(
    serving: Serving, call: Call, token: str | None, path: str, work: Work
) -> Reply:
    """One guarded call, whichever path received it: authenticate and take a rate-limit
    token (401/429 first; the loop is not blocked), then `work`; every refusal is audited
    (through the background writer), and an unexpected error is a logged, audited 500."""
    try:
        await serving.admit(call, token)
        return 200, dumps(await work()), None
    except TidegateError as err:
        serving.audit_denied(call, err)
        return error_reply(err)
    except Exception as err:  # never a traceback to the caller; still audited
        serving.audit_denied(call, TidegateError(f"internal error ({type(err).__name__})"))
        return crash_reply(path, err)


async def entity_work(serving: Serving, call: Call, token: str | None, key: str) -> Any:
    call.detail["key"] = key[:MAX_KEY_LENGTH]
    return await serving.aentity(call, token, key)


async def lookup_work(
    serving: Serving,
    call: Call,
    token: str | None,
    content_type: str | None,
    body: Callable[[], Awaitable[bytes]],
) -> Any:
    serving.principal(call, token)  # 401/429 before reading the body
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise _UnsupportedMedia("send the keys as application/json")
    keys = _lookup_keys(await body())
    return await serving.alookup(call, token, keys, authenticated=True)


ENTITY_PATH = "/v1/products/{product}/entities/{key:path}"
LOOKUP_PATH = "/v1/products/{product}/lookup"


def serve_routes(serving: Serving, spec: Callable[[], dict[str, Any]], project: str) -> list[Route]:
    Handler = Callable[[Request, Call], Awaitable[Any]]

    def guarded(action: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            call = Call(action=action, product=request.path_params.get("product"))
            call.purpose = request.headers.get("x-purpose")
            reply = await guarded_reply(
                serving, call, _token(request), request.url.path, lambda: handler(request, call)
            )
            return reply_response(reply)

        return endpoint

    async def entity(request: Request, call: Call) -> Any:
        return await entity_work(serving, call, _token(request), request.path_params["key"])

    async def lookup(request: Request, call: Call) -> Any:
        content_type = request.headers.get("content-type")
        return await lookup_work(serving, call, _token(request), content_type, request.body)

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
            ENTITY_PATH,
            guarded("serve", entity),
            methods=["GET"],
        ),
        Route(LOOKUP_PATH, guarded("serve", lookup), methods=["POST"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/health/live", health, methods=["GET"]),
        Route("/v1/health/ready", ready, methods=["GET"]),
        Route("/v1/products", guarded("catalog", products), methods=["GET"]),
        Route("/v1/products/{product}", guarded("catalog", product), methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]


class EntityReads:
    """The hot routes without Starlette: `GET` of `ENTITY_PATH` and `POST` of
    `LOOKUP_PATH`, matched with Starlette's own compiled patterns, answered through the
    same `guarded_reply`, `entity_work` and `lookup_work` as the Starlette endpoints and
    sent with the headers Starlette's `Response` would send (any `Retry-After`, then
    `content-length` and `content-type`). Every other request (other paths, methods,
    HEAD, websockets, lifespan) goes to `app` untouched.

    Why: a single-key read spent about a quarter of its CPU in Starlette's routing and
    its `Request`/`Response` objects, and serving is the path a feature store is judged by.
    """

    def __init__(self, app: ASGIApp, serving: Serving) -> None:
        self.app = app
        self.serving = serving
        self._entity = compile_path(ENTITY_PATH)[0]
        self._lookup = compile_path(LOOKUP_PATH)[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = scope["method"]
            if method == "GET" or method == "POST":
                path = route_path(scope)
                if path.startswith("/v1/products/"):
                    if method == "GET":
                        found = self._entity.match(path)
                        if found is not None:
                            await self._entity_read(scope, send, found["product"], found["key"])
                            return
                    else:
                        found = self._lookup.match(path)
                        if found is not None:
                            await self._lookup_read(scope, receive, send, found["product"])
                            return
        await self.app(scope, receive, send)

    @staticmethod
    def _headers(scope: Scope) -> tuple[str | None, str | None, str | None, str | None]:
        """(authorization, x-api-key, x-purpose, content-type): the first of each, as
        Starlette's `Headers.get` reads them."""
        authorization = api_key = purpose = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value.decode("latin-1")
            elif name == b"x-purpose":
                if purpose is None:
                    purpose = value.decode("latin-1")
            elif name == b"x-api-key":
                if api_key is None:
                    api_key = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        return authorization, api_key, purpose, content_type

    async def _entity_read(self, scope: Scope, send: Send, product: str, key: str) -> None:
        authorization, api_key, purpose, _ = self._headers(scope)
        token = bearer_token(authorization, api_key)
        call = Call(action="serve", product=product, purpose=purpose)
        serving = self.serving
        reply = await guarded_reply(
            serving,
            call,
            token,
            scope.get("root_path", "") + scope["path"],
            lambda: entity_work(serving, call, token, key),
        )
        await _send_reply(send, reply)

    async def _lookup_read(self, scope: Scope, receive: Receive, send: Send, product: str) -> None:
        authorization, api_key, purpose, content_type = self._headers(scope)
        token = bearer_token(authorization, api_key)
        call = Call(action="serve", product=product, purpose=purpose)
        serving = self.serving

        async def body() -> bytes:  # what Starlette's `Request.body()` does
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] == "http.request":
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        return b"".join(chunks)
                elif message["type"] == "http.disconnect":
                    raise ClientDisconnect()

        reply = await guarded_reply(
            serving,
            call,
            token,
            scope.get("root_path", "") + scope["path"],
            lambda: lookup_work(serving, call, token, content_type, body),
        )
        await _send_reply(send, reply)


_JSON = (b"content-type", b"application/json")


async def _send_reply(send: Send, reply: Reply) -> None:
    """A Reply as raw ASGI messages, headers in the order Starlette's Response sends them."""
    status, body, extra = reply
    headers = (
        [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
        if extra
        else []
    )
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    headers.append(_JSON)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_path(scope: Scope) -> str:
    """The request path below the app's mount point (`root_path`, set by a proxy or a
    mount), which is what Starlette's router matches routes against: `/api/v1/x` under
    root `/api` is `/v1/x`; a path outside the root is left as it is. Written here rather
    than imported, since Starlette keeps its own helper private."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path
