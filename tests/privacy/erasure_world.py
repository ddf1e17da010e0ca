"""The demo shop with one distinctive person in every store tidegate has, and scans that
look for that person's id and email in each store (rows and raw file bytes).

Shared by `test_erasure_scan.py` (embedded and services) and its property test. Not a
test module: loaded by path (tests are not a package)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of

# distinctive on purpose: any occurrence anywhere is a trace, never a coincidence
SUBJECT = "987654321"
EMAIL = "erasmus.tracewell.7f3a@example.org"
OTHER = "1"  # granted marketing.email in the demo; must survive

CHATS = """
name: chats
type: stream
event_id: chat_id
subject: customer_id
columns:
  chat_id: {type: VARCHAR, nullable: false}
  customer_id: {type: BIGINT, classification: user.unique_id}
  email: {type: VARCHAR, classification: user.contact.email}
  body: {type: VARCHAR}
"""

CHAT_COUNTS = """
name: chat_counts
owner: test
key: customer_id
subject: customer_id
freshness: 1s
purposes: [support]
sql: |
  SELECT customer_id, max(email) AS email, count(*) AS chats
  FROM chats WHERE customer_id IS NOT NULL GROUP BY customer_id
columns:
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  email: {type: VARCHAR, classification: user.contact.email}
  chats: {type: BIGINT, classification: none, nullable: false}
"""

#: a warn check that fails on the subject's row: its failing-row table keeps the row
EMAIL_CHECK = """checks:
  - {type: regex, name: email_letters_only, column: email, pattern: '^[a-z.]+@', severity: warn}
"""


def add_subject(shop: Path) -> None:
    """A customer with one paid order long ago: high churn risk, in the marketing audience."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def append(name: str, row: dict[str, Any]) -> None:
        path = shop / "data" / f"{name}.parquet"
        table = pq.read_table(path)
        full = {c: row.get(c) for c in table.column_names}
        pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([full], table.schema)]), path)

    append(
        "customers",
        {
            "customer_id": int(SUBJECT),
            "first_name": "Erasmus",
            "last_name": "Tracewell",
            "email": EMAIL,
            "phone": "+44 7700 900123",
            "birth_date": dt.date(1980, 5, 17),
            "postal_code": "EC1A 1BB",
            "city": "London",
            "country": "GB",
            "signed_up_at": dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        },
    )
    append(
        "orders",
        {
            "order_id": 5550001,
            "customer_id": int(SUBJECT),
            "ordered_at": dt.datetime(2026, 2, 1, tzinfo=dt.UTC),
            "amount": 250.0,
            "status": "paid",
        },
    )


def extend_shop(
    shop: Path,
    *,
    backends: str = "",
    syncs: dict[str, str] | None = None,
    suffix: str = "",
) -> None:
    """The chats stream, a product over it, the consent topic, a failing quality check,
    and (optionally) more backends (YAML lines under `backends:`), more syncs, and a
    suffix for topic names (a shared Kafka keeps other runs' topics)."""
    chats = CHATS + (f"topic: chats{suffix}\n" if suffix else "")
    (shop / "sources" / "chats.yml").write_text(chats)
    (shop / "products" / "chat_counts.yml").write_text(CHAT_COUNTS)
    product = shop / "products" / "customer_360.yml"
    product.write_text(product.read_text() + EMAIL_CHECK)
    config = shop / "tidegate.yml"
    text = config.read_text() + f"consent: {{topic: consent_choices{suffix}}}\n"
    for line in backends.splitlines(keepends=True):  # replaces the demo's own line
        name = line.split(":", 1)[0]
        text = "".join(old for old in text.splitlines(keepends=True) if not old.startswith(name))
        text = text.replace("backends:\n", f"backends:\n{line}", 1)
    config.write_text(text)
    for name, destination in (syncs or {}).items():
        (shop / "syncs" / f"{name}.yml").write_text(
            f"name: {name}\nproduct: marketing_audience\npurpose: marketing.email\n"
            f"destination: {destination}\nmode: upsert\ntrigger: manual\n"
        )
    add_subject(shop)


def chat(n: int, customer: Any, email: str | None) -> dict[str, Any]:
    return {"chat_id": f"c{n}", "customer_id": customer, "email": email, "body": f"hello {n}"}


def populate(platform: Platform, syncs: tuple[str, ...], group: str = "erasure-scan") -> None:
    """Put the subject everywhere: warehouse, products, quality tables, online store,
    destinations, event log (source, consent and change topics), dead letters."""
    from tidegate.privacy.consent_input import consent_message
    from tidegate.products.builder import build_products, load_sources
    from tidegate.runtime.worker import StreamWorker

    consent_ledger_of(platform).record(
        [ConsentEvent(SUBJECT, "marketing.email", "grant", time.time() - 60, "form", "signup")]
    )
    load_sources(platform)
    assert all(r.status == "live" for r in build_products(platform))
    for name in syncs:
        assert run_sync(platform, name).added > 0, name
    assert {loc.sync for loc in platform.meta.subject_locations(SUBJECT)} == set(syncs)
    from tidegate.meta.base import SyncRowError

    now = time.time()
    refused = [  # a row error by subject, and one whose subject was not recorded
        SyncRowError("x1", SUBJECT, "h1", f"email {EMAIL} refused", now, now, 1),
        SyncRowError("x2", None, "h2", f"duplicate key (email)=({EMAIL})", now, now, 1),
    ]
    platform.meta.checkpoint_sync(syncs[0], errors=refused)
    worker = StreamWorker(platform)
    try:
        intake = worker.intake
        result = intake.submit(
            "chats",
            [
                chat(1, int(SUBJECT), EMAIL),
                chat(2, int(OTHER), "someone@example.com"),
                chat(3, "nine-eight-seven", EMAIL),  # subject field does not parse
                {"customer_id": int(SUBJECT), "email": EMAIL},  # no chat id
            ],
            "test",
        )
        assert (result.accepted, len(result.rejected)) == (2, 2), result
        topic = platform.project.config.consent.topic
        assert topic
        body = {"subject": SUBJECT, "purpose": "analytics", "action": "grant", "evidence": EMAIL}
        intake.log.append(topic, [consent_message(body)])
        drain(worker, group)
    finally:
        worker.close()
    with platform.warehouse.cursor() as cur:
        row = cur.execute(
            'SELECT count(*) FROM raw."chats" WHERE customer_id = ?', [int(SUBJECT)]
        ).fetchone()
    assert row is not None
    assert row[0] == 1
    assert platform.online.read("chat_counts", SUBJECT) is not None


def _last_records(log: Any, topic: str) -> dict[int, int]:
    """Per partition, the offset after its last record still held (an erased record
    leaves a gap: a new group has nothing to commit past it)."""
    ends = {}
    for partition, end in log.end_offsets(topic).items():
        offset, last = 0, -1
        while offset < end and (records := log.read(topic, partition, offset, 10_000)):
            last = records[-1].offset
            offset = last + 1
        if last >= 0:
            ends[partition] = last + 1
    return ends


def drain(worker: Any, group: str = "erasure-scan", timeout: float = 60.0) -> int:
    """Feed every record of the worker's topics (from the start, for a new group) through
    it, until the group has committed up to the end of each topic."""
    log = worker.intake.log
    ends = {t: _last_records(log, t) for t in worker.topics}
    consumer = log.consumer(group, worker.topics)
    applied = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            batch = consumer.poll(10_000, 0.5)
            if batch:
                applied += worker.process_batch(batch).applied
                consumer.commit()
                continue
            done = all(
                log.committed(group, topic).get(partition, 0) >= end
                for topic, partitions in ends.items()
                for partition, end in partitions.items()
            )
            if done:
                return applied
            assert time.monotonic() < deadline, f"group {group} did not reach {ends}"
    finally:
        consumer.close()


# ---------------------------------------------------------------- scans


def traces_in_text(text: str) -> bool:
    return SUBJECT in text or EMAIL in text


def scan_duckdb_rows(platform: Platform) -> list[str]:
    """Every text cast of every column of every base table (quality tables included)."""
    found = []
    with platform.warehouse.cursor() as db:
        columns = db.execute(
            "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE t.table_type = 'BASE TABLE' AND t.table_catalog = current_database()"
        ).fetchall()
        assert columns
        for schema, table, column in columns:
            text = f'CAST("{column}" AS VARCHAR)'
            hits = db.execute(
                f'SELECT count(*) FROM "{schema}"."{table}"'
                f" WHERE contains({text}, ?) OR contains({text}, ?)",
                [SUBJECT, EMAIL],
            ).fetchone()
            if hits and hits[0]:
                found.append(f"duckdb {schema}.{table}.{column}: {hits[0]}")
    return found


def scan_sqlite_rows(path: Path) -> list[str]:
    found = []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                text = " ".join(
                    v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row
                )
                if traces_in_text(text):
                    found.append(f"{path.name}:{table}: {text[:200]}")
    finally:
        db.close()
    return found


def scan_file_bytes(shop: Path) -> list[str]:
    """The bytes of every state file: DuckDB (old pages too), SQLite files with their
    write-ahead logs and free pages."""
    found = []
    for path in sorted(shop.rglob("*")):
        if not path.is_file() or path.suffix == ".parquet" or path.suffix == ".yml":
            continue
        if not any(s in path.name for s in (".db", ".duckdb")):
            continue
        data = path.read_bytes()
        for needle in (SUBJECT, EMAIL):
            if needle.encode() in data:
                found.append(f"{path.relative_to(shop)} (bytes): {needle}")
    return found


def scan_log(platform: Platform) -> list[str]:
    """Every record of every topic the project uses, read back from the event log."""
    from tidegate.ingest.intake import open_intake
    from tidegate.products.changes import changes_topic

    intake = open_intake(platform.project)
    found = []
    try:
        namespace = intake.log.namespace
        topics = set(intake.topics) | {
            changes_topic(name, namespace) for name in platform.project.products
        }
        if platform.project.config.consent.topic:
            topics.add(platform.project.config.consent.topic)
        for topic in sorted(topics):
            if not intake.log.has_topic(topic):  # never written: Kafka creates on write
                continue
            ends = intake.log.end_offsets(topic)
            for partition, end in ends.items():
                offset = 0
                while offset < end:
                    records = intake.log.read(topic, partition, offset, 1000)
                    if not records:
                        break
                    for record in records:
                        text = (
                            (record.key or b"").decode("utf-8", "replace")
                            + " "
                            + (record.value or b"").decode("utf-8", "replace")
                        )
                        if traces_in_text(text):
                            found.append(f"log {topic}/{partition}@{record.offset}: {text[:120]}")
                    offset = records[-1].offset + 1
    finally:
        intake.close()
    return found


def topic_of(trace: str) -> str:
    """The topic a `scan_log` trace names."""
    return trace.split(" ", 2)[1].rsplit("/", 1)[0]


def scan_metadata(platform: Platform) -> list[str]:
    """What the metadata store answers through its own interface (either backend)."""
    found = []
    for letter in platform.meta.dead_letters.list(limit=10_000, include_replayed=True):
        if traces_in_text((letter.payload or b"").decode("utf-8", "replace")):
            found.append(f"dead letter {letter.id}")
    for seq, record in platform.audit.records():
        if traces_in_text(json.dumps(record.__dict__, default=str)):
            found.append(f"audit {seq} {record.action}")
    for row in platform.meta.consent_rows():
        if traces_in_text(f"{row.subject} {row.evidence}"):
            found.append(f"consent {row.subject}")
    if platform.meta.subject_locations(SUBJECT):
        found.append("sync state")
    return found
