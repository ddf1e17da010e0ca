"""How fresh each product has been: last update, lag against its SLO, breaches.

The ledger is a part of the metadata store (`meta.freshness`, see `meta/parts.py`),
not of DuckDB, so `tidegate status` can read it while a worker holds the warehouse, on
SQLite or PostgreSQL alike. The lag of an update is the time from the oldest event it
covers entering the log to its rows being visible in the online store; an update
slower than the product's freshness is a breach. A batch product with unapplied
upstream changes is `stale since` the first of them.
"""

from __future__ import annotations

from tidegate.meta.parts import Freshness
from tidegate.meta.parts import FreshnessStore as FreshnessLedger

__all__ = ["Freshness", "FreshnessLedger"]
