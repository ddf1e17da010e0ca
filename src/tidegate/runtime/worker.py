"""The stream worker: micro-batches from the log into raw tables, products and the online store.

One micro-batch, in this order:

1. records already applied are skipped: DuckDB keeps, per log partition, the next
   offset it applied, written in the same transaction as the data;
2. each record is decoded and checked; the rejected are dead-lettered (idempotent by
   log position); records of the consent topic, if one is configured, go into the
   consent ledger here, durably (`requests/consent_stream.py`);
3. one DuckDB transaction: raw tables take the changes (Arrow batches, deduplicated by
   event id), each incremental product recomputes the keys that changed (its own SQL,
   restricted), the live version tables take the new rows, the applied offsets and the
   keys waiting to be published are recorded;
4. the changed rows go to the online store, their keys (never their values:
   products/changes.py) to the change stream `__changes.<product>` on the log, sent
   without waiting (Kafka acknowledges them while the next batch is polled and
   decoded); `trigger: on_change` syncs run; the waiting keys are cleared in the next
   batch's transaction (step 3), once the log confirmed it holds the change stream,
   not by a commit of their own;
5. the caller commits the log offsets.

A `kill -9` anywhere loses nothing and doubles nothing: before step 3 commits, the
records are delivered again and applied once; after it, they are skipped, and
`recover()` (run at start) publishes whatever keys were still waiting. The change
stream is at-least-once: after a crash in step 4, a change may be published twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tidegate.errors import (
    BuildError,
    CommitFailedError,
    ServiceUnavailableError,
    TidegateError,
)
from tidegate.ingest.deadletters import DeadLetter
from tidegate.ingest.intake import Intake, open_intake
from tidegate.ingest.postgres_cdc import ordered_topic
from tidegate.ingest.raw import apply_arrow, apply_changes, ensure_stream_table, raw_table
from tidegate.ingest.validate import Change
from tidegate.log.base import Record, TopicPartition
from tidegate.observe.freshness import FreshnessLedger
from tidegate.observe.stream import StreamObserver
from tidegate.platform import Platform
from tidegate.privacy.tombstones import ErasedFilter, ensure_purged
from tidegate.products.changes import ChangeEncoder, changes_topic
from tidegate.products.incremental import (
    ProductDelta,
    changed_keys,
    live_table,
    recompute,
    restricted_sql,
)
from tidegate.products.planner import ProductPlan, plan_project
from tidegate.project.project import cdc_sources, stream_sources
from tidegate.requests.consent_stream import ConsentStream
from tidegate.store.online.codec import encode_row
from tidegate.store.warehouse import PRODUCTS

log = logging.getLogger(__name__)

STATE = "tidegate_state"
OFFSETS = f"{STATE}.applied_offsets"
PENDING = f"{STATE}.pending_publish"
DEFAULT_GROUP = "tidegate-worker"


@dataclass
class BatchReport:
    records: int = 0
    skipped: int = 0  # already applied before a restart
    applied: int = 0
    dead: int = 0
    erased: int = 0  # events of erased subjects, dropped unstored (privacy/tombstones.py)
    consent: int = 0  # ledger entries from the consent topic (requests/consent_stream.py)
    products: dict[str, int] = field(default_factory=dict)  # product -> rows changed
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    seconds: float = 0.0


class StreamWorker:
    """Applies micro-batches; one instance per process writes the warehouse."""

    def __init__(self, platform: Platform, intake: Intake | None = None) -> None:
        self.platform = platform
        self.project = platform.project
        self.intake = intake or open_intake(self.project)
        self.plans: dict[str, ProductPlan] = plan_project(self.project)
        self.order = self.project.build_order()
        self.incremental = [n for n in self.order if self.plans[n].mode == "incremental"]
        self.streams = stream_sources(self.project)
        self.freshness: FreshnessLedger = platform.meta.freshness
        self._sql: dict[str, str] = {}
        self._relations = {name: raw_table(name) for name in self.project.sources}
        self._relations.update({name: f'{PRODUCTS}."{name}"' for name in self.project.products})
        self.observer = StreamObserver(platform)  # volume, freshness, OpenLineage per update
        self.erased = ErasedFilter(platform)
        if self.intake.erased is None:  # its producers' side (replays) drops them too
            self.intake.erased = self.erased
        self.consent = ConsentStream.of(platform)  # None unless `consent.topic` is set
        self._applied: dict[TopicPartition, int] = {}
        self._caught_up: set[str] = set()  # on_change syncs fully diffed once in this process
        self._encoders: dict[str, ChangeEncoder] = {}
        self._versions: dict[str, int] = {}  # product -> live version, as of the last batch
        # keys published but still in PENDING: cleared in the next batch's transaction
        # rather than by a DuckDB commit of their own on every batch
        self._published_pending = False
        # change-stream messages sent (`EventLog.send`) but not yet confirmed held by the
        # log: confirmed (`confirm`) before PENDING may be cleared, while the log acks
        # them in the background meanwhile; after a failed confirmation every key still
        # in PENDING is sent again (`recover`) before anything else
        self._unconfirmed = False
        self._resend = False
        self._setup()

    def _setup(self) -> None:
        with self.platform.warehouse.cursor() as db:
            db.execute(f"CREATE SCHEMA IF NOT EXISTS {STATE}")
            db.execute(
                f"CREATE TABLE IF NOT EXISTS {OFFSETS} (topic VARCHAR, partition INTEGER,"
                " next_offset BIGINT, PRIMARY KEY (topic, partition))"
            )
            db.execute(f"CREATE TABLE IF NOT EXISTS {PENDING} (product VARCHAR, key VARCHAR)")
            for config in self.streams.values():
                ensure_stream_table(db, config)
            for topic, partition, offset in db.execute(f"SELECT * FROM {OFFSETS}").fetchall():
                self._applied[(str(topic), int(partition))] = int(offset)

    @property
    def topics(self) -> list[str]:
        if self.consent is not None:
            return sorted({*self.intake.topics, self.consent.topic})
        return self.intake.topics

    def close(self) -> None:
        if self._published_pending:
            try:
                self.confirm()
                self._clear_pending()
            except ServiceUnavailableError as err:  # left in PENDING: sent at the next start
                log.warning("change stream not confirmed at close: %s", err.message)
        self.observer.close()
        self.freshness.close()
        self.intake.close()

    # ---------------------------------------------------------------- one micro-batch

    def process_batch(self, records: Sequence[Record]) -> BatchReport:
        import pyarrow as pa

        started = time.perf_counter()
        report = BatchReport(records=len(records))
        for record in records:
            tp = (record.topic, record.partition)
            report.offsets[tp] = max(report.offsets.get(tp, 0), record.offset + 1)
        fresh = [r for r in records if r.offset >= self._applied.get((r.topic, r.partition), 0)]
        report.skipped = len(records) - len(fresh)
        if not fresh:
            report.seconds = time.perf_counter() - started
            return report
        letters: list[DeadLetter] = []
        self.erased.refresh()
        ensure_purged(self.platform)  # a new tombstone: raw and live versions purged once
        consent_topic = self.consent.topic if self.consent is not None else None
        dropped: list[Record] = []  # records of erased subjects: removed from the log
        if self.consent is not None:  # into the ledger before any offset is stored
            taken = self.consent.handle([r for r in fresh if r.topic == consent_topic])
            letters += taken.letters
            report.erased += taken.erased
            report.consent = taken.events
        # Topics of one `json` source: the whole batch decoded into Arrow at once; what
        # that path does not take plainly (`compiled.DecodedBatch`) goes event by event.
        slow: list[int] = []
        events: dict[str, list[tuple[list[int], Any]]] = defaultdict(list)
        for topic, positions in _by_topic(fresh).items():
            schemas = self.intake.by_topic.get(topic, [])
            fast = self.intake.fast(schemas[0].name) if len(schemas) == 1 else None
            if topic == consent_topic or fast is None:
                slow += positions
                continue
            schema = schemas[0]
            batch = fast.decode([fresh[p].value for p in positions])
            slow += [positions[i] for i in batch.rest]
            if not batch.taken:
                continue
            where = [positions[i] for i in batch.taken]
            gone = self._erased_rows(schema.config, batch.table)
            if gone:
                report.erased += len(gone)
                dropped += [fresh[where[i]] for i in gone]
                keep = sorted(set(range(len(where))) - set(gone))
                where = [where[i] for i in keep]
                batch.table = batch.table.take(pa.array(keep, pa.int64()))
            if where:
                events[schema.name].append((where, batch.table))
        changes: dict[str, list[tuple[int, Change]]] = defaultdict(list)
        for position in sorted(slow):
            record = fresh[position]
            if record.topic == consent_topic:
                if self._consent_erased(record):  # dropped by the consent stream too
                    dropped.append(record)
                continue
            decoded = self.intake.decode(record)
            if isinstance(decoded, DeadLetter):
                if self._letter_erased(decoded):
                    report.erased += 1
                    dropped.append(record)
                else:
                    letters.append(decoded)
            elif self.erased(decoded):
                report.erased += 1
                dropped.append(record)
            else:
                changes[decoded.source].append((position, decoded))
        self._forget(dropped)
        self.intake.dead.add(letters)
        self.intake.unknown.flush()
        report.dead = len(letters)
        report.applied = len(fresh) - len(letters) - report.erased
        applied = {
            tp: offset for tp, offset in report.offsets.items() if offset > self._applied.get(tp, 0)
        }
        deltas = self._apply(self._tables(events, changes), changes, applied)
        self._applied.update(applied)
        oldest = min(r.timestamp for r in fresh if r.timestamp) if fresh else time.time()
        self._publish(deltas, oldest)
        report.products = {d.product: d.changed for d in deltas}
        report.seconds = time.perf_counter() - started
        return report

    def _erased_rows(self, config: Any, table: Any) -> list[int]:
        """Rows of a decoded batch about erased subjects (none, at no cost, while nobody
        is erased): the check each event gets on the per-event path, once per subject."""
        column = config.subject
        if self.erased.none_erased() or column is None or column not in table.column_names:
            return []
        verdicts: dict[Any, bool] = {}
        gone = []
        for index, subject in enumerate(table.column(column).to_pylist()):
            erased = verdicts.get(subject)
            if erased is None:
                erased = verdicts[subject] = self.erased.about_erased(
                    config.name, {column: subject}
                )
            if erased:
                gone.append(index)
        return gone

    def _tables(
        self,
        events: dict[str, list[tuple[list[int], Any]]],
        changes: dict[str, list[tuple[int, Change]]],
    ) -> dict[str, Any]:
        """One Arrow table of events per `json` source, in log order (the first event of
        an id is the one kept), from the batch-decoded parts and the per-event ones."""
        import pyarrow as pa

        from tidegate.ingest.raw import arrow_rows

        tables: dict[str, Any] = {}
        for source in sorted({*events, *changes}):
            config = self.streams[source]
            if config.format != "json":
                continue
            parts = list(events.get(source, []))
            single = changes.pop(source, [])
            if single:
                rows = arrow_rows(config, [c.row for _, c in single])
                parts.append(([p for p, _ in single], rows))
            if len(parts) == 1:
                tables[source] = parts[0][1]
                continue
            positions = [p for taken, _ in parts for p in taken]
            table = pa.concat_tables([t for _, t in parts])
            tables[source] = table.take(sorted(range(len(positions)), key=positions.__getitem__))
        return tables

    def _letter_erased(self, letter: DeadLetter) -> bool:
        """A broken event that still names an erased subject: dropped, not kept."""
        import json

        try:
            event = json.loads(letter.payload or b"")
        except (ValueError, UnicodeDecodeError):
            return False
        return self.erased.about_erased(letter.source, event)

    def _consent_erased(self, record: Record) -> bool:
        import json

        try:
            message = json.loads(record.value or b"")
        except (ValueError, UnicodeDecodeError):
            return False
        return isinstance(message, dict) and self.erased.subject_erased(message.get("subject"))

    def _forget(self, dropped: list[Record]) -> None:
        """Remove the records of erased subjects from the log itself, where it can
        (the embedded log; a Kafka topic keeps them until its retention, and every
        reader drops them)."""
        log_ = self.intake.log
        if not dropped or not log_.capabilities.erases_records:
            return
        by_topic: dict[str, set[tuple[int, int]]] = defaultdict(set)
        for record in dropped:
            by_topic[record.topic].add((record.partition, record.offset))
        for topic, positions in by_topic.items():

            def held(record: Record, positions: set[tuple[int, int]] = positions) -> bool:
                return (record.partition, record.offset) in positions

            try:
                log_.erase_records(topic, held)
            except Exception as err:  # the data never reached a store; retried by erasure
                log.warning("could not remove erased records from topic %s: %s", topic, err)

    def _live_tables(self) -> dict[str, str]:
        tables = {}
        for name in self.incremental:
            version = self.platform.meta.live_version(name)
            if version is None:
                raise BuildError(f"product {name!r} is not built yet; run `tidegate build` first")
            tables[name] = live_table(version.table)
            self._versions[name] = version.version
        return tables

    def _apply(
        self,
        events: dict[str, Any],
        changes: dict[str, list[tuple[int, Change]]],
        applied: dict[TopicPartition, int],
    ) -> list[ProductDelta]:
        """`events`: the `json` sources' (Arrow tables); `changes`: the CDC sources'."""
        if self._resend:  # a confirmation failed: what it left in PENDING goes out again
            self.recover()
        self.confirm()  # the last batch's change stream is held: its PENDING may go
        tables = self._live_tables()
        deltas: list[ProductDelta] = []
        with self.platform.warehouse.cursor() as db:
            db.execute("BEGIN")
            try:
                if self._published_pending:
                    db.execute(f"DELETE FROM {PENDING}")
                touched: dict[str, Any] = {}
                for source, batch in events.items():
                    touched[source] = apply_arrow(db, self.streams[source], batch)
                for source, items in changes.items():
                    ordered = [c for _, c in sorted(items, key=lambda item: item[0])]
                    touched[source] = apply_changes(db, self.streams[source], ordered)
                for name in self.incremental:
                    plan = self.plans[name]
                    product = self.project.products[name]
                    keys = changed_keys(
                        db, product, plan.key_columns, plan.closures, touched, self._relations
                    )
                    if keys is None or keys.num_rows == 0:
                        continue
                    if name not in self._sql:
                        self._sql[name] = restricted_sql(
                            self.platform.warehouse, product, self.project
                        )
                    delta = recompute(db, self._sql[name], tables[name], product, keys)
                    touched[name] = delta.touched
                    if delta.changed:
                        deltas.append(delta)
                self._mark_stale(set(touched))
                if applied:
                    self._store_offsets(db, applied)
                products: list[str] = []
                waiting: list[str] = []
                for d in deltas:
                    key = self._key(d.product)
                    changed = [str(r[key]) for r in d.upserts] + [str(k) for k in d.deletes]
                    products += [d.product] * len(changed)
                    waiting += changed
                if waiting:  # two list parameters, no Arrow table registered (~1.5 ms)
                    db.execute(
                        f"INSERT INTO {PENDING} SELECT unnest(?), unnest(?)", [products, waiting]
                    )
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        self._published_pending = False
        return deltas

    def _store_offsets(self, db: Any, applied: dict[TopicPartition, int]) -> None:
        """Record the next offset to apply per partition, in the batch's transaction.

        The partitions already in the table (all this worker has seen) take an UPDATE of
        a non-key column, several times cheaper in DuckDB than `INSERT OR REPLACE`, which
        deletes and re-inserts the row and its primary-key entry (~1 vs ~3 ms a batch);
        a new partition is inserted. Should a row the worker knew be gone, the UPDATE
        says so by its count, and every partition is written again by INSERT OR REPLACE."""
        known = [(tp, o) for tp, o in applied.items() if tp in self._applied]
        if known:
            whens = " ".join(["WHEN topic = ? AND partition = ? THEN ?"] * len(known))
            where = " OR ".join(["(topic = ? AND partition = ?)"] * len(known))
            updated = db.execute(
                f"UPDATE {OFFSETS} SET next_offset = CASE {whens} END WHERE {where}",
                [v for (t, p), o in known for v in (t, p, o)] + [v for tp, _ in known for v in tp],
            ).fetchone()
            if updated is not None and int(updated[0]) == len(known):
                applied = {tp: o for tp, o in applied.items() if tp not in self._applied}
        if applied:  # one statement: DuckDB's executemany prepares per row
            db.execute(
                f"INSERT OR REPLACE INTO {OFFSETS} VALUES "
                + ", ".join(["(?, ?, ?)"] * len(applied)),
                [v for (t, p), o in applied.items() for v in (t, p, o)],
            )

    def _key(self, product: str) -> str:
        return self.project.products[product].config.key

    def _mark_stale(self, touched: set[str]) -> None:
        now = time.time()
        for name, plan in self.plans.items():
            if plan.mode == "batch" and (self.project.products[name].depends_on & touched):
                self.freshness.stale(name, plan.mode, now)

    # ---------------------------------------------------------------- publish

    def confirm(self) -> None:
        """Wait until the change-stream messages sent so far are held by the log (on
        Kafka, acknowledged; they were sent without waiting, so the acknowledgements
        come in while the worker polls and decodes the next batch). On failure the keys
        stay in PENDING and are sent again before the next batch."""
        if not self._unconfirmed:
            return
        try:
            self.intake.log.flush()
        except ServiceUnavailableError:
            self._published_pending = False  # not published after all
            self._resend = True
            raise
        self._unconfirmed = False

    def _clear_pending(self) -> None:
        with self.platform.warehouse.cursor() as db:
            db.execute(f"DELETE FROM {PENDING}")
        self._published_pending = False

    def _publish(self, deltas: list[ProductDelta], oldest: float, clear: bool = False) -> None:
        """Online store, change stream, syncs. The published keys leave PENDING with the
        next batch's transaction (or now, with `clear`): a crash before that publishes
        them again at `recover()`, which the online store and the at-least-once change
        stream allow."""
        online = self.platform.online
        for delta in deltas:
            key = self._key(delta.product)
            encoded = [(str(r[key]), encode_row(r)) for r in delta.upserts]
            if encoded:
                online.upsert(delta.product, encoded)
            if delta.deletes:
                online.delete(delta.product, [str(k) for k in delta.deletes])
            self._change_stream(delta, key)
        if clear:
            self.confirm()
            self._clear_pending()
        else:
            self._published_pending = True
        now = time.time()
        for delta in deltas:
            plan = self.plans[delta.product]
            self.freshness.updated(delta.product, plan.mode, now - oldest, plan.freshness)
            lag = now - oldest
            self.observer.updated(delta.product, len(delta.upserts), len(delta.deletes), lag)
        self._run_syncs(deltas)

    def _change_stream(self, delta: ProductDelta, key: str) -> None:
        """Keys, versions and the operation only (products/changes.py says why)."""
        encoder = self._encoders.get(delta.product)
        if encoder is None:
            product = self.project.products[delta.product]
            encoder = self._encoders[delta.product] = ChangeEncoder(
                product, self.platform.master_key
            )
        messages = encoder.messages(
            [r[key] for r in delta.upserts],
            delta.deletes,
            self._versions.get(delta.product, 0),
            time.time(),
        )
        log_ = self.intake.log
        log_.send(changes_topic(delta.product, log_.namespace), messages)
        self._unconfirmed = True

    def _run_syncs(self, deltas: list[ProductDelta]) -> None:
        """Push changed rows to `trigger: on_change` syncs.

        The first run of each sync in this process diffs the whole product (catching up
        on anything a crashed predecessor applied but never synced); later runs send only
        the keys this batch changed."""
        if not any(sync.config.trigger == "on_change" for sync in self.project.syncs.values()):
            return
        changed: dict[str, list[Any]] = defaultdict(list)
        for delta in deltas:
            key = self._key(delta.product)
            changed[delta.product] += [r[key] for r in delta.upserts] + list(delta.deletes)
        if not changed:
            return
        from tidegate.egress.sync import run_sync, sync_changes

        for name, sync in sorted(self.project.syncs.items()):
            product = sync.config.product
            if sync.config.trigger != "on_change" or product not in changed:
                continue
            try:
                if name in self._caught_up:
                    sync_changes(self.platform, name, changed[product])
                else:
                    run_sync(self.platform, name)
                    self._caught_up.add(name)
            except TidegateError as err:
                log.warning("on_change sync %s failed: %s", name, err.message)

    def prepare(self) -> None:
        """Ready the change streams before the first batch (`EventLog.prepare_append`):
        on Kafka, creating a topic and the first write to it cost about a second, which
        would otherwise be the first micro-batch's latency; the CDC sources' topics, with
        the one partition that keeps a table's changes in order (the capture thread,
        started beside the consumer, may come second); and the products' restricted
        SQL; and pyarrow's modules, whose first import (about 0.3 s holding the GIL) would
        otherwise land in the first micro-batch."""
        import pyarrow.compute  # noqa: F401  (loaded now, not during a batch)

        log_ = self.intake.log
        log_.prepare_append(changes_topic(name, log_.namespace) for name in self.incremental)
        for name in cdc_sources(self.project):  # one partition, before subscribing makes 4
            ordered_topic(log_, self.intake.schema(name).config.topic_name)
        for name in self.incremental:  # SQLGlot's rewrite, tens of ms: not in a batch
            if name not in self._sql:
                product = self.project.products[name]
                self._sql[name] = restricted_sql(self.platform.warehouse, product, self.project)

    def recover(self) -> int:
        """Publish keys a previous process applied in DuckDB but died before publishing."""
        with self.platform.warehouse.cursor() as db:
            pending = db.execute(f"SELECT DISTINCT product, key FROM {PENDING}").fetchall()
        by_product: dict[str, set[str]] = defaultdict(set)
        for product, key in pending:
            if product in self.project.products:
                by_product[str(product)].add(str(key))
        deltas = []
        tables = self._live_tables()
        for product, keys in by_product.items():
            key = self._key(product)
            quoted = '"' + key.replace('"', '""') + '"'
            with self.platform.warehouse.cursor() as db:
                rows = (
                    db.sql(
                        f"SELECT * FROM {tables[product]} WHERE CAST({quoted} AS VARCHAR) IN"
                        f" (SELECT key FROM {PENDING} WHERE product = ?)",
                        params=[product],
                    )
                    .to_arrow_table()
                    .to_pylist()
                )
            found = {str(r[key]) for r in rows}
            deltas.append(ProductDelta(product, rows, sorted(keys - found)))
        self._publish(deltas, time.time(), clear=True)
        self._resend = False
        return sum(len(keys) for keys in by_product.values())


def _rollback(db: Any) -> None:
    """Roll back what the failed batch began. An interruption (a second Ctrl-C) can land
    after COMMIT took effect or before BEGIN did: then there is nothing to roll back, and
    DuckDB's complaint must not hide the interruption itself."""
    import duckdb

    with contextlib.suppress(duckdb.TransactionException):
        db.execute("ROLLBACK")


def _by_topic(records: Sequence[Record]) -> dict[str, list[int]]:
    """Positions of `records`, by topic."""
    positions: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        positions[record.topic].append(index)
    return positions


_WORKERS: weakref.WeakKeyDictionary[Platform, StreamWorker] = weakref.WeakKeyDictionary()


def process_batch(platform: Platform, records: Sequence[Record]) -> BatchReport:
    """Apply one micro-batch with the platform's worker (created on first use)."""
    worker = _WORKERS.get(platform)
    if worker is None:
        worker = StreamWorker(platform)
        worker.recover()
        _WORKERS[platform] = worker
    return worker.process_batch(records)


def run_worker(
    platform: Platform,
    *,
    group: str = DEFAULT_GROUP,
    max_records: int = 50_000,
    poll_timeout: float = 0.05,
    stop: threading.Event | None = None,
    on_batch: Callable[[BatchReport], None] | None = None,
    schedule: bool = True,
    session_timeout: float = 10.0,
    instance_id: str | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> None:
    """Consume until `stop` (a threading.Event) is set: poll, apply, commit; and, between
    batches, the scheduler's rebuilds, drop folders and retention.

    `stop` is checked between micro-batches, so a batch in hand is applied, published and
    committed before the worker ends (the CLI sets it on Ctrl-C and SIGTERM);
    `on_stopping` runs first thing once the loop ends, before anything is closed (`tidegate
    run` stops its API there, so no request meets a closed store).

    A log that goes away (a Kafka broker restarting) does not stop the worker: a batch
    that could not be applied or published is retried, after `recover()` published what
    the failed attempt left waiting, until the log answers again; PostgreSQL CDC sources
    are captured onto their topics by a thread beside it (`runtime/cdc.py`); offsets that could not
    be committed are committed with the next batch (until then, a restart redelivers the
    records and the applied-offset table skips them).

    `max_records` is large on purpose: a poll hands over only what is there, so while the
    worker keeps up batches stay small, and when it falls behind it catches up in fewer,
    larger batches (each product recompute has a fixed cost per batch: 50k records
    halved the p99 at 20k events/s through Kafka against 5k).

    The consumer joins with a stable `instance_id` (default: `worker_instance_id`), so a
    worker restarted after a crash takes its partitions back at once."""
    from tidegate.runtime.cdc import CdcCapture
    from tidegate.runtime.scheduler import Scheduler

    with platform.writer_lock:
        worker = StreamWorker(platform)

    def recover() -> int:
        worker.prepare()
        with platform.writer_lock:
            return worker.recover()

    _retrying(recover, stop, "recovering unpublished keys")
    scheduler = (
        Scheduler(platform, worker.intake, worker.plans, worker.freshness) if schedule else None
    )
    capture_stop = threading.Event()
    capture = CdcCapture(platform, capture_stop)  # PostgreSQL CDC sources onto their topics
    capture.start()
    consumer = worker.intake.log.consumer(
        group,
        worker.topics,
        session_timeout=session_timeout,
        instance_id=instance_id or worker_instance_id(group),
    )
    uncommitted: dict[TopicPartition, int] = {}
    committed_at = 0.0
    try:
        while stop is None or not stop.is_set():
            records = consumer.poll(max_records, poll_timeout)
            if records:
                report = _retrying(_batch(worker, records), stop, "micro-batch")
                if report is None:  # stopped while the log was away
                    break
                for tp, offset in report.offsets.items():
                    uncommitted[tp] = max(offset, uncommitted.get(tp, 0))
                if on_batch is not None:
                    on_batch(report)
            if not records:  # idle: the change stream confirmed now, not with the next batch
                try:
                    worker.confirm()
                except ServiceUnavailableError as err:
                    log.warning("change stream: %s; its keys are sent again", err.message)
            # While records keep coming, commit at most every COMMIT_EVERY (a commit is a
            # broker round trip, or a write lock on the embedded log the producers also
            # need); as soon as the log is idle, at once.
            now = time.monotonic()
            if uncommitted and (not records or now - committed_at >= COMMIT_EVERY):
                _commit(consumer, uncommitted)
                committed_at = now
            if scheduler is not None:
                try:
                    with platform.writer_lock:
                        scheduler.tick()
                except ServiceUnavailableError as err:
                    log.warning("scheduler: %s; trying again at the next tick", err.message)
    finally:
        if on_stopping is not None:
            on_stopping()
        capture_stop.set()
        capture.join()
        if uncommitted:
            try:
                _commit(consumer, uncommitted)
            except TidegateError as err:  # the records are delivered again, and skipped
                log.warning("final offset commit failed: %s", err.message)
        consumer.close()
        worker.close()


#: names this worker in its consumer group (static membership); one per worker process
WORKER_ID_ENV = "TIDEGATE_WORKER_ID"


def worker_instance_id(group: str) -> str:
    """The stable member name of this machine's worker in `group`: `$TIDEGATE_WORKER_ID`
    when set (needed to run two workers of one group on one host), else host and group.
    Stable across restarts, which is what lets Kafka hand the partitions straight back."""
    import os
    import socket

    return os.environ.get(WORKER_ID_ENV) or f"{socket.gethostname()}-{group}"


#: longest time applied offsets wait for their commit while records keep coming; until
#: then a restart redelivers them and the applied-offset table skips them
COMMIT_EVERY = 0.1

#: first and longest pause between attempts while a service is unavailable
RETRY_FIRST = 0.2
RETRY_LONGEST = 5.0


def _batch(worker: StreamWorker, records: Sequence[Record]) -> Any:
    attempts = [0]

    def attempt() -> BatchReport:
        attempts[0] += 1
        with worker.platform.writer_lock:  # a command run for the CLI waits, or we wait
            if attempts[0] > 1:  # a failed attempt may have applied without publishing
                worker.recover()
            return worker.process_batch(records)

    return attempt


def _retrying(action: Any, stop: Any, what: str) -> Any:
    """`action()`, tried again while it fails with ServiceUnavailableError; None if `stop`
    was set meanwhile."""
    delay = RETRY_FIRST
    while True:
        try:
            return action()
        except ServiceUnavailableError as err:
            log.warning("%s failed: %s; retrying in %.1fs", what, err.message, delay)
        if stop is not None:
            if stop.wait(delay):
                return None
        else:
            time.sleep(delay)
        delay = min(delay * 2, RETRY_LONGEST)


def _commit(consumer: Any, offsets: dict[TopicPartition, int]) -> None:
    try:
        consumer.commit(offsets)
    except CommitFailedError as err:
        log.warning("%s", err.message)
    except ServiceUnavailableError as err:
        log.warning("offset commit failed (%s); it is retried with the next batch", err.message)
        return
    offsets.clear()
