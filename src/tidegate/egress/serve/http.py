"""HTTP plumbing shared by every route: JSON encoding, error bodies, hardening middleware.

* JSON is encoded with orjson (dates and timestamps as ISO 8601 text).
* Every error is `{"error": {"code", "message", "details"?}}`; never a stack trace.
* `Hardening` (pure ASGI, so it costs a few microseconds): refuses bodies over the
  limit with 413 (by `Content-Length`, or while reading a chunked body) and adds the
  security headers to every response that does not set its own: `nosniff`, no
  referrer, a CSP that allows nothing (JSON needs nothing), no framing, and
  `Cache-Control: no-store` (answers hold personal data; no cache may keep them).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_CSP = "default-src 'none'; frame-ancestors 'none'"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", JSON_CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)


def _default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_default, option=orjson.OPT_NON_STR_KEYS)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, headers=headers, media_type="application/json")


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> Response:
    return json_response(error_body(code, message, details), status, headers)


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    body = dumps(error_body(code, message))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Hardening:
    """Body size limit and security headers around the whole API."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        #: path prefixes that enforce their own (larger) limit, e.g. event ingestion
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", ())}
                extra = [h for h in SECURITY_HEADERS if h[0] not in present]
                if extra:
                    message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        if scope["path"].startswith(self.exempt) if self.exempt else False:
            await self.app(scope, receive, send_with_headers)
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            if not length.isdigit():
                await _send_error(send, 400, "bad_request", "invalid Content-Length")
                return
            if int(length) > self.max_body_bytes:
                await _send_error(
                    send,
                    413,
                    "payload_too_large",
                    f"request body over {self.max_body_bytes:,} bytes",
                )
                return
            await self.app(scope, receive, send_with_headers)
            return
        if not chunked:
            await self.app(scope, receive, send_with_headers)
            return
        # a chunked body: read it here, bounded, then hand it on
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _send_error(
                    send,
                    413,
                    "payload_too_large",
                    f"request body over {self.max_body_bytes:,} bytes",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send_with_headers)
