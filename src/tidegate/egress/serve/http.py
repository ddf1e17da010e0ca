"""HTTP plumbing shared by every route: JSON encoding, error bodies, hardening middleware.

* JSON is encoded with orjson (dates and timestamps as ISO 8601 text).
* Every error is `{"error": {"code", "message", "details"?}}`; never a stack trace.
* `Hardening` (pure ASGI, so it costs a few microseconds): refuses a request line and
  headers over the limit with 431 and bodies over the limit with 413 (by
  `Content-Length`, or while reading a chunked body), and adds the security headers to
  every response that does not set its own: `nosniff`, no referrer, a CSP that allows
  nothing (JSON needs nothing), no framing, and `Cache-Control: no-store` (answers hold
  personal data; no cache may keep them).
* `GuestLimit`: callers that keep failing to authenticate get 429 per client address.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from starlette.responses import Response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: request line (path and query) plus headers; the serve config may change it
MAX_HEADER_BYTES = 16 * 1024
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
    """Header and body size limits and security headers around the whole API."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        exempt: tuple[str, ...] = (),
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        #: path prefixes that enforce their own (larger) limit, e.g. event ingestion
        self.exempt = exempt
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # the server may accept heads of any size (httptools does): refuse big ones here,
        # before any route, audit record or metric sees a header value
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(name) + len(value) for name, value in scope["headers"])
        if head > self.max_header_bytes:
            await _send_error(
                send,
                431,
                "request_header_fields_too_large",
                f"request line and headers over {self.max_header_bytes:,} bytes",
            )
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


class GuestLimit:
    """Callers that fail to authenticate are rate limited per client address.

    Each answer 401 takes a token from the address's bucket (`rate` per second, up to
    `burst`); while the bucket is empty, every request from that address is answered 429
    at once, before authentication, audit or any store sees it, so an unauthenticated
    flood writes no audit records and makes no key lookups. In memory, per process (the
    embedded default); behind a proxy every caller shares the proxy's address, so size
    the limit for that or put the limit in the proxy.
    """

    MAX_ADDRESSES = 100_000

    def __init__(self, app: ASGIApp, rate: float, burst: int) -> None:
        self.app = app
        self.rate = rate
        self.burst = float(max(1, burst))
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (self.burst, now))
        return min(self.burst, tokens + (now - at) * self.rate)

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds until the address may call again (None: it may call now)."""
        with self._lock:
            tokens = self._tokens(address, now)
        return None if tokens >= 1 else (1 - tokens) / self.rate

    def charge(self, address: str, now: float) -> None:
        with self._lock:
            tokens = self._tokens(address, now)
            if len(self._buckets) >= self.MAX_ADDRESSES and address not in self._buckets:
                self._buckets.clear()  # bounded memory; a reset only forgives
            self._buckets[address] = (max(0.0, tokens - 1), now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        wait = self.retry_after(address, time.monotonic())
        if wait is not None:
            body = dumps(
                error_body(
                    "rate_limited",
                    "too many requests without valid credentials from this address",
                )
            )
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(max(1, math.ceil(wait))).encode()),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.charge(address, time.monotonic())
            await send(message)

        await self.app(scope, receive, watch)
