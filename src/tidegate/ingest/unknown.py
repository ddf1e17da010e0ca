"""Counts of the fields events carry beyond their source's declared columns.

Under `unknown_fields: drop` or `keep` such events are accepted; so that this is never a
silent drop, each one is counted per source and field: in the ingest answer (per
request), and in the metadata store's observation series (`kind = "ingest"`, metric
`ingest.unknown_fields`, column = the field; `""` counts the events), which `/metrics`
(`tidegate_ingest_unknown_fields`) and `tidegate status` read, whichever process took
the events. Under `reject` the events are dead letters with the fields in their reason.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable

from tidegate.meta.parts import ObservationStore

METRIC = "ingest.unknown_fields"
KIND = "ingest"
EVENTS = ""  # the column of the series counting events (fields are the other columns)


class UnknownFieldCounter:
    """Counts per source, written to the observation store in one insert per flush."""

    def __init__(self, observations: ObservationStore | None) -> None:
        self._store = observations
        self._lock = threading.Lock()
        self._pending: dict[str, Counter[str]] = {}

    def count(self, source: str, fields: Iterable[str]) -> None:
        with self._lock:
            counts = self._pending.setdefault(source, Counter())
            counts[EVENTS] += 1
            counts.update(fields)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if self._store is None:
            return
        now = time.time()
        for source, counts in pending.items():
            self._store.add_points(
                source,
                None,
                now,
                KIND,
                "live",
                [(METRIC, field, float(n)) for field, n in sorted(counts.items())],
            )


def unknown_field_totals(
    observations: ObservationStore, sources: Iterable[str]
) -> dict[str, dict[str, int]]:
    """source -> {field: events carrying it, "": events with any unknown field}."""
    totals: dict[str, dict[str, int]] = {}
    for source in sources:
        for metric, field in observations.series_names(source):
            if metric != METRIC:
                continue
            points = observations.series(source, METRIC, field, kind=KIND)
            total = int(sum(p.value for p in points))
            if total:
                totals.setdefault(source, {})[field] = total
    return totals
