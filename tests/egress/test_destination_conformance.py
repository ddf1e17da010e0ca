"""One conformance suite for every sync destination: SQLite, and real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tidegate.egress.destinations.base import Destination, destination_class
from tidegate.egress.destinations.postgres.client import PostgresDestination
from tidegate.egress.destinations.sqlite.client import SqliteDestination
from tidegate.errors import TerminalDestinationError, TidegateError

COLUMNS = {"id": "BIGINT", "email": "VARCHAR", "score": "DOUBLE"}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)])
def destination(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Destination]:
    if request.param == "sqlite":
        dest: Destination = SqliteDestination(tmp_path / "crm.db", "people")
    else:
        dest = PostgresDestination(
            request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_table")
        )
    dest.open(COLUMNS, "id")
    yield dest
    dest.close()


def batch(*rows: tuple[int, str, float]) -> pa.Table:
    return pa.Table.from_pylist([{"id": i, "email": e, "score": s} for i, e, s in rows])


def held(dest: Destination) -> dict[int, tuple[str, float]]:
    return {int(r["id"]): (r["email"], float(r["score"])) for r in dest.read_all()}


def test_capabilities_are_declared_as_data(destination: Destination) -> None:
    caps = destination.capabilities
    assert caps.max_batch_rows > 0
    assert isinstance(caps.supports_upsert, bool)
    assert isinstance(caps.supports_delete, bool)


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
    destination.write(batch((1, "new@x", 9.0), (5, "ghost@x", 5.0)), "update")
    assert held(destination) == {1: ("new@x", 9.0)}


def test_insert_of_an_existing_key_is_a_terminal_error(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0)), "insert")
    with pytest.raises(TerminalDestinationError):
        destination.write(batch((1, "again@x", 2.0)), "insert")
    assert held(destination) == {1: ("a@x", 1.0)}


def test_delete_removes_only_the_given_keys(destination: Destination) -> None:
    destination.write(batch((1, "a@x", 1.0), (2, "b@x", 2.0), (3, "c@x", 3.0)), "upsert")
    destination.delete([1, 3])
    assert held(destination) == {2: ("b@x", 2.0)}


def test_registry_finds_builtin_destinations_by_name() -> None:
    assert destination_class("sqlite") is SqliteDestination
    assert destination_class("postgres") is PostgresDestination
    with pytest.raises(TidegateError, match="no destination type"):
        destination_class("carrier_pigeon")
