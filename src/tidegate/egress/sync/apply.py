"""Sending to a destination: rate limit, retries with backoff, and row-level refusals.

* Every request (a `write` or `delete` call) first takes a token from a rate limiter
  (the lower of the sync's `rate_limit` and the destination's), so no second holds more
  requests than the limit.
* A `TransientDestinationError` (timeout, 5xx, reset, 429) is retried up to the retry
  policy's `max_attempts`, waiting `backoff * multiplier**n` (capped, with jitter), or
  the destination's `Retry-After` when it gave one. Exhausted retries fail the run; the
  batch stays unsent and the next run sends it.
* A `RowErrors` names the refused rows; the rest landed. Any other terminal error of a
  batch is bisected until the failing rows stand alone, each with the destination's
  own message; the rows around them land.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from tidegate.egress.destinations.base import Destination, RowErrors
from tidegate.errors import TerminalDestinationError, TransientDestinationError
from tidegate.project.models import RetryPolicy, parse_duration

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimiter:
    """At most `rate` acquisitions per second, evenly spaced (a bucket of one token)."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self._clock()
            wait = self._next - now
            self._next = max(now, self._next) + self.interval
        if wait > 0:
            time.sleep(wait)


@dataclass
class Outcome:
    """Row indexes of a batch that landed, and those refused with their messages."""

    landed: list[int]
    refused: dict[int, str]


class Sender:
    def __init__(
        self,
        destination: Destination,
        policy: RetryPolicy,
        rate_limit: float | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.destination = destination
        self.policy = policy
        self.backoff = parse_duration(policy.backoff).total_seconds()
        self.max_backoff = parse_duration(policy.max_backoff).total_seconds()
        self.limiter = RateLimiter(rate_limit)
        self.sleep = sleep
        self.retries = 0
        self.requests = 0

    def delay(self, attempt: int, err: TransientDestinationError) -> float:
        """Seconds before retry number `attempt` (1-based)."""
        retry_after = err.details.get("retry_after")
        if isinstance(retry_after, int | float) and retry_after >= 0:
            return float(retry_after)
        base = min(self.max_backoff, self.backoff * self.policy.multiplier ** (attempt - 1))
        return base / 2 + random.uniform(0, base / 2)  # "equal jitter"

    def call(self, action: Callable[[], T]) -> T:
        attempt = 0
        while True:
            self.limiter.acquire()
            self.requests += 1
            try:
                return action()
            except TransientDestinationError as err:
                attempt += 1
                if attempt >= self.policy.max_attempts:
                    raise TransientDestinationError(
                        f"{err.message} (gave up after {attempt} attempts)"
                    ) from None
                wait = self.delay(attempt, err)
                self.retries += 1
                log.info("transient error, retry %s in %.2fs: %s", attempt, wait, err.message)
                self.sleep(wait)

    def write(self, table: Any, mode: str) -> Outcome:
        """Write `table` (destination fields only); bisect terminal failures down to rows."""
        try:
            self.call(lambda: self.destination.write(table, mode))
        except RowErrors as err:
            refused = {i: m for i, m in err.rows.items() if 0 <= i < table.num_rows}
            return Outcome([i for i in range(table.num_rows) if i not in refused], refused)
        except TerminalDestinationError as err:
            if table.num_rows == 1:
                return Outcome([], {0: err.message})
            half = table.num_rows // 2
            left = self.write(table.slice(0, half), mode)
            right = self.write(table.slice(half), mode)
            return Outcome(
                left.landed + [i + half for i in right.landed],
                {**left.refused, **{i + half: m for i, m in right.refused.items()}},
            )
        return Outcome(list(range(table.num_rows)), {})

    def delete(self, keys: list[Any]) -> int:
        return int(self.call(lambda: self.destination.delete(keys)))
