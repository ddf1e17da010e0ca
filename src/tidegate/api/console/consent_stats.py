"""What the privacy officer's page shows about consent as a whole: choices per purpose
over time, and how long revocations took to leave the sync destinations.

Both are computed from what is already durable, so they hold across restarts and
replicas: the consent ledger (`MetadataStore.consent_rows`) for the counts, and the
audit trail for the propagation times. A revocation's propagation time is the time from
the ledger recording the revocation to the chained `sync_removal` record that removed
that person from a destination (the moment the destination confirmed it). Only counts
and durations leave this module: no subject id reaches the page.
"""

from __future__ import annotations

import bisect
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tidegate.audit.log import AuditLog
from tidegate.meta.base import ConsentRow

DAY = 86_400.0
#: the page looks this far back; older choices still count in the ledger, not on the chart
WINDOW_DAYS = 30
#: the newest removals the propagation times are computed from
RECENT_REMOVALS = 200


@dataclass
class PurposeSeries:
    """Per purpose: grants and revocations per day (day start, count), oldest first."""

    purpose: str
    grants: list[tuple[float, float]] = field(default_factory=list)
    revocations: list[tuple[float, float]] = field(default_factory=list)
    total_grants: int = 0
    total_revocations: int = 0


def choices_per_day(
    rows: Iterable[ConsentRow], now: float | None = None, days: int = WINDOW_DAYS
) -> dict[str, PurposeSeries]:
    """Grants and revocations per purpose and UTC day over the last `days` days (by
    when the person chose); a day without a choice counts 0 so the lines are honest."""
    now = time.time() if now is None else now
    today = now - now % DAY
    first = today - (days - 1) * DAY
    counts: dict[str, dict[str, dict[float, int]]] = defaultdict(
        lambda: {"grant": defaultdict(int), "revoke": defaultdict(int)}
    )
    for row in rows:
        if row.occurred_at < first or row.action not in ("grant", "revoke"):
            continue
        day = row.occurred_at - row.occurred_at % DAY
        counts[row.purpose][row.action][min(day, today)] += 1
    series: dict[str, PurposeSeries] = {}
    grid = [first + i * DAY for i in range(days)]
    for purpose, by_action in sorted(counts.items()):
        grants, revokes = by_action["grant"], by_action["revoke"]
        series[purpose] = PurposeSeries(
            purpose,
            [(d, float(grants.get(d, 0))) for d in grid],
            [(d, float(revokes.get(d, 0))) for d in grid],
            sum(grants.values()),
            sum(revokes.values()),
        )
    return series


@dataclass(frozen=True)
class PropagationTimes:
    """Seconds from a revocation being recorded to its removal from a destination."""

    count: int
    median: float | None
    p95: float | None
    longest: float | None
    failed: int


def propagation_times(
    audit: AuditLog,
    history: Sequence[ConsentRow] = (),
    limit: int = RECENT_REMOVALS,
) -> PropagationTimes:
    """Times of the newest `limit` removals caused by a lost legal basis.

    `history` is the whole ledger (every row), searched per subject and purpose for the
    revocation that preceded each removal; callers pass `consent_rows()` once."""
    removals = [
        record
        for _, record in audit.records(0)
        if record.action == "sync_removal" and record.purpose
    ][-limit:]
    revoked: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in history:
        if row.action == "revoke":
            revoked[(row.subject, row.purpose)].append(row.recorded_at)
    for times in revoked.values():
        times.sort()
    seconds: list[float] = []
    failed = 0
    for record in removals:
        if record.outcome == "failed":
            failed += 1
            continue
        for subject in record.subjects:
            times = revoked.get((subject, record.purpose or ""), [])
            at = bisect.bisect_right(times, record.at)
            if at:  # the last revocation recorded before the removal
                seconds.append(max(0.0, record.at - times[at - 1]))
    if not seconds:
        return PropagationTimes(0, None, None, None, failed)
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return PropagationTimes(len(ordered), statistics.median(ordered), p95, ordered[-1], failed)
