"""Issue 19, items 1 and 3, on every destination of the conformance suite and in every mode:

* a preview says exactly what the following run does (counts, reasons, rows);
* a run's counts are the destination's own: its row count after the run is its row
  count before plus the rows inserted minus the rows deleted, and an `update` sync
  never reports a row the destination does not hold (the reported bug: 10,000 "added"
  to a table of 5,000 rows).

Each case runs two versions of the `people` product through one sync: first 10 rows (8
with consent), then 3 of them (one changed, one revoked) plus a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tidegate.egress.destinations.base import Destination
from tidegate.egress.sync import SyncReport, run_sync
from tidegate.egress.sync.preview import UNCONFIRMED, SyncPreview, preview_sync
from tidegate.egress.sync.report import NOT_FOUND
from tidegate.platform import Platform

SERVICES = pytest.mark.services
KINDS = [
    "sqlite",
    "file-parquet",
    "file-csv",
    "file-jsonl",
    pytest.param("postgres", marks=SERVICES),
    pytest.param("mysql", marks=SERVICES),
    pytest.param("redis", marks=SERVICES),
    pytest.param("kafka", marks=SERVICES),
    "http",
]
MODES = ["insert", "update", "upsert", "mirror"]
COLUMNS = {
    "id": "BIGINT",
    "first_name": "VARCHAR",
    "last_name": "VARCHAR",
    "email": "VARCHAR",
    "score": "DOUBLE",
}


@dataclass
class Target:
    """A destination as the sync's YAML names it, and a handle to read and seed it."""

    yaml: str
    reader: Callable[[], Destination]
    held: Callable[[], dict[int, str]]  # id -> email, as the destination holds them
    seed: Callable[[list[dict[str, Any]]], None]


def _reading(make: Callable[[], Destination]) -> Callable[[], dict[int, str]]:
    def held() -> dict[int, str]:
        dest = make()
        try:
            dest.open(COLUMNS, "id")
            return {int(r["id"]): str(r["email"]) for r in dest.read_all()}
        finally:
            dest.close()

    return held


def _seeding(make: Callable[[], Destination]) -> Callable[[list[dict[str, Any]]], None]:
    def seed(rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        dest = make()
        try:
            dest.open(COLUMNS, "id")
            dest.write(pa.Table.from_pylist(rows), "upsert")
        finally:
            dest.close()

    return seed


@pytest.fixture
def target(
    request: pytest.FixtureRequest, people: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Target]:
    kind: str = request.param
    root: Path = people.root
    cleanup: list[Callable[[], None]] = []
    make: Callable[[], Destination]
    if kind == "sqlite":
        from tidegate.egress.destinations.sqlite.client import SqliteDestination

        yaml = "{type: sqlite, path: crm.db, table: people}"

        def make() -> Destination:
            return SqliteDestination(root / "crm.db", "people")
    elif kind.startswith("file-"):
        from tidegate.egress.destinations.files.client import FileDestination

        fmt = kind.removeprefix("file-")
        yaml = f"{{type: file, path: out/people.{fmt}}}"

        def make() -> Destination:
            return FileDestination(root / "out" / f"people.{fmt}", fmt)
    elif kind == "postgres":
        from tidegate.egress.destinations.postgres.client import PostgresDestination

        dsn, table = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_table")
        monkeypatch.setenv("T_PG", dsn)
        yaml = f"{{type: postgres, dsn_env: T_PG, table: {table}}}"

        def make() -> Destination:
            return PostgresDestination(dsn, table)
    elif kind == "mysql":
        from tidegate.egress.destinations.mysql.client import MysqlDestination, connect_args

        dsn = request.getfixturevalue("mysql_dsn")
        table = f"t_{uuid.uuid4().hex[:12]}"
        monkeypatch.setenv("T_MYSQL", dsn)
        yaml = f"{{type: mysql, dsn_env: T_MYSQL, table: {table}}}"

        def make() -> Destination:
            return MysqlDestination(dsn, table)

        def drop() -> None:
            import pymysql

            with pymysql.connect(**connect_args(dsn)) as conn, conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS `{table}`")

        cleanup.append(drop)
    elif kind == "redis":
        from tidegate.egress.destinations.redis.client import RedisDestination

        url = request.getfixturevalue("redis_url")
        prefix = f"test:{uuid.uuid4().hex[:10]}"
        monkeypatch.setenv("T_REDIS", url)
        yaml = f"{{type: redis, url_env: T_REDIS, key_template: '{prefix}:{{key}}'}}"

        def make() -> Destination:
            return RedisDestination(url, f"{prefix}:{{key}}")

        def flush() -> None:
            dest = make()
            dest.open(COLUMNS, "id")
            dest.delete([r["id"] for r in dest.read_all()])
            dest.close()

        cleanup.append(flush)
    elif kind == "kafka":
        from confluent_kafka.admin import AdminClient

        from tidegate.egress.destinations.kafka.client import KafkaDestination

        bootstrap = request.getfixturevalue("kafka_bootstrap")
        topic = f"tidegate-counts-{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("T_KAFKA", bootstrap)
        yaml = f"{{type: kafka, bootstrap_env: T_KAFKA, topic: {topic}, partitions: 1}}"

        def make() -> Destination:
            return KafkaDestination(bootstrap, topic, partitions=1)

        cleanup.append(lambda: AdminClient({"bootstrap.servers": bootstrap}).delete_topics([topic]))
    else:
        from tidegate.egress.destinations.http.client import HttpDestination

        server = request.getfixturevalue("crm_server")
        yaml = f"{{type: http, url: '{server.url}'}}"

        def make() -> Destination:
            return HttpDestination(server.url)

        def http_held() -> dict[int, str]:
            return {int(r["id"]): str(r["email"]) for r in server.held()}

        def http_seed(rows: list[dict[str, Any]]) -> None:
            for row in rows:
                server.rows[str(row["id"])] = row

        yield Target(yaml, make, http_held, http_seed)
        return
    yield Target(yaml, make, _reading(make), _seeding(make))
    for step in cleanup:
        step()


def same(preview: SyncPreview, report: SyncReport) -> None:
    """The preview said what the run did."""
    said = (preview.insert, preview.update, preview.delete, preview.unchanged)
    assert said == (report.added, report.changed, report.removed, report.unchanged)
    assert preview.delete_for_consent == report.revoked
    assert preview.skipped == report.skipped
    assert preview.withheld == report.withheld
    assert report.failed == 0
    assert not report.retries


def capabilities(target: Target) -> Any:
    dest = target.reader()
    try:
        return dest.capabilities
    finally:
        dest.close()


def supported(target: Target, mode: str) -> bool:
    return ("upsert" if mode == "mirror" else mode) in capabilities(target).modes


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("target", KINDS, indirect=True)
def test_preview_equals_the_run_and_counts_are_the_destinations(
    people: Any, target: Target, mode: str
) -> None:
    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    people.sync("crm", f"purpose: crm\ndestination: {target.yaml}\nmode: {mode}\ntrigger: manual\n")
    if not supported(target, mode):  # the capability is data: such a sync is refused, clearly
        from tidegate.errors import TidegateError

        with Platform.open(people.root) as platform, pytest.raises(TidegateError) as refused:
            run_sync(platform, "crm")
        assert mode in str(refused.value)
        assert not target.held()  # nothing written
        return
    if mode == "update":  # an update sync works on rows someone else put there
        target.seed([people.row(i) for i in range(1, 5)])
    with Platform.open(people.root) as platform:
        people.grant(platform, list(range(1, 9)))  # 9 and 10: no consent
        before = target.held()
        runs = len(platform.meta.runs("sync", "crm"))
        first_look = preview_sync(platform, "crm")
        assert target.held() == before  # a preview writes nothing...
        assert platform.meta.synced_count("crm") == 0  # ...and keeps no state
        assert len(platform.meta.runs("sync", "crm")) == runs
        first = run_sync(platform, "crm")
        if mode == "update" and not capabilities(target).supports_lookup:
            # only the destination knows what it holds: the preview sends all, says so
            assert (first_look.update, first.changed) == (8, 4)
            assert first_look.notes == [UNCONFIRMED]
            return
        same(first_look, first)
        after = target.held()
        assert len(after) == len(before) + first.added - first.removed
        assert first.withheld == {"no consent for purpose 'crm' (legal basis: consent)": 2}
        if mode == "update":
            assert (first.added, first.changed) == (0, 4)
            assert first.skipped == {NOT_FOUND: 4}
            assert len(after) == 4
        else:
            assert (first.added, first.changed) == (8, 0)
        # the sample is the rows as the destination got them
        assert {r["id"]: r["email"] for r in first_look.sample} == {
            i: e for i, e in after.items() if i in {r["id"] for r in first_look.sample}
        }
        assert len(first_look.sample) == first.added + first.changed

    people.set_rows(
        [people.row(1, email="new1@example.com"), people.row(2), people.row(3), people.row(11)]
    )
    people.build()
    with Platform.open(people.root) as platform:
        people.grant(platform, [11])
        people.revoke(platform, [2])
        before = target.held()
        state = platform.meta.synced_count("crm")
        second_look = preview_sync(platform, "crm")
        assert target.held() == before
        assert platform.meta.synced_count("crm") == state
        second = run_sync(platform, "crm")
        same(second_look, second)
        after = target.held()
        assert len(after) == len(before) + second.added - second.removed
        assert second.revoked == 1
        assert 2 not in after
        expected = {
            "insert": (1, 0, 1, 8),  # added 11; row 1 changed but insert does not update
            "update": (0, 1, 1, 3),  # 11 is not at the destination: skipped
            "upsert": (1, 1, 1, 8),
            "mirror": (1, 1, 6, 3),  # 4..8 left the product, 2 revoked
        }[mode]
        assert (second.added, second.changed, second.removed, len(after)) == expected
        if mode != "insert":
            assert after[1] == "new1@example.com"


def test_a_preview_creates_nothing_at_a_destination_that_does_not_exist_yet(people: Any) -> None:
    import sqlite3

    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: upsert\ntrigger: manual\n",
    )
    people.sync(
        "files",
        "purpose: ops\ndestination: {type: file, path: out/people.csv}\ntrigger: manual\n",
    )
    with Platform.open(people.root) as platform:
        look = preview_sync(platform, "crm")
        assert (look.insert, look.update, look.delete) == (3, 0, 0)
        assert preview_sync(platform, "files").insert == 3
        assert platform.meta.runs("sync") == []
        previews = [r for _, r in platform.audit.records() if r.action == "sync_preview"]
        assert [r.detail["sync"] for r in previews] == ["crm", "files"]
    assert not (people.root / "out" / "people.csv").exists()
    if (people.root / "crm.db").exists():  # the file may be opened, never given a table
        with sqlite3.connect(people.root / "crm.db") as db:
            assert db.execute("SELECT name FROM sqlite_master").fetchall() == []
