"""What the serving process keeps in memory, and how it knows when to look again.

* `ChangeWatch`: did consent, API keys or tombstones change since we last looked?
  The metadata store's `change_token()` moves in the same transaction as any such
  write, whoever made it: the ledger's append in this process (through
  `Platform.meta`), a `tidegate consent` CLI call, the consent API in another replica.
  Audit appends do not move it.
* `PlanCache`: access plans per (roles, purpose, product). When the watch moves, one
  indexed query (`consent_ledger WHERE seq > last`) says whether consent changed; if
  it did, every plan is dropped and the guard rebuilds them from the refreshed
  in-memory `ConsentView`. So a revocation is in the very next read, and a request
  costs no query while consent is quiet. Plans also age out after `max_age` seconds,
  which bounds how late a consent grant's own expiry time is noticed. A live policy
  reload (`privacy/policy_reload.py`) swaps `project.policy`: the cache sees a new
  object and drops every plan, so the next request is decided by the new policy.
  A plan rebuilt only for its age, the watch unmoved since the consent view last caught
  up, is decided on the view as it is: asking the ledger then could only wait (behind
  an audit batch holding the metadata store) for an answer known to be empty.
* `VersionTimes`: when each product version was built (immutable once published).
"""

from __future__ import annotations

import threading
import time

from tidegate.meta.base import MetadataStore
from tidegate.privacy.guard import AccessContext, AccessPlan, Guard
from tidegate.timestamps import format_timestamp

PLAN_MAX_AGE = 1.0


class ChangeWatch:
    """A generation number that moves whenever consent, API keys or tombstones changed.

    It asks the metadata store's `change_token()` (bumped in the same transaction as
    those writes, by any process; never by audit appends, so a busy audit log does not
    flush the caches). On SQLite that is a microsecond when nothing was committed; on
    PostgreSQL one indexed single-row read per request.
    """

    def __init__(self, meta: MetadataStore) -> None:
        self._meta = meta
        self._lock = threading.Lock()
        self._seen: int | None = None
        self._generation = 0

    def generation(self) -> int:
        token = self._meta.change_token()
        with self._lock:
            if token != self._seen:
                self._seen = token
                self._generation += 1
            return self._generation

    def close(self) -> None:
        """Nothing to release: the store belongs to the platform."""


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
        #: the watch's generation when a plan build last brought the consent view up to
        #: date (consent written later moves the watch, so this tells when it is current)
        self._current_at: int | None = None
        self._policy = guard.project.policy  # a reloaded policy drops every plan
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
            if generation is None:
                generation = self._watch.generation()
            self._sync(generation)
            if self._guard.project.policy is not self._policy:
                self._policy = self._guard.project.policy
                self._plans.clear()
            cached = self._plans.get(key)
            if cached is not None and now - cached[1] < self._max_age:
                return cached[0]
            refresh = generation != self._current_at
            plan = self._guard.plan(context, product, refresh=refresh)
            if refresh:
                self._current_at = generation
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
                when = str(format_timestamp(row.built_at))
                self._built[(product, row.version)] = when
            found = self._built.get((product, version))
        return found
