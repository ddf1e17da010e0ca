"""One conformance suite, run against every online store backend (SQLite and real Redis)."""

from __future__ import annotations

import threading
import time
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
        for product in ("p", "q", "nothing_here"):
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


# ---------------------------------------------------------------- entries, freshness, TTL


def test_entries_carry_version_and_write_time(store: OnlineStore) -> None:
    before = time.time()
    store.write_batch("p", 1, rows(3))
    store.activate("p", 1)
    entry = store.read_entry("p", "2")
    assert entry is not None
    assert entry.version == 1
    assert before - 0.01 <= entry.written_at <= time.time() + 0.01
    time.sleep(0.02)
    store.upsert("p", [("2", encode_row({"id": 2, "tag": "later"}))])
    updated = store.read_entry("p", "2")
    assert updated is not None
    assert updated.written_at > entry.written_at  # an in-place update is fresher
    assert updated.version == 1
    untouched = store.read_entry("p", "1")
    assert untouched is not None
    assert untouched.written_at == pytest.approx(entry.written_at, abs=1e-3)


def test_expired_values_are_not_served(store: OnlineStore) -> None:
    store.set_ttl("p", 0.2)
    store.write_batch("p", 1, rows(3))
    store.activate("p", 1)
    assert store.read("p", "1") is not None
    time.sleep(0.3)
    assert store.read("p", "1") is None
    assert store.read_many("p", ["0", "1", "2"]) == {}
    store.upsert("p", [("1", encode_row({"id": 1}))])  # rewritten: fresh again
    assert store.read("p", "1") is not None
    assert store.read("p", "0") is None


def test_ttl_is_applied_on_read_not_only_by_the_backend(store: OnlineStore) -> None:
    """feast#1802: a TTL must hold on read, whatever the backend still keeps."""
    store.write_batch("p", 1, rows(2))
    store.activate("p", 1)
    time.sleep(0.05)
    assert store.read("p", "0") is not None  # no TTL yet: served
    store.set_ttl("p", 0.01)  # written without a TTL, so the backend still holds it
    assert store.read("p", "0") is None
    assert store.read_entries("p", ["0", "1"]) == {}
    store.set_ttl("p", None)
    assert store.read("p", "0") is not None


def test_ttl_is_per_product(store: OnlineStore) -> None:
    store.set_ttl("p", 0.01)
    for product in ("p", "q"):
        store.write_batch(product, 1, rows(1))
        store.activate(product, 1)
    time.sleep(0.05)
    assert store.read("p", "0") is None
    assert store.read("q", "0") is not None


def test_purge_keeps_unexpired_values(store: OnlineStore) -> None:
    store.set_ttl("p", 0.05)
    store.write_batch("p", 1, rows(2))
    store.activate("p", 1)
    store.write_batch("q", 1, rows(2))
    store.activate("q", 1)
    time.sleep(0.1)
    store.purge_expired()
    assert store.read("p", "0") is None
    assert store.read("q", "0") is not None


def test_invalid_ttl_is_refused(store: OnlineStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        store.set_ttl("p", 0)


# ---------------------------------------------------------------- versions under change


def test_batch_reads_see_one_version_across_chunks(store: OnlineStore) -> None:
    keys = [str(i) for i in range(1200)]
    store.write_batch("p", 1, rows(1200, "v1"))
    store.activate("p", 1)
    found = store.read_entries("p", keys)
    assert len(found) == 1200
    assert {e.version for e in found.values()} == {1}
    store.write_batch("p", 2, rows(1200, "v2"))
    store.activate("p", 2)
    found = store.read_entries("p", keys)
    assert {e.version for e in found.values()} == {2}
    assert {decode_row(e.value, {})["tag"] for e in found.values()} == {"v2"}


def test_readers_never_see_a_half_written_version_while_building(store: OnlineStore) -> None:
    """A reader thread during a build of v2 and its activation sees v1 or v2, whole."""
    store.write_batch("p", 1, rows(200, "v1"))
    store.activate("p", 1)
    seen: list[set[str]] = []
    stop = threading.Event()

    def read_loop() -> None:
        while not stop.is_set():
            found = store.read_many("p", [str(i) for i in range(200)])
            seen.append({decode_row(v, {})["tag"] for v in found.values()} | {f"n{len(found)}"})

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for start in range(0, 200, 50):  # v2 written in pieces, as a build does
            store.write_batch("p", 2, rows(200, "v2")[start : start + 50])
        store.activate("p", 2)
        time.sleep(0.05)
    finally:
        stop.set()
        reader.join()
    assert seen
    assert all(s in ({"v1", "n200"}, {"v2", "n200"}) for s in seen), seen[:5]


def test_delete_reaches_a_version_being_built(store: OnlineStore) -> None:
    """Erasure during a build: the subject must not come back when v2 activates."""
    store.write_batch("p", 1, rows(3))
    store.activate("p", 1)
    store.write_batch("p", 2, rows(3))
    store.delete("p", ["1"])
    store.activate("p", 2)
    assert store.read("p", "1") is None
    assert store.read("p", "2") is not None


def test_unknown_product_reads_nothing(store: OnlineStore) -> None:
    assert store.read_entries("nothing_here", ["1"]) == {}
    assert store.read_entry("nothing_here", "1") is None
    assert store.read_entries("p", []) == {}


def test_keys_lists_the_current_version_only(store: OnlineStore) -> None:
    assert store.keys("p") == []
    store.write_batch("p", 1, rows(3))
    assert store.keys("p") == []  # not active yet
    store.activate("p", 1)
    store.write_batch("p", 2, [("new*[key]", "{}")])
    store.write_batch("other", 1, rows(2))
    store.activate("other", 1)
    assert sorted(store.keys("p")) == sorted(k for k, _ in rows(3))
    store.activate("p", 2)
    assert store.keys("p") == ["new*[key]"]


# ---------------------------------------------------------------- writers in other processes


def _write_from_another_process(pickled_spec: bytes, start: int, count: int) -> None:
    """A forked child: only the pickled spec crosses over, as with a Spark task."""
    import pickle

    from tidegate.store.online import open_writer

    writer = open_writer(pickle.loads(pickled_spec))
    try:
        for offset in range(0, count, 50):  # many small transactions, to interleave
            batch = [
                (str(i), encode_row({"id": i, "tag": "child"}))
                for i in range(start + offset, start + min(offset + 50, count))
            ]
            writer.write_batch("p", 2, batch)
    finally:
        writer.close()


def test_writer_spec_is_plain_data_with_the_stores_capabilities(store: OnlineStore) -> None:
    import pickle

    store.set_ttl("p", 3_600)
    spec = store.writer_spec()
    assert pickle.loads(pickle.dumps(spec)) == spec
    assert spec.kind == store.kind
    assert (spec.shared, spec.same_host) == (type(store).shared, type(store).same_host)
    assert spec.ttls == {"p": 3_600.0}
    # both backends take many writer processes; only a SQLite file binds them to one host
    assert spec.shared
    assert spec.same_host == (store.kind == "sqlite")


def test_writers_opened_from_the_spec_write_a_version_from_many_processes(
    store: OnlineStore,
) -> None:
    """Four processes write one version at once (what Spark's tasks do); nothing is
    served until the one activation, and then every row of every writer is."""
    import multiprocessing
    import pickle

    store.write_batch("p", 1, rows(3, "old"))
    store.activate("p", 1)
    pickled = pickle.dumps(store.writer_spec())
    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=_write_from_another_process, args=(pickled, n * 500, 500))
        for n in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    assert decode_row(store.read("p", "1") or "", {})["tag"] == "old"  # not active yet
    assert store.read("p", "1999") is None
    store.activate("p", 2)
    keys = [str(i) for i in range(2_000)]
    found = store.read_many("p", keys)
    assert sorted(found, key=int) == keys
    assert {decode_row(v, {})["tag"] for v in found.values()} == {"child"}


def test_a_writer_from_the_spec_applies_the_products_ttl(store: OnlineStore) -> None:
    from tidegate.store.online import open_writer

    store.set_ttl("p", 0.05)
    writer = open_writer(store.writer_spec())
    try:
        assert writer.ttl("p") == 0.05
        writer.write_batch("p", 1, rows(2))
    finally:
        writer.close()
    store.activate("p", 1)
    time.sleep(0.2)
    store.set_ttl("p", None)  # the reader's TTL gone: what remains is the writer's doing
    store.purge_expired()  # SQLite expires by its `expires_at`; Redis already forgot (PX)
    assert store.read("p", "1") is None


def test_discard_forgets_a_failed_version_but_never_the_current_one(store: OnlineStore) -> None:
    store.write_batch("p", 1, rows(3, "live"))
    store.activate("p", 1)
    store.write_batch("p", 2, rows(3, "failed"))
    store.discard("p", 2)
    store.discard("p", 1)  # the current version: kept
    assert decode_row(store.read("p", "2") or "", {})["tag"] == "live"
    store.activate("p", 2)  # what was discarded is not there to serve
    assert store.read_many("p", ["0", "1", "2"]) == {}
