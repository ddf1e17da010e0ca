"""Sending to a destination: rate limit, retries with backoff, and row-level refusals.

* Every request (a `write` or `delete` call) first takes a token from a rate limiter
  (the lower of the sync's `rate_limit` and the destination's), so no second holds more
  requests than the limit.
* A `TransientDestinationError` (timeout, 5xx, reset, 429) is retried up to the retry
  policy's `max_attempts`, waiting `backoff * multiplier**n` (capped, with jitter), or
  the destination's `Retry-After` when it gave one. Exhausted retries fail the run; the
  batch stays unsent and the next run sends it.
* Every retry is counted with its reason (`retry_reasons`), for the run's history.
* What the destination confirms of a write (`Written`: rows it held, rows an update did
  not find) travels in the `Outcome`, so counts are the destination's, not the diff's.
* A `RowErrors` names the refused rows; the rest landed. Any other terminal error of a
  batch is bisected until the failing rows stand alone, each with the destination's
  own message; the rows around them land.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tidegate.egress.destinations.base import Destination, RowErrors, Written
from tidegate.errors import TerminalDestinationError, TransientDestinationError
from tidegate.project.models import RetryPolicy, parse_duration

log = logging.getLogger(__name__)
T = TypeVar("T")


class RateLimiter:
    """At most `rate` requests in any one-second window, evenly spaced, slower after push-back.

    Even spacing alone lets request n+rate start a hair under a second after request n,
    which a strict server counts as one too many; so each start is also kept a second
    (plus a small margin for network jitter) after the start `rate` requests before it.
    A 429 widens the spacing (multiplicative decrease); each success narrows it back
    towards the configured rate, so a sync set above the server's limit settles near it
    instead of bursting into 429s and waiting out Retry-After again and again."""

    WINDOW = 1.0
    MARGIN = 0.02
    BACKOFF = 1.5
    RECOVERY = 0.995

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.base = 1.0 / rate if rate else 0.0
        self.interval = self.base
        self.capacity = max(1, int(rate)) if rate else 0
        self._clock = clock
        self._next = 0.0
        self._starts: deque[float] = deque(maxlen=self.capacity or 1)
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.base:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            if len(self._starts) == self.capacity:
                start = max(start, self._starts[0] + self.WINDOW + self.MARGIN)
            self._starts.append(start)
            self._next = start + self.interval
            wait = start - now
        if wait > 0:
            time.sleep(wait)

    def pushed_back(self) -> None:
        """The destination said "too many" (429): space requests further apart."""
        if self.base:
            with self._lock:
                self.interval = min(self.interval * self.BACKOFF, self.base * 16)

    def succeeded(self) -> None:
        if self.base and self.interval > self.base:
            with self._lock:
                self.interval = max(self.base, self.interval * self.RECOVERY)


@dataclass
class Outcome:
    """Row indexes of a batch that landed, and those refused with their messages.

    `existed` (rows the destination already held) and `missing` (rows an update did not
    find: not written, not in `landed`) are the destination's word when `confirmed`;
    otherwise the destination did not say and the engine counts from its own state."""

    landed: Sequence[int]  # a range when every row landed: no list of a million ints
    refused: dict[int, str]
    existed: set[int] = field(default_factory=set)
    missing: set[int] = field(default_factory=set)
    confirmed: bool = False

    def shifted(self, by: int) -> Outcome:
        return Outcome(
            [i + by for i in self.landed],
            {i + by: m for i, m in self.refused.items()},
            {i + by for i in self.existed},
            {i + by for i in self.missing},
            self.confirmed,
        )

    def merged(self, other: Outcome) -> Outcome:
        return Outcome(
            [*self.landed, *other.landed],
            {**self.refused, **other.refused},
            self.existed | other.existed,
            self.missing | other.missing,
            self.confirmed and other.confirmed,
        )


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
        self.retry_reasons: Counter[str] = Counter()
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
                result = action()
            except TransientDestinationError as err:
                if "retry_after" in err.details:  # the destination said "too many"
                    self.limiter.pushed_back()
                attempt += 1
                if attempt >= self.policy.max_attempts:
                    raise TransientDestinationError(
                        f"{err.message} (gave up after {attempt} attempts)"
                    ) from None
                wait = self.delay(attempt, err)
                self.retries += 1
                self.retry_reasons[err.message[:200]] += 1
                log.info("transient error, retry %s in %.2fs: %s", attempt, wait, err.message)
                self.sleep(wait)
            else:
                self.limiter.succeeded()
                return result

    def write(self, table: Any, mode: str) -> Outcome:
        """Write `table` (destination fields only); bisect terminal failures down to rows."""
        try:
            said = self.call(lambda: self.destination.write(table, mode))
        except RowErrors as err:
            refused = {i: m for i, m in err.rows.items() if 0 <= i < table.num_rows}
            landed = [i for i in range(table.num_rows) if i not in refused]
            return Outcome(landed, refused, confirmed=mode == "insert")
        except TerminalDestinationError as err:
            if table.num_rows == 1:
                return Outcome([], {0: err.message}, confirmed=True)
            half = table.num_rows // 2
            left = self.write(table.slice(0, half), mode)
            return left.merged(self.write(table.slice(half), mode).shifted(half))
        every = range(table.num_rows)
        if isinstance(said, Written):
            missing = said.missing
            kept = [i for i in every if i not in missing] if missing else every
            return Outcome(kept, {}, set(said.existed), set(missing), confirmed=True)
        # a destination that cannot say what it held: an insert adds every row it accepts
        return Outcome(every, {}, confirmed=mode == "insert")

    def delete(self, keys: list[Any]) -> int:
        return int(self.call(lambda: self.destination.delete(keys)))
