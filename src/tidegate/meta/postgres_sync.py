"""Sync state of the PostgreSQL metadata store (`sql_sync.py`, shared with SQLite): the
segments are bytea, reads that belong together borrow one pooled connection, and each
transaction that appends a sync's segments first takes that sync's advisory lock
(`sql_parts.POSTGRES.sync_lock`), so two processes checkpointing it never number two
segments alike.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tidegate.meta.sql_parts import POSTGRES
from tidegate.meta.sql_sync import SqlSyncMixin


class PostgresSyncMixin(SqlSyncMixin):
    _pool: Any
    _dialect = POSTGRES

    @contextmanager
    def _reading(self) -> Iterator[Any]:
        with self._pool.connection() as conn:
            yield conn
