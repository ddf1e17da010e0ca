"""What the serving process keeps in memory, and how it knows when to look again.

* `ChangeWatch`: has anything committed to the metadata database since we last
  looked? `PRAGMA data_version` on a private connection answers in about a microsecond
  without reading a table, and it moves on any commit by any other connection: the
  ledger's append in this process (through `Platform.meta`), a `tidegate consent` CLI
  call, the consent API in another worker. No commit, no query.
* `PlanCache`: access plans per (roles, purpose, product). When the watch moves, one
  indexed query (`consent_ledger WHERE seq > last`) says whether consent changed; if
  it did, every plan is dropped and the guard rebuilds them from the refreshed
  in-memory `ConsentView`. So a revocation is in the very next read, and a request
  costs no query while consent is quiet. Plans also age out after `max_age` seconds,
  which bounds how late a consent grant's own expiry time is noticed.
* `VersionTimes`: when each product version was built (immutable once published).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path

from tidegate.meta.base import MetadataStore
from tidegate.privacy.guard import AccessContext, AccessPlan, Guard

PLAN_MAX_AGE = 1.0


class ChangeWatch:
    """A generation number that moves whenever the metadata database was committed to."""

    def __init__(self, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._db = (
            sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            if path is not None
            else None
        )
        self._seen: int | None = None
        self._generation = 0

    def generation(self) -> int:
        if self._db is None:  # no cheap signal: every call counts as a change
            self._generation += 1
            return self._generation
        with self._lock:
            version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
            if version != self._seen:
                self._seen = version
                self._generation += 1
            return self._generation

    def close(self) -> None:
        if self._db is not None:
            with self._lock:
                self._db.close()


class PlanCache:
    def __init__(
        self, guard: Guard, meta: MetadataStore, watch: ChangeWatch, max_age: float = PLAN_MAX_AGE
    ) -> None:
        self._guard = guard
        self._meta = meta
        self._watch = watch
        self._max_age = max_age
        self._lock = threading.Lock()
        self._generation = -1
        self._consent_seq = 0
        self._plans: dict[tuple[tuple[str, ...], str, str], tuple[AccessPlan, float]] = {}
        self.builds = 0  # plans built (for tests and the benchmark's breakdown)

    def _sync(self, generation: int) -> None:
        if generation == self._generation:
            return
        self._generation = generation
        newer = list(self._meta.consent_rows(self._consent_seq))
        if newer:
            self._consent_seq = max(row.seq for row in newer)
            self._plans.clear()

    def plan(
        self, context: AccessContext, product: str, generation: int | None = None
    ) -> AccessPlan:
        """The guard's plan (its errors included), rebuilt only when consent moved.

        `generation`: the watch's value the caller already took for this request.
        """
        purpose = context.purpose or ""
        key = (context.roles, purpose, product)
        now = time.monotonic()
        with self._lock:
            self._sync(self._watch.generation() if generation is None else generation)
            cached = self._plans.get(key)
            if cached is not None and now - cached[1] < self._max_age:
                return cached[0]
            plan = self._guard.plan(context, product)
            self.builds += 1
            if len(self._plans) > 10_000:  # bounded: roles x purposes x products
                self._plans.clear()
            self._plans[key] = (plan, now)
            return plan


class VersionTimes:
    def __init__(self, meta: MetadataStore) -> None:
        self._meta = meta
        self._built: dict[tuple[str, int], str] = {}

    def built_at(self, product: str, version: int) -> str | None:
        """ISO 8601 time the version was built (None while it is not recorded yet)."""
        found = self._built.get((product, version))
        if found is None:
            for row in self._meta.versions(product):
                when = dt.datetime.fromtimestamp(row.built_at, dt.UTC).isoformat()
                self._built[(product, row.version)] = when
            found = self._built.get((product, version))
        return found
