"""One conformance suite, run against every online store backend (SQLite and real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tidegate.store.online.base import OnlineStore
from tidegate.store.online.codec import decode_row, encode_row
from tidegate.store.online.redis_store import RedisOnlineStore
from tidegate.store.online.sqlite_store import SqliteOnlineStore


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        backend: OnlineStore = SqliteOnlineStore(tmp_path / "online.db")
    else:
        url = request.getfixturevalue("redis_url")
        backend = RedisOnlineStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    yield backend
    if isinstance(backend, RedisOnlineStore):
        for product in ("p", "q"):
            for version in (1, 2, 3):
                backend._drop_version(product, version)
            backend._redis.delete(backend._pointer(product))
    backend.close()


def rows(n: int, tag: str = "a") -> list[tuple[str, str]]:
    return [(str(i), encode_row({"id": i, "tag": tag})) for i in range(n)]


def test_nothing_is_served_before_a_version_is_active(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(3))
    assert store.current_version("p") is None
    assert store.read("p", "1") is None
    assert store.read_many("p", ["0", "1"]) == {}


def test_activate_flips_to_the_complete_new_version(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(5, "old"))
    store.activate("p", 1)
    store.write_batch("p", 2, rows(3, "new"))  # half-written from a reader's view: still v1
    assert decode_row(store.read("p", "4") or "", {})["tag"] == "old"
    store.activate("p", 2)
    assert store.current_version("p") == 2
    assert decode_row(store.read("p", "1") or "", {})["tag"] == "new"
    assert store.read("p", "4") is None  # key only in the retired version is gone


def test_read_many_returns_only_present_keys(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(10))
    store.activate("p", 1)
    found = store.read_many("p", ["1", "5", "99"])
    assert set(found) == {"1", "5"}
    assert decode_row(found["5"], {})["id"] == 5


def test_products_are_isolated(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(2, "p"))
    store.activate("p", 1)
    store.write_batch("q", 1, rows(2, "q"))
    store.activate("q", 1)
    assert decode_row(store.read("p", "0") or "", {})["tag"] == "p"
    assert decode_row(store.read("q", "0") or "", {})["tag"] == "q"


def test_upsert_changes_the_current_version_in_place(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(2))
    store.activate("p", 1)
    store.upsert(
        "p", [("1", encode_row({"id": 1, "tag": "changed"})), ("7", encode_row({"id": 7}))]
    )
    assert decode_row(store.read("p", "1") or "", {})["tag"] == "changed"
    assert store.read("p", "7") is not None
    with pytest.raises(LookupError):
        store.upsert("q", rows(1))


def test_delete_removes_keys(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(4))
    store.activate("p", 1)
    assert store.delete("p", ["1", "2"]) == 2
    assert store.read("p", "1") is None
    assert store.read("p", "3") is not None


def test_typed_values_round_trip_through_the_codec() -> None:
    import datetime as dt

    row = {"d": dt.date(2024, 2, 29), "t": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), "n": None}
    decoded = decode_row(encode_row(row), {"d": "DATE", "t": "TIMESTAMPTZ", "n": "BIGINT"})
    assert decoded == row
