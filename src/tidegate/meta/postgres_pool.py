"""A few PostgreSQL connections shared by the threads of one process.

The serving API runs handlers on a thread pool; each metadata call borrows a
connection for its one transaction and gives it back. A connection that failed
(server restarted, network cut) is dropped, not returned, so the next call opens a
fresh one; one that sat idle for a while is checked (`SELECT 1`) before it is lent, so
a restart while the process was quiet costs no failed call. psycopg is imported here,
lazily: it is the `[postgres]` extra.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tidegate.errors import ServiceUnavailableError, TidegateError

CHECK_AFTER = 30.0  # seconds idle after which a connection is checked before use


def import_psycopg() -> Any:
    """psycopg, or the MissingExtraError every backend gives (names `[postgres]`)."""
    from tidegate.extras import require

    return require("postgres", "psycopg")


class Pool:
    def __init__(self, dsn: str, size: int, schema: str) -> None:
        self._psycopg = import_psycopg()
        self._dsn = dsn
        self._schema = schema
        self._idle: list[tuple[Any, float]] = []  # (connection, when it was given back)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)
        self._closed = False

    def _connect(self) -> Any:
        psycopg = self._psycopg
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
            statement = psycopg.sql.SQL("SET search_path TO {}")
            conn.execute(statement.format(psycopg.sql.Identifier(self._schema)))
        except psycopg.OperationalError as err:
            # the message names host and port, never the password
            raise ServiceUnavailableError(f"cannot reach PostgreSQL metadata: {err}") from None
        return conn

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection in autocommit mode (use `conn.transaction()` for a transaction)."""
        if self._closed:
            raise TidegateError("the metadata store is closed")
        psycopg = self._psycopg
        self._slots.acquire()
        conn = None
        try:
            with self._lock:
                conn, since = self._idle.pop() if self._idle else (None, 0.0)
            if conn is not None and time.monotonic() - since > CHECK_AFTER:
                conn = self._checked(conn)
            if conn is None or conn.closed:
                conn = self._connect()
            try:
                yield conn
            except psycopg.OperationalError as err:
                conn.close()
                raise ServiceUnavailableError(f"PostgreSQL metadata: {err}") from None
        finally:
            if conn is not None and not conn.closed:
                idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                if idle and not self._closed:
                    with self._lock:
                        self._idle.append((conn, time.monotonic()))
                else:
                    conn.close()
            self._slots.release()

    def close(self) -> None:
        self._closed = True
        with self._lock:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def _checked(self, conn: Any) -> Any:
        """`conn` if it still answers, else None (closed)."""
        try:
            conn.execute("SELECT 1")
        except self._psycopg.Error:
            conn.close()
            return None
        return conn
