"""Per-principal rate limits: a token bucket each, sized from the principal's roles.

A role may set `rate_limit: {requests_per_second, burst}` in the policies. A principal
is limited only when every one of its roles sets a limit (a role without one is
unlimited); it then gets the most generous of them. Buckets live in this process's
memory (with several workers, each worker has its own share).
"""

from __future__ import annotations

import math
import threading
import time

from tidegate.errors import TidegateError
from tidegate.project.project import Policy

MAX_BUCKETS = 100_000


class RateLimitedError(TidegateError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, retry_after_seconds=round(retry_after, 3))
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        # principal -> (tokens, last refill, rate, capacity)
        self._buckets: dict[str, list[float]] = {}
        self._limits: dict[tuple[str, ...], tuple[float, float] | None] = {}

    def limit_for(self, roles: tuple[str, ...]) -> tuple[float, float] | None:
        """(requests per second, bucket capacity) or None when unlimited."""
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
