"""Per-principal rate limits: a token bucket each, sized from the principal's roles.

A role may set `rate_limit: {requests_per_second, burst}` in the policies. A principal
is limited only when every one of its roles sets a limit (a role without one is
unlimited); it then gets the most generous of them.

Where the buckets live:

* `RateLimiter` (the embedded default): in this process's memory. One `serve` process
  enforces the limit exactly; several replicas would each allow it in full.
* `RedisRateLimiter`, chosen when the project's online store is Redis (`limiter_for`):
  one bucket per principal in Redis, refilled and taken by one Lua script (atomic, on
  Redis's clock), so a role's N/s holds in total across every replica, at most one
  burst over. The serving API takes its token with `acheck` (redis.asyncio: the event
  loop keeps serving while Redis answers); `check` is the blocking twin for callers
  outside an event loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from tidegate.errors import ServiceUnavailableError, TidegateError
from tidegate.project.project import Policy, Project

MAX_BUCKETS = 100_000


class RateLimitedError(TidegateError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after_seconds=round(retry_after, 3))
        self.retry_after = retry_after


class RateLimiter:
    """In-memory buckets: the embedded default (one process)."""

    def __init__(self, policy: Policy | Callable[[], Policy]) -> None:
        # a callable gives the policy in force now (a live reload swaps it)
        self._source = policy if callable(policy) else (lambda: policy)
        self._policy = self._source()
        self._lock = threading.Lock()
        # principal -> (tokens, last refill, rate, capacity)
        self._buckets: dict[str, list[float]] = {}
        self._limits: dict[tuple[str, ...], tuple[float, float] | None] = {}

    def limit_for(self, roles: tuple[str, ...]) -> tuple[float, float] | None:
        """(requests per second, bucket capacity) or None when unlimited."""
        policy = self._source()
        if policy is not self._policy:  # reloaded: limits come from the new roles
            self._policy = policy
            self._limits = {}
        if roles in self._limits:
            return self._limits[roles]
        best: tuple[float, float] | None = None
        for role in roles:
            config = self._policy.roles.get(role)
            limit = config.rate_limit if config is not None else None
            if limit is None:
                if config is not None:  # a known role without a limit: unlimited
                    best = None
                    break
                continue
            capacity = float(limit.burst or max(1.0, math.ceil(limit.requests_per_second)))
            if best is None or limit.requests_per_second > best[0]:
                best = (limit.requests_per_second, capacity)
        self._limits[roles] = best
        return best

    def check(self, principal: str, roles: tuple[str, ...], now: float | None = None) -> None:
        """Take one token from the principal's bucket, or raise 429 with when to retry."""
        limit = self.limit_for(roles)
        if limit is None:
            return
        rate, capacity = limit
        moment = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.get(principal)
            if bucket is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._buckets.clear()
                bucket = self._buckets[principal] = [capacity, moment]
            tokens = min(capacity, bucket[0] + (moment - bucket[1]) * rate)
            bucket[1] = moment
            if tokens >= 1.0:
                bucket[0] = tokens - 1.0
                return
            bucket[0] = tokens
            wait = (1.0 - tokens) / rate
        raise RateLimitedError(
            f"rate limit of {rate:g} requests/s for {principal!r} exceeded; retry later", wait
        )

    async def acheck(self, principal: str, roles: tuple[str, ...]) -> None:
        """`check` for the event loop (no I/O here, so the same call)."""
        self.check(principal, roles)

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        """Release what `acheck` opened on the event loop (before the loop ends)."""
        return None


# KEYS[1]: the bucket; ARGV: rate (tokens/s), capacity. Returns {allowed, wait in µs}.
# Redis's own clock (TIME) is the one clock every replica shares.
_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local held = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(held[1])
local at = tonumber(held[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + (now - at) * rate / 1000000)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000000 / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, wait}
"""


class RedisRateLimiter(RateLimiter):
    """Buckets in Redis, shared by every replica of the serving API."""

    def __init__(self, policy: Policy | Callable[[], Policy], url: str, prefix: str) -> None:
        super().__init__(policy)
        import redis

        self._url = url
        self._prefix = f"{prefix}:ratelimit:"
        self._sync = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._sync.register_script(_TAKE)
        self._async: Any = None
        self._async_script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _verdict(self, principal: str, rate: float, result: Any) -> None:
        allowed, wait_us = int(result[0]), int(result[1])
        if allowed:
            return
        raise RateLimitedError(
            f"rate limit of {rate:g} requests/s for {principal!r} exceeded; retry later",
            wait_us / 1_000_000,
        )

    def check(self, principal: str, roles: tuple[str, ...], now: float | None = None) -> None:
        limit = self.limit_for(roles)
        if limit is None:
            return
        import redis

        rate, capacity = limit
        try:
            result = self._script(keys=[self._prefix + principal], args=[rate, capacity])
        except redis.exceptions.RedisError as err:
            raise ServiceUnavailableError(f"rate limits: Redis at {self._url}: {err}") from None
        self._verdict(principal, rate, result)

    async def acheck(self, principal: str, roles: tuple[str, ...]) -> None:
        limit = self.limit_for(roles)
        if limit is None:
            return
        import redis
        import redis.asyncio

        loop = asyncio.get_running_loop()
        if self._async is None or self._loop is not loop:  # a client belongs to its loop
            self._async = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=5, socket_connect_timeout=5
            )
            self._async_script = self._async.register_script(_TAKE)
            self._loop = loop
        rate, capacity = limit
        try:
            result = await self._async_script(
                keys=[self._prefix + principal], args=[rate, capacity]
            )
        except redis.exceptions.RedisError as err:
            raise ServiceUnavailableError(f"rate limits: Redis at {self._url}: {err}") from None
        self._verdict(principal, rate, result)

    async def aclose(self) -> None:
        if self._async is not None:
            client, self._async, self._loop = self._async, None, None
            await client.aclose()

    def close(self) -> None:
        self._sync.close()


def limiter_for(project: Project) -> RateLimiter:
    """Shared buckets when the project's online store is shared (Redis), else in memory."""
    online = project.config.backends.online
    url = getattr(online, "url", None)
    if online.type == "redis" and url:
        prefix = str(getattr(online, "prefix", "tg"))
        return RedisRateLimiter(lambda: project.policy, str(url), prefix)
    return RateLimiter(lambda: project.policy)
