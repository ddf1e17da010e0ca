"""PostgreSQL change data capture: a snapshot, then every insert, update and delete.

Logical decoding with wal2json (format version 2, one JSON document per change), read
by polling the replication slot with SQL, because psycopg 3 cannot stream the
replication protocol (psycopg#71). Changes are *peeked*, appended to the source's
topic as Debezium-shaped envelopes (`op` c/u/d/r/t, `before`/`after`, `source.table`,
`source.ts_ms`, `source.lsn`), and only then is the slot advanced past them: the slot
is the confirmed position, so a restart (of tidegate or of PostgreSQL) resumes from
the last change known to be in the log. A change appended twice after a crash is an
idempotent upsert or delete downstream. An update leaves out the columns whose TOASTed
value did not change: they are sent as Debezium's unavailable-value placeholder, so
the stored value stays (not a null). A TRUNCATE becomes Debezium's `t`.

The slot is created before the snapshot is read, so no change falls between the two;
a row both in the snapshot and in a later change ends in its latest state. Whether the
snapshot finished is kept in the metadata store (`meta.cdc_positions`), so a crash
during it repeats it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tidegate.errors import ServiceUnavailableError, TidegateError
from tidegate.extras import require
from tidegate.ingest.intake import Intake
from tidegate.ingest.validate import UNAVAILABLE
from tidegate.log.base import Message
from tidegate.meta.parts import CdcPositionStore

BATCH = 5_000
_OPS = {"I": "c", "U": "u", "D": "d", "T": "t"}


class PostgresCdc:
    def __init__(
        self,
        dsn: str,
        slot: str,
        intake: Intake,
        source: str,
        table: str,
        schema: str = "public",
        positions: CdcPositionStore | None = None,
    ) -> None:
        require("postgres", "psycopg")  # names the extra when it is missing
        self.dsn = dsn
        self.slot = slot
        self.intake = intake
        self.source = intake.schema(source)
        if self.source.config.format != "debezium":
            raise TidegateError(f"source {source!r}: CDC needs `format: debezium`")
        self.table, self.schema_name = table, schema
        self.topic = self.source.config.topic_name
        self._conn = self._connect()
        self.state = positions or _open_positions(intake)

    def _connect(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as err:
            raise ServiceUnavailableError(f"cannot reach PostgreSQL for CDC: {err}") from None

    def _sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run `query`; after a lost connection (PostgreSQL restarted), reconnect once and
        run it again. Every statement here is safe to repeat: the slot only moves by an
        explicit advance, after the log holds the changes."""
        import psycopg

        for attempt in (1, 2):
            try:
                cursor = self._conn.execute(query, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError as err:
                self._conn.close()
                if attempt == 2:
                    raise ServiceUnavailableError(f"PostgreSQL CDC: {err}") from None
                self._conn = self._connect()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._conn.close()
        self.state.close()

    def start(self) -> int:
        """Create the slot if needed and take the snapshot if it was never finished."""
        exists = self._sql("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
        if not exists:
            self._sql("SELECT pg_create_logical_replication_slot(%s, 'wal2json')", (self.slot,))
        if self.state.snapshot_done(self.slot):
            return 0
        count = self._snapshot()
        self.state.mark_snapshot(self.slot)
        return count

    def _snapshot(self) -> int:
        from psycopg import sql

        names = list(self.source.config.columns)
        query = sql.SQL("SELECT {} FROM {}.{}").format(
            sql.SQL(", ").join(sql.Identifier(n) for n in names),
            sql.Identifier(self.schema_name),
            sql.Identifier(self.table),
        )
        count = 0
        now_ms = int(time.time() * 1000)
        with self._conn.cursor() as cur:
            cur.execute(query)
            while rows := cur.fetchmany(BATCH):
                messages = [
                    self._message("r", None, dict(zip(names, row, strict=True)), now_ms, None)
                    for row in rows
                ]
                self.intake.log.append(self.topic, messages)
                count += len(messages)
        return count

    def poll(self, max_changes: int = BATCH) -> int:
        """Move up to `max_changes` changes from the slot into the log; return how many."""
        rows = self._sql(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, NULL, %s,"
            " 'format-version', '2', 'include-lsn', '1', 'include-timestamp', '1',"
            " 'add-tables', %s)",
            (self.slot, max_changes, f"{self.schema_name}.{self.table}"),
        )
        if not rows:
            return 0
        messages = []
        for _, data in rows:
            change = json.loads(data)
            op = _OPS.get(change.get("action"))
            if op is None:
                continue  # B(egin), C(ommit), M(essage)
            after = _values(change.get("columns")) if op in ("c", "u") else None
            before = _values(change.get("identity")) if op in ("u", "d") else None
            if op == "u" and after is not None:  # unchanged TOASTed columns are left out
                for column in self.source.config.columns:
                    after.setdefault(column, UNAVAILABLE)
            messages.append(
                self._message(op, before, after, _ts_ms(change.get("timestamp")), change.get("lsn"))
            )
        if messages:
            self.intake.log.append(self.topic, messages)
        self._sql("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (self.slot, rows[-1][0]))
        return len(messages)

    def drop(self) -> None:
        """Drop the slot (PostgreSQL keeps WAL for a slot until then) and forget it."""
        self._sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (self.slot,),
        )
        self.state.forget(self.slot)

    def _message(
        self,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        ts_ms: int,
        lsn: str | None,
    ) -> Message:
        key_column = self.source.config.key or ""
        row = after if after is not None else before or {}
        envelope = {
            "op": op,
            "before": before,
            "after": after,
            "source": {
                "connector": "tidegate-postgres",
                "schema": self.schema_name,
                "table": self.source.config.table or self.table,
                "ts_ms": ts_ms,
                "lsn": lsn,
            },
            "ts_ms": int(time.time() * 1000),
        }
        key = json.dumps({key_column: row.get(key_column)}, default=str).encode()
        return Message(key, json.dumps(envelope, default=str).encode())


def _open_positions(intake: Intake) -> CdcPositionStore:
    """The CDC positions of the project's metadata store, opened for this reader."""
    from tidegate.meta import open_metadata
    from tidegate.meta.parts import owning

    project = intake.project
    meta = open_metadata(project.config.backends.metadata, project.root)
    return owning(meta.cdc_positions, meta)


def _values(columns: Any) -> dict[str, Any]:
    if not isinstance(columns, list):
        return {}
    return {c["name"]: c.get("value") for c in columns if isinstance(c, dict) and "name" in c}


def _ts_ms(text: Any) -> int:
    if isinstance(text, str):
        import datetime as dt

        try:
            return int(dt.datetime.fromisoformat(text).timestamp() * 1000)
        except ValueError:
            pass
    return int(time.time() * 1000)
