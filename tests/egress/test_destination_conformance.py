"""One conformance suite for every sync destination, each against its real server.

SQLite and files are local; PostgreSQL, MariaDB, Redis and Kafka are the servers from
scripts/services.sh; the HTTP destination talks to a local "CRM" server the test starts
(tests/egress/conftest.py), which applies what it receives. Where a destination cannot
do something, the test reads that from its capabilities, never from its name.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from tidegate.egress.destinations.base import Destination, _load_builtin, destination_class
from tidegate.egress.destinations.files.client import FileDestination
from tidegate.egress.destinations.http.client import HttpDestination
from tidegate.egress.destinations.kafka.client import KafkaDestination
from tidegate.egress.destinations.mysql.client import MysqlDestination
from tidegate.egress.destinations.postgres.client import PostgresDestination
from tidegate.egress.destinations.redis.client import RedisDestination
from tidegate.egress.destinations.sqlite.client import SqliteDestination
from tidegate.errors import TerminalDestinationError, TidegateError

COLUMNS = {"id": "BIGINT", "email": "VARCHAR", "score": "DOUBLE"}
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


class ReadableHttp(HttpDestination):
    """The HTTP destination, read back from what the test's server applied."""

    server: Any = None

    def read_all(self) -> list[dict[str, Any]]:
        return list(self.server.held())


def _mysql(request: pytest.FixtureRequest) -> Iterator[Destination]:
    import pymysql

    from tidegate.egress.destinations.mysql.client import connect_args

    dsn = request.getfixturevalue("mysql_dsn")
    table = f"t_{uuid.uuid4().hex[:12]}"
    dest = MysqlDestination(dsn, table)
    yield dest
    with pymysql.connect(**connect_args(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{table}`")


def _redis(request: pytest.FixtureRequest) -> Iterator[Destination]:
    url = request.getfixturevalue("redis_url")
    dest = RedisDestination(url, f"test:{uuid.uuid4().hex[:10]}:{{sync}}:{{key}}")
    dest.sync_name = "people"
    yield dest
    for row in dest.read_all():
        dest.delete([row["id"]])


def _kafka(request: pytest.FixtureRequest) -> Iterator[Destination]:
    from confluent_kafka.admin import AdminClient

    bootstrap = request.getfixturevalue("kafka_bootstrap")
    topic = f"tidegate-conformance-{uuid.uuid4().hex[:8]}"
    dest = KafkaDestination(bootstrap, topic, partitions=2)
    dest.sync_name = "people"
    yield dest
    AdminClient({"bootstrap.servers": bootstrap}).delete_topics([topic])


def _http(request: pytest.FixtureRequest) -> Iterator[Destination]:
    server = request.getfixturevalue("crm_server")
    dest = ReadableHttp(server.url)
    dest.server = server
    dest.sync_name = "people"
    yield dest


@pytest.fixture(params=KINDS)
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Destination]:
    kind: str = request.param
    factories: dict[str, Any] = {"mysql": _mysql, "redis": _redis, "kafka": _kafka, "http": _http}
    if kind == "sqlite":
        made: Iterator[Destination] = iter([SqliteDestination(tmp_path / "crm.db", "people")])
    elif kind.startswith("file-"):
        fmt = kind.removeprefix("file-")
        made = iter([FileDestination(tmp_path / f"people.{fmt}", fmt)])
    elif kind == "postgres":
        made = iter(
            [
                PostgresDestination(
                    request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_table")
                )
            ]
        )
    else:
        made = factories[kind](request)
    dest = next(made)
    dest.open(COLUMNS, "id")
    yield dest
    dest.close()
    for _ in made:  # the factory's cleanup
        pass


def batch(*rows: tuple[int, str, float]) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "email": e, "score": s} for i, e, s in rows])


def held(dest: Destination) -> dict[int, tuple[str, float]]:
    return {int(r["id"]): (r["email"], float(r["score"])) for r in dest.read_all()}


def test_capabilities_are_declared_as_data(destination: Destination) -> None:
    caps = destination.capabilities
    assert caps.max_batch_rows > 0
    assert isinstance(caps.supports_upsert, bool)
    assert isinstance(caps.supports_delete, bool)
    assert "upsert" in caps.modes
    assert set(caps.modes) <= {"insert", "update", "upsert"}


def test_upsert_inserts_then_updates(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0), (2, "b@x", 2.0)), "upsert")
    destination.write(batch((2, "b2@x", 2.5), (3, "c@x", 3.0)), "upsert")
    assert held(destination) == {1: ("a@x", 1.0), 2: ("b2@x", 2.5), 3: ("c@x", 3.0)}


def test_upsert_is_idempotent(destination: Destination) -> None:
    rows = batch((1, "a@x", 1.0), (2, "b@x", 2.0))
    destination.write(rows, "upsert")
    destination.write(rows, "upsert")
    assert len(destination.read_all()) == 2


def test_update_touches_only_existing_rows(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0)), "upsert")
    if "update" not in destination.capabilities.modes:
        with pytest.raises(TerminalDestinationError, match="update"):
            destination.write(batch((1, "new@x", 9.0)), "update")
        return
    destination.write(batch((1, "new@x", 9.0), (5, "ghost@x", 5.0)), "update")
    assert held(destination) == {1: ("new@x", 9.0)}


def test_insert_of_an_existing_key_is_a_terminal_error(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0)), "insert")
    if not destination.capabilities.unique_keys:
        # an append-only log: the insert is one more event; readers fold to the latest
        destination.write(batch((1, "again@x", 2.0)), "insert")
        assert held(destination) == {1: ("again@x", 2.0)}
        return
    with pytest.raises(TerminalDestinationError):
        destination.write(batch((1, "again@x", 2.0)), "insert")
    assert held(destination) == {1: ("a@x", 1.0)}


def test_a_rejected_insert_names_the_row_and_lands_the_rest(destination: Destination) -> None:
    from tidegate.egress.destinations.base import RowErrors

    if not destination.capabilities.unique_keys:
        return
    destination.write(batch((1, "a@x", 1.0)), "insert")
    with pytest.raises(TerminalDestinationError) as caught:
        destination.write(batch((2, "b@x", 2.0), (1, "dup@x", 9.0), (3, "c@x", 3.0)), "insert")
    if isinstance(caught.value, RowErrors):  # destinations that answer per row
        assert set(caught.value.rows) == {1}
        assert caught.value.rows[1]
        assert held(destination) == {1: ("a@x", 1.0), 2: ("b@x", 2.0), 3: ("c@x", 3.0)}
    else:  # all-or-nothing batches: nothing of this one landed, and the engine bisects
        assert caught.value.message
        assert held(destination) == {1: ("a@x", 1.0)}


def test_delete_removes_only_the_given_keys(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0), (2, "b@x", 2.0), (3, "c@x", 3.0)), "upsert")
    destination.delete([1, 3])
    assert held(destination) == {2: ("b@x", 2.0)}


def test_lookup_reports_the_keys_held(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0), (2, "b@x", 2.0)), "upsert")
    if not destination.capabilities.supports_lookup:
        with pytest.raises(TerminalDestinationError):
            destination.existing_keys([1, 2, 3])
        return
    assert destination.existing_keys([1, 2, 3]) == {"1", "2"}


def test_registry_finds_builtin_destinations_by_name() -> None:
    assert destination_class("sqlite") is SqliteDestination
    assert destination_class("postgres") is PostgresDestination
    assert destination_class("mysql") is MysqlDestination
    assert destination_class("redis") is RedisDestination
    assert destination_class("kafka") is KafkaDestination
    assert destination_class("http") is HttpDestination
    assert destination_class("file") is FileDestination
    with pytest.raises(TidegateError, match="no destination type"):
        destination_class("carrier_pigeon")


def test_every_registered_destination_is_in_this_suite() -> None:
    from tidegate.egress.destinations.base import _REGISTRY

    _load_builtin()
    covered = {str(k.values[0] if hasattr(k, "values") else k).split("-")[0] for k in KINDS}
    assert set(_REGISTRY) <= covered
