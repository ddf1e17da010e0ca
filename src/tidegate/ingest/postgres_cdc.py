"""PostgreSQL change data capture: a consistent snapshot, then every insert, update,
delete and truncate.

Logical decoding with pgoutput (built into PostgreSQL; the tables come from a
publication, created here unless it exists) or wal2json (format version 2; its
`add-tables` option filters, no publication), read by polling the replication slot with
SQL, because psycopg 3 cannot stream the replication protocol (psycopg#71). pgoutput's
messages are decoded into wal2json's change documents (`ingest/pgoutput.py`), so the
rest is one path.

**Snapshot.** The slot is created on a replication connection with `EXPORT_SNAPSHOT`,
and the table is read in a transaction set to that exported snapshot: the snapshot
holds exactly the rows committed before the slot's consistent point, and the slot
streams exactly what committed after it, so nothing falls between and nothing is
read twice. The snapshot goes to the log as a truncate (`t`) followed by one read
(`r`) per row (the topic has one partition, so a truncate stays in order with every
key's changes), so a repeated snapshot (a crash during one, or `tidegate cdc reset`)
also removes rows deleted meanwhile. Whether the snapshot finished is kept in the
metadata store (`meta.cdc_positions`); a slot found without that mark is dropped and
created again with a new snapshot.

**Changes.** Changes are *peeked*, appended to the source's topic as Debezium-shaped
envelopes (`op` c/u/d/t, `before`/`after`, `source.table`, `source.ts_ms`,
`source.lsn`), and only once the log holds them (the append returns after the log
made them durable) is the slot advanced: the slot's confirmed LSN is the position of
the last change known to be in the log, so a restart of tidegate or of PostgreSQL
resumes there. A crash between the append and the advance appends those changes again,
in order, before anything newer: the worker applies them as idempotent upserts and
deletes, so the raw table and the products end the same. An update leaves out the
columns whose TOASTed value did not change: they are sent as Debezium's
unavailable-value placeholder, so the stored value stays (not a null).

**Lag.** After each poll the slot's lag is reported to the metadata store: bytes of
WAL between the server's flushed position and the slot's confirmed LSN, and seconds
since the oldest change that was waiting when the poll began (0 when caught up). When
a poll finds nothing up to the flushed position, the slot is advanced to it, so WAL
other tables and databases write does not count as lag and is not retained.

**A dropped slot** (by a person, or by `max_slot_wal_keep_size`) after a finished
snapshot means changes were lost upstream: `CdcSlotError` says so and names the
command that takes a fresh snapshot.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from tidegate.errors import CdcSlotError, ServiceUnavailableError, TidegateError
from tidegate.extras import require
from tidegate.ingest.intake import Intake
from tidegate.ingest.pgoutput import decode_all
from tidegate.ingest.validate import UNAVAILABLE
from tidegate.log.base import EventLog, Message, TopicSpec
from tidegate.meta.parts import CdcPositionStore, SlotState

log = logging.getLogger(__name__)

BATCH = 5_000
#: retention of a CDC topic created here (the log keeps changes for replays and new workers)
TOPIC_RETENTION = 7 * 86_400.0


def ordered_topic(event_log: EventLog, topic: str) -> None:
    """Create a CDC source's topic with one partition unless it exists: a table's changes
    (a truncate above all, which touches every key) apply in WAL order only if they
    share one partition. The worker calls this before it subscribes, since subscribing
    creates a missing topic with the log's default partitions."""
    event_log.create_topic(TopicSpec(topic, 1, TOPIC_RETENTION))
    if event_log.partitions(topic) > 1:
        log.warning(
            "CDC topic %s has several partitions: a TRUNCATE may be applied out of order"
            " with changes on other partitions; give the source a new `topic`",
            topic,
        )


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
        plugin: str = "wal2json",
        publication: str | None = None,
    ) -> None:
        require("postgres", "psycopg")  # names the extra when it is missing
        if plugin not in ("wal2json", "pgoutput"):
            raise TidegateError(f"CDC plugin {plugin!r}: expected wal2json or pgoutput")
        self.plugin = plugin
        self.publication = publication or slot
        self.dsn = dsn
        self.slot = slot
        self.intake = intake
        self.source = intake.schema(source)
        if self.source.config.format != "debezium":
            raise TidegateError(f"source {source!r}: CDC needs `format: debezium`")
        self.table, self.schema_name = table, schema
        self.topic = self.source.config.topic_name
        self._ordered_topic()
        self._conn = self._connect()
        self.state = positions or _open_positions(intake)
        self.last = SlotState(slot, source, None, None, None, None, time.time())

    def _ordered_topic(self) -> None:
        ordered_topic(self.intake.log, self.topic)

    def _connect(self, **options: Any) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10, **options)
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
            except psycopg.errors.UndefinedObject as err:
                if "replication slot" in str(err):
                    raise self._dropped() from None
                raise TidegateError(f"source {self.source.name!r}: {str(err).strip()}") from None
            except psycopg.errors.ObjectInUse as err:
                raise CdcSlotError(
                    f"source {self.source.name!r}: replication slot {self.slot!r} is in use by"
                    f" another reader ({err}); stop the other tidegate runtime or give this"
                    " source its own `slot`",
                    source=self.source.name,
                ) from None
        raise AssertionError("unreachable")

    def _dropped(self) -> CdcSlotError:
        return CdcSlotError(
            f"source {self.source.name!r}: replication slot {self.slot!r} no longer exists in"
            " PostgreSQL (dropped by hand, or invalidated by max_slot_wal_keep_size); the"
            " changes made since it went are lost to CDC. Run `tidegate cdc reset"
            f" {self.source.name}` to take a fresh snapshot (the runtime picks it up)",
            source=self.source.name,
            slot=self.slot,
        )

    def close(self) -> None:
        self._conn.close()
        self.state.close()

    # ---------------------------------------------------------------- snapshot

    def start(self) -> int:
        """Resume the slot, or create it with a snapshot if none finished; return how
        many rows the snapshot read (0 when resuming)."""
        exists = self._sql(
            "SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,)
        )
        if self.state.snapshot_done(self.slot):
            if not exists:
                raise self._dropped()
            return 0
        if exists:  # a snapshot that never finished: its slot's position is no use
            self._sql("SELECT pg_drop_replication_slot(%s)", (self.slot,))
        count = self._snapshot()
        self.state.mark_snapshot(self.slot)
        return count

    def _snapshot(self) -> int:
        """Create the slot, exporting its snapshot, and read the table in that snapshot."""
        import psycopg
        from psycopg import sql

        if self.plugin == "pgoutput":
            self._ensure_publication()
        replication = self._connect(replication="database")
        try:
            command = f"CREATE_REPLICATION_SLOT {self.slot} LOGICAL {self.plugin} EXPORT_SNAPSHOT"
            result = replication.pgconn.exec_(command.encode())
            if result.status != 2:  # TUPLES_OK
                message = result.error_message.decode(errors="replace").strip()
                raise TidegateError(f"source {self.source.name!r}: cannot create slot: {message}")
            exported = (result.get_value(0, 2) or b"").decode()
            names = list(self.source.config.columns)
            query = sql.SQL("SELECT {} FROM {}.{}").format(
                sql.SQL(", ").join(sql.Identifier(n) for n in names),
                sql.Identifier(self.schema_name),
                sql.Identifier(self.table),
            )
            now_ms = int(time.time() * 1000)
            count = 0
            with self._connect() as reader:
                reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                reader.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(exported)))
                with reader.cursor() as cur:
                    try:
                        cur.execute(query)
                    except psycopg.errors.ProgrammingError as err:  # no such table or column
                        raise TidegateError(
                            f"source {self.source.name!r}: cannot read"
                            f" {self.schema_name}.{self.table}: {str(err).strip()}"
                        ) from None
                    # The table is readable: only now empty what an earlier snapshot left.
                    truncate = self._message("t", None, None, now_ms, None)
                    self.intake.log.append(self.topic, [truncate])
                    while rows := cur.fetchmany(BATCH):
                        messages = [
                            self._message("r", None, dict(zip(names, row, strict=True)), now_ms)
                            for row in rows
                        ]
                        self.intake.log.append(self.topic, messages)
                        count += len(messages)
                reader.execute("COMMIT")
            return count
        finally:
            replication.close()  # ends the exported snapshot; the slot stays

    def _ensure_publication(self) -> None:
        """pgoutput decodes the tables of a publication: create it (before the slot, so
        the slot's first change already sees it) unless it exists."""
        from psycopg import sql

        if self._sql("SELECT 1 FROM pg_publication WHERE pubname = %s", (self.publication,)):
            return
        self._sql(
            sql.SQL("CREATE PUBLICATION {} FOR TABLE {}.{}")
            .format(
                sql.Identifier(self.publication),
                sql.Identifier(self.schema_name),
                sql.Identifier(self.table),
            )
            .as_string(self._conn)
        )

    # ---------------------------------------------------------------- changes

    def poll(self, max_changes: int = BATCH) -> int:
        """Move up to `max_changes` changes (whole transactions) from the slot into the
        log; return how many. Reports the slot's lag afterwards."""
        flushed = self._sql("SELECT pg_current_wal_flush_lsn()::text")[0][0]
        if self.plugin == "pgoutput":
            rows = self._sql(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_binary_changes(%s,"
                " %s::pg_lsn, %s, 'proto_version', '1', 'publication_names', %s)",
                (self.slot, flushed, max_changes, self.publication),
            )
            changes = [c for c in decode_all(rows) if self._ours(c)]
        else:
            rows = self._sql(
                "SELECT lsn::text, data FROM pg_logical_slot_peek_changes(%s, %s::pg_lsn, %s,"
                " 'format-version', '2', 'include-lsn', '1', 'include-timestamp', '1',"
                " 'add-tables', %s)",
                (self.slot, flushed, max_changes, f"{self.schema_name}.{self.table}"),
            )
            changes = [json.loads(data) for _, data in rows]
        messages, oldest = self._messages(changes)
        if messages:
            self.intake.log.append(self.topic, messages)
        caught_up = len(rows) < max_changes
        # Caught up: every transaction committed before `flushed` is in the log.
        target = flushed if caught_up else rows[-1][0]
        self._sql(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn) FROM pg_replication_slots"
            " WHERE slot_name = %s AND confirmed_flush_lsn < %s::pg_lsn",
            (self.slot, target, self.slot, target),
        )
        waited = 0.0 if caught_up or oldest is None else max(0.0, time.time() - oldest / 1000)
        self.report(waited)
        return len(messages)

    def _ours(self, change: dict[str, Any]) -> bool:
        """Whether a pgoutput change is of this source's table (a publication may hold
        several)."""
        if change["action"] == "T":
            return (self.schema_name, self.table) in change["tables"]
        return bool(change["schema"] == self.schema_name and change["table"] == self.table)

    def _messages(self, changes: list[dict[str, Any]]) -> tuple[list[Message], int | None]:
        messages: list[Message] = []
        oldest: int | None = None
        for change in changes:
            op = _OPS.get(str(change.get("action")))
            if op is None:
                continue  # B(egin), C(ommit), M(essage)
            after = _values(change.get("columns")) if op in ("c", "u") else None
            before = _values(change.get("identity")) if op in ("u", "d") else None
            if op == "u" and after is not None:  # unchanged TOASTed columns are left out
                for column in self.source.config.columns:
                    after.setdefault(column, UNAVAILABLE)
            ts_ms = _ts_ms(change.get("timestamp"))
            oldest = ts_ms if oldest is None else min(oldest, ts_ms)
            messages.append(self._message(op, before, after, ts_ms, change.get("lsn")))
        return messages, oldest

    def report(self, waited: float) -> SlotState:
        """Measure the slot's lag and keep it in the metadata store (`status`, /metrics)."""
        found = self._sql(
            "SELECT confirmed_flush_lsn::text,"
            " pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn)::bigint"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        if not found:
            raise self._dropped()
        lsn, lag_bytes = found[0][0], max(0, int(found[0][1] or 0))
        self.last = SlotState(
            self.slot, self.source.name, lsn, lag_bytes, waited, None, time.time()
        )
        self.state.report(self.last)
        return self.last

    def drop(self) -> None:
        """Drop the slot (PostgreSQL keeps WAL for a slot until then) and its
        publication (pgoutput), and forget it."""
        from psycopg import sql

        self._sql(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (self.slot,),
        )
        if self.plugin == "pgoutput":
            self._sql(
                sql.SQL("DROP PUBLICATION IF EXISTS {}")
                .format(sql.Identifier(self.publication))
                .as_string(self._conn)
            )
        self.state.forget(self.slot)

    def _message(
        self,
        op: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        ts_ms: int,
        lsn: str | None = None,
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
