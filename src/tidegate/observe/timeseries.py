"""Observations as time series: a part of the metadata store (`meta.observations`).

Kept in the metadata store (like the freshness ledger), not DuckDB, so `tidegate
observe` can read them while a worker holds the warehouse; on SQLite or PostgreSQL
(`meta/parts.py` has the interface, `meta/sql_parts.py` the statements of both):

* points     (product, version, at, kind, status, metric, col, value): every pillar
             metric; `col` is '' for product-level metrics
* schemas    (product, version, at, fingerprint, columns): the schema pillar
* quality    one row per check run
* alerts     the last time each alert key was sent (deduplication)
"""

from __future__ import annotations

from tidegate.meta.parts import ObservationStore as ObserveStore
from tidegate.meta.parts import Point, SchemaSnapshot

__all__ = ["ObserveStore", "Point", "SchemaSnapshot"]
