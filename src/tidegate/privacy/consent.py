"""The consent ledger and the current state derived from it.

The ledger is append-only: a choice is never updated, a later choice supersedes it.
The state of (subject, purpose) is the latest entry by the time the person made the
choice (`occurred_at`, ties broken by ledger order), so a late-arriving older event
cannot undo a newer one.

Time is checked where it comes in: a choice dated in the future beyond the clock-skew
allowance (`consent.clock_skew` in tidegate.yml, default 5 minutes) is refused, by the
ledger itself too, since a grant dated 2100 would beat every later revocation. A time
that is coarse (a TCF string's timestamps are rounded to the day by the IAB encoder) is
placed by `coarse_moment`: within its day, at the moment tidegate received it.

What a state means depends on the purpose's legal basis:

| basis                | allowed when                                         |
| -------------------- | ---------------------------------------------------- |
| consent              | latest entry is `grant` and it has not expired       |
| contract             | no `object`/`revoke` is the latest entry             |
| legitimate_interest  | no `object`/`revoke` is the latest entry             |
| legal_obligation     | always (the law requires it)                         |
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from tidegate.errors import BadRequestError
from tidegate.meta.base import ConsentRow, MetadataStore

if TYPE_CHECKING:
    from tidegate.platform import Platform

Action = Literal["grant", "revoke", "object"]
ACTIONS: tuple[str, ...] = ("grant", "revoke", "object")
#: how far ahead of our clock a choice may be dated (the sender's clock may run fast)
DEFAULT_CLOCK_SKEW = 300.0
DAY = 86400.0


def check_not_future(
    moment: float, now: float, clock_skew: float = DEFAULT_CLOCK_SKEW, field: str = "occurred_at"
) -> None:
    """Refuse a choice dated after now + clock_skew (BadRequestError naming the field)."""
    if moment > now + clock_skew:
        ahead = moment - now
        raise BadRequestError(
            f"{field} is in the future ({ahead:.0f} s ahead of the server clock, more than the "
            f"{clock_skew:g} s clock-skew allowance): a choice cannot be made before it happens",
            field=field,
            occurred_at=moment,
            now=now,
        )


def coarse_moment(stamp: float, received: float) -> float:
    """Where a day-rounded time goes on the timeline: the moment it was received, kept
    inside the stamp's UTC day (the end of that day when it arrived later, its start
    when the sender's clock ran ahead of ours), so same-day choices keep arrival order."""
    start = stamp - stamp % DAY
    return min(max(received, stamp), start + DAY - 0.001)


@dataclass(frozen=True)
class ConsentEvent:
    subject: str
    purpose: str
    action: Action
    occurred_at: float
    source: str = "api"
    evidence: str = ""
    expires_at: float | None = None


@dataclass(frozen=True)
class _Latest:
    occurred_at: float
    seq: int
    action: str
    expires_at: float | None


def is_allowed(legal_basis: str, latest: _Latest | None, now: float) -> bool:
    if legal_basis == "legal_obligation":
        return True
    if legal_basis == "consent":
        return (
            latest is not None
            and latest.action == "grant"
            and (latest.expires_at is None or latest.expires_at > now)
        )
    return latest is None or latest.action not in {"object", "revoke"}


class ConsentView:
    """Current consent state in memory, brought up to date from the ledger on each read.

    `refresh()` reads only entries newer than the last one seen (an indexed range scan),
    so every guard decision reflects the ledger as of that moment, without a full query.
    """

    def __init__(self, store: MetadataStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._last_seq = 0
        self._latest: dict[tuple[str, str], _Latest] = {}
        self._subjects_by_purpose: dict[str, set[str]] = {}

    def refresh(self) -> None:
        with self._lock:
            for row in self._store.consent_rows(self._last_seq):
                self._apply(row)
                self._last_seq = max(self._last_seq, row.seq)

    def _apply(self, row: ConsentRow) -> None:
        key = (row.subject, row.purpose)
        current = self._latest.get(key)
        candidate = _Latest(row.occurred_at, row.seq, row.action, row.expires_at)
        if current is None or (candidate.occurred_at, candidate.seq) >= (
            current.occurred_at,
            current.seq,
        ):
            self._latest[key] = candidate
        self._subjects_by_purpose.setdefault(row.purpose, set()).add(row.subject)

    def allowed(
        self, subject: str, purpose: str, legal_basis: str, now: float | None = None
    ) -> bool:
        moment = time.time() if now is None else now
        return is_allowed(legal_basis, self._latest.get((subject, purpose)), moment)

    def lacking(
        self, subjects: Iterable[str], purpose: str, legal_basis: str, now: float | None = None
    ) -> list[str]:
        """The `subjects` (in order) not `allowed` for the purpose at one moment: one call
        for a record's subjects, not one per subject (the access monitors)."""
        moment = time.time() if now is None else now
        latest = self._latest
        return [
            s for s in subjects if not is_allowed(legal_basis, latest.get((s, purpose)), moment)
        ]

    def row_filter(self, purpose: str, legal_basis: str, now: float | None = None) -> RowFilter:
        """The subjects a purpose may see, as an allow-list or a deny-list."""
        moment = time.time() if now is None else now
        with self._lock:
            touched = self._subjects_by_purpose.get(purpose, set())
            if legal_basis == "consent":
                allowed = frozenset(
                    s
                    for s in touched
                    if is_allowed(legal_basis, self._latest[(s, purpose)], moment)
                )
                return RowFilter(mode="allow", subjects=allowed)
            if legal_basis == "legal_obligation":
                return RowFilter(mode="deny", subjects=frozenset())
            denied = frozenset(
                s
                for s in touched
                if not is_allowed(legal_basis, self._latest[(s, purpose)], moment)
            )
            return RowFilter(mode="deny", subjects=denied)


@dataclass(frozen=True)
class RowFilter:
    """`allow`: only these subjects may leave; `deny`: everyone but these may leave."""

    mode: Literal["allow", "deny"]
    subjects: frozenset[str]

    def admits(self, subject: object) -> bool:
        if subject is None:
            # A row about nobody in particular has no consent to check... but a row whose
            # subject is unknown cannot be proven to have a legal basis either.
            return self.mode == "deny"
        inside = str(subject) in self.subjects
        return inside if self.mode == "allow" else not inside


class ConsentLedger:
    def __init__(self, store: MetadataStore, clock_skew: float = DEFAULT_CLOCK_SKEW) -> None:
        self._store = store
        self.clock_skew = clock_skew

    def record(self, events: Iterable[ConsentEvent]) -> list[int]:
        """Append the events in one transaction; all or none (a future one refuses all)."""
        now = time.time()
        rows = [
            ConsentRow(
                seq=0,
                subject=str(e.subject),
                purpose=e.purpose,
                action=e.action,
                occurred_at=e.occurred_at,
                source=e.source,
                evidence=e.evidence,
                expires_at=e.expires_at,
                recorded_at=now,
            )
            for e in events
        ]
        for row in rows:
            if row.action not in ACTIONS:
                raise ValueError(f"unknown consent action {row.action!r}")
            check_not_future(row.occurred_at, now, self.clock_skew)
        return self._store.append_consent(rows)

    def history(self, subject: str) -> list[ConsentRow]:
        return self._store.consent_history(str(subject))


def _ledger(platform: Platform) -> ConsentLedger:
    return ConsentLedger(platform.meta, platform.project.config.consent.clock_skew_seconds)


def _view(platform: Platform) -> ConsentView:
    return ConsentView(platform.meta)


def consent_ledger_of(platform: Platform) -> ConsentLedger:
    """The platform's consent ledger (one per platform object)."""
    return platform.component(_ledger)


def consent_view_of(platform: Platform) -> ConsentView:
    """The platform's cached view of current consent state (one per platform object)."""
    return platform.component(_view)
