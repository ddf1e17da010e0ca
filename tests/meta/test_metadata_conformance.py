"""One metadata conformance suite, run against SQLite and the real PostgreSQL.

Every `MetadataStore` method and part, the migrations, change detection, and two
processes writing the audit chain and the consent ledger at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from tidegate.errors import ConfigError, TidegateError
from tidegate.meta import open_metadata
from tidegate.meta.base import (
    ApiKeyRow,
    ConsentRow,
    MetadataStore,
    ProductVersion,
    StoredAuditRecord,
    SyncedRow,
    SyncRowError,
)
from tidegate.meta.migrations import latest, migrations
from tidegate.meta.parts import DeadLetter, SchemaSnapshot, SlotState
from tidegate.project.models import BackendsConfig

SRC = Path(__file__).resolve().parents[2] / "src"

Opener = Callable[[], MetadataStore]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.services)],
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(type, config) of a fresh metadata store: a file, or a schema of its own."""
    if request.param == "sqlite":
        yield "sqlite", {"type": "sqlite", "path": str(tmp_path / "metadata.db")}
        return
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"meta_{uuid.uuid4().hex[:12]}"
    yield "postgres", {"type": "postgres", "dsn": dsn, "schema": schema}
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def opener(config: dict[str, str], root: Path) -> Opener:
    parsed = BackendsConfig.model_validate({"metadata": config}).metadata
    return lambda: open_metadata(parsed, root)


@pytest.fixture
def open_store(backend: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[Opener]:
    opened: list[MetadataStore] = []

    def make() -> MetadataStore:
        store = opener(backend[1], tmp_path)()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> MetadataStore:
    return open_store()


def consent(subject: str, purpose: str = "marketing.email", action: str = "grant") -> ConsentRow:
    return ConsentRow(0, subject, purpose, action, 100.0, "test", f"ev-{subject}", None, 101.0)


def chained(body: str) -> Callable[[StoredAuditRecord | None], list[StoredAuditRecord]]:
    """A chain step: the next record after `last`, linked by sha256(prev hash + body)."""

    def step(last: StoredAuditRecord | None) -> list[StoredAuditRecord]:
        prev = last.hash if last else ""
        digest = hashlib.sha256((prev + body).encode()).hexdigest()
        return [StoredAuditRecord((last.seq if last else 0) + 1, body, prev, digest)]

    return step


def assert_chain_intact(records: list[StoredAuditRecord]) -> None:
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    prev = ""
    for record in records:
        assert record.prev_hash == prev, f"record {record.seq} does not link to its predecessor"
        expected = hashlib.sha256((prev + record.body).encode()).hexdigest()
        assert record.hash == expected
        prev = record.hash


# ---------------------------------------------------------------- migrations


def test_migrations_are_applied_once_and_recorded(open_store: Opener) -> None:
    backend_name = type(open_store()).__name__
    first = open_store()
    assert first.schema_version() == latest("sqlite" if "Sqlite" in backend_name else "postgres")
    first.append_consent([consent("1")])
    again = open_store()  # re-open: nothing re-applied, nothing lost
    assert again.schema_version() == first.schema_version()
    assert [r.subject for r in again.consent_rows()] == ["1"]


def test_a_store_one_migration_behind_is_upgraded_on_open(
    backend: tuple[str, dict[str, str]], open_store: Opener
) -> None:
    """The latest migration is undone (its tables dropped, its record removed); opening
    the store applies it again."""
    first = open_store()
    first.freshness.sample([("kept?", 1.0, 1.0, True)])
    first.close()
    version = latest(backend[0])
    newest = migrations(backend[0])[-1]
    undo = [
        *(
            f"DROP TABLE {t}"
            for t in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", newest.sql)
        ),
        f"DELETE FROM schema_migrations WHERE version = {version}",
    ]
    if backend[0] == "sqlite":
        db = sqlite3.connect(backend[1]["path"])
        for statement in undo:
            db.execute(statement)
        db.commit()
        db.close()
    else:
        import psycopg

        with psycopg.connect(backend[1]["dsn"], autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{backend[1]["schema"]}"')
            for statement in undo:
                conn.execute(statement)
    upgraded = open_store()
    assert upgraded.schema_version() == version
    # the newest migration's tables are back, empty; the others kept their rows
    assert upgraded.audit_subject_seqs("7") == []
    assert upgraded.freshness.compliance(0.0) != {}
    upgraded.freshness.sample([("new", 1.0, 1.0, True)])
    assert upgraded.cdc_positions.states() == []


def test_a_metadata_file_of_the_previous_schema_opens(tmp_path: Path) -> None:
    """A file written before migrations existed: its rows stay, it is stamped."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE consent_ledger (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " subject TEXT NOT NULL, purpose TEXT NOT NULL, action TEXT NOT NULL,"
        " occurred_at REAL NOT NULL, source TEXT NOT NULL, evidence TEXT NOT NULL,"
        " expires_at REAL, recorded_at REAL NOT NULL);"
        "INSERT INTO consent_ledger VALUES (1, '7', 'analytics', 'grant', 1, 's', 'e', NULL, 2);"
        "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,"
        " reason TEXT NOT NULL, payload BLOB, key BLOB, at REAL NOT NULL, via TEXT NOT NULL,"
        " topic TEXT, partition INTEGER, offset INTEGER, replayed_at REAL,"
        " UNIQUE (topic, partition, offset));"
        "INSERT INTO dead_letters (source, reason, at, via) VALUES ('orders', 'bad', 1, 'http');"
    )
    db.close()
    store = opener({"type": "sqlite", "path": str(path)}, tmp_path)()
    try:
        assert store.schema_version() == latest("sqlite")
        assert [(r.seq, r.subject) for r in store.consent_rows()] == [(1, "7")]
        assert store.dead_letters.count() == 1
        assert store.append_consent([consent("8")]) == [2]
    finally:
        store.close()
    applied = sqlite3.connect(path).execute("SELECT version FROM schema_migrations").fetchall()
    assert sorted(v for (v,) in applied) == list(range(1, latest("sqlite") + 1))


def test_metadata_config_is_a_union_by_type() -> None:
    with pytest.raises(ValueError, match="exactly one of dsn or dsn_env"):
        BackendsConfig.model_validate({"metadata": {"type": "postgres"}})
    with pytest.raises(ValueError, match="postgres"):
        BackendsConfig.model_validate({"metadata": {"type": "oracle"}})
    parsed = BackendsConfig.model_validate(
        {"metadata": {"type": "postgres", "dsn_env": "TIDEGATE_TEST_UNSET_DSN"}}
    ).metadata
    with pytest.raises(TidegateError, match="TIDEGATE_TEST_UNSET_DSN is unset"):
        open_metadata(parsed, Path("."))


def test_capabilities_are_the_registered_data(
    backend: tuple[str, dict[str, str]], store: MetadataStore
) -> None:
    from tidegate.meta.registry import backend as registered

    assert store.capabilities == registered(backend[0]).capabilities
    assert store.capabilities.shared_across_hosts == (backend[0] == "postgres")


def test_an_unknown_backend_name_is_a_config_error() -> None:
    from tidegate.meta.registry import backend

    with pytest.raises(ConfigError):
        backend("oracle")


# ---------------------------------------------------------------- runs, versions


def test_runs_and_versions(store: MetadataStore) -> None:
    first = store.start_run("build", "a")
    second = store.start_run("sync", "b")
    assert second > first
    store.finish_run(first, "ok", {"rows": 3})
    runs = store.runs()
    assert [r["run_id"] for r in runs] == [second, first]
    assert runs[1]["stats"] == {"rows": 3}
    assert runs[1]["status"] == "ok"
    assert [r["run_id"] for r in store.runs(kind="sync")] == [second]
    assert [r["run_id"] for r in store.runs(target="a")] == [first]
    assert [r["run_id"] for r in store.runs(kind="sync", target="a")] == []
    assert [(k, t, s) for k, t, s, _ in store.finished_runs()] == [("build", "a", "ok")]

    assert store.next_version("p") == 1
    store.publish_version(ProductVersion("p", 1, "p__v1", 10, 1.0, "live"))
    store.publish_version(ProductVersion("p", 2, "p__v2", 12, 2.0, "live"))
    live = store.live_version("p")
    assert live is not None
    assert live.version == 2
    assert live.rows == 12
    assert [(v.version, v.status) for v in store.versions("p")] == [(1, "retired"), (2, "live")]
    assert store.next_version("p") == 3
    assert store.live_version("q") is None
    # publishing a version again replaces it (a rebuild), and may make an older one live
    store.publish_version(ProductVersion("p", 1, "p__v1b", 11, 3.0, "live"))
    assert [(v.version, v.table, v.status) for v in store.versions("p")] == [
        (1, "p__v1b", "live"),
        (2, "p__v2", "retired"),
    ]
    assert store.live_version("p") == ProductVersion("p", 1, "p__v1b", 11, 3.0, "live")


# ---------------------------------------------------------------- consent, keys, change token


def test_consent_ledger_and_change_token(store: MetadataStore) -> None:
    token = store.change_token()
    assert store.append_consent([]) == []
    assert store.change_token() == token  # nothing appended: no cache invalidated
    seqs = store.append_consent([consent("1"), consent("2", action="revoke")])
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 2
    assert store.change_token() != token
    assert [r.action for r in store.consent_history("2")] == ["revoke"]
    assert [r.seq for r in store.consent_rows(seqs[0])] == [seqs[1]]
    row = store.consent_history("1")[0]
    assert (row.purpose, row.evidence, row.expires_at) == ("marketing.email", "ev-1", None)


def test_audit_appends_do_not_move_the_change_token(store: MetadataStore) -> None:
    token = store.change_token()
    store.append_audit_chained(chained("a"))
    store.start_run("build", "x")
    store.checkpoint_sync("s", upserted=[SyncedRow("k", "h", "1")])
    assert store.change_token() == token


def test_api_keys(store: MetadataStore) -> None:
    token = store.change_token()
    store.add_api_key(ApiKeyRow("k1", "hash", "alice", ("analyst", "support"), 1.0, None, None))
    assert store.change_token() != token
    key = store.api_key("k1")
    assert key is not None
    assert key.roles == ("analyst", "support")
    assert key.revoked_at is None
    assert [k.key_id for k in store.api_keys()] == ["k1"]
    token = store.change_token()
    assert store.revoke_api_key("k1", 5.0)
    assert store.change_token() != token
    assert not store.revoke_api_key("k1", 6.0)
    revoked = store.api_key("k1")
    assert revoked is not None
    assert revoked.revoked_at == 5.0
    assert store.api_key("nope") is None


def test_a_change_in_another_connection_moves_the_token(open_store: Opener) -> None:
    reader, writer = open_store(), open_store()
    before = reader.change_token()
    writer.append_consent([consent("9", action="revoke")])
    assert reader.change_token() != before


# ---------------------------------------------------------------- audit


def test_audit_chain_storage(store: MetadataStore) -> None:
    assert store.last_audit() is None
    for body in ("a", "b", "c"):
        store.append_audit_chained(chained(body))
    records = store.audit_records()
    assert_chain_intact(records)
    last = store.last_audit()
    assert last is not None
    assert last.seq == 3
    assert [r.seq for r in store.audit_records(after_seq=1, limit=1)] == [2]
    store.append_audit([StoredAuditRecord(4, "d ünï", records[-1].hash, "x")])
    assert store.audit_records(after_seq=3)[0].body == "d ünï"
    with pytest.raises(Exception):  # noqa: B017, PT011 - a duplicate seq is refused
        store.append_audit([StoredAuditRecord(4, "again", "x", "y")])


def test_every_subject_a_record_carried_is_stored_beside_it(store: MetadataStore) -> None:
    """`audit_subjects`: found by subject (and type), renamed by an erasure; the body and
    the chain are not touched."""
    carried = tuple(str(i) for i in range(5000))
    records = [
        StoredAuditRecord(1, '{"a":1}', "g", "h1", subjects=carried, subject_type="customer"),
        StoredAuditRecord(2, '{"a":2}', "h1", "h2", subjects=("42",), subject_type=""),
        StoredAuditRecord(3, '{"a":3}', "h2", "h3", subjects=("42", "42"), subject_type="employee"),
    ]
    store.append_audit_chained(lambda last: records)
    assert store.audit_subject_seqs("4999") == [1]
    assert store.audit_subject_seqs("42") == [1, 2, 3]
    assert store.audit_subject_seqs("42", "customer") == [1]
    assert store.audit_subject_seqs("42", "employee") == [3]
    assert store.redact_audit_subjects("42", "customer", "erased:x") == 1
    assert store.audit_subject_seqs("42") == [2, 3]
    assert store.audit_subject_seqs("erased:x") == [1]
    assert store.redact_audit_subjects("42", None, "erased:x") == 2
    assert store.audit_subject_seqs("42") == []
    assert store.audit_subject_seqs("erased:x") == [1, 2, 3]
    assert [r.body for r in store.audit_records()] == ['{"a":1}', '{"a":2}', '{"a":3}']


def test_large_subject_lists_are_found_and_renamed_whole_keys_only(
    store: MetadataStore,
) -> None:
    """A record carrying many subjects is stored as text parts (`subject_sets`): a search
    finds whole keys only (not "4" in "42"), keys holding the separator or the escape
    character are found as themselves, and an erasure renames the key everywhere, also
    where a part names the pseudonym already (a second erasure)."""
    from tidegate.meta.subject_sets import PART_SIZE, SET_MIN

    odd = ("a\nb", "a\nb\n", "a\n", "x\\y", "\\", "")
    big = tuple(str(i) for i in range(10, PART_SIZE + 20)) + odd
    records = [
        StoredAuditRecord(1, '{"a":1}', "g", "h1", subjects=big, subject_type="customer"),
        StoredAuditRecord(2, '{"a":2}', "h1", "h2", subjects=big[:SET_MIN], subject_type=""),
        StoredAuditRecord(3, '{"a":3}', "h2", "h3", subjects=("4",), subject_type="customer"),
    ]
    store.append_audit_chained(lambda last: records)
    assert store.audit_subject_seqs("4") == [3]
    assert store.audit_subject_seqs("10") == [1, 2]
    assert store.audit_subject_seqs(str(PART_SIZE + 19)) == [1]  # in the second part
    assert store.audit_subject_seqs(str(PART_SIZE + 20)) == []
    for key in odd:
        assert store.audit_subject_seqs(key) == [1], repr(key)
    assert store.audit_subject_seqs("a") == []
    assert store.audit_subject_seqs("b") == []
    assert store.audit_subject_seqs("10", "customer") == [1]
    assert store.audit_subject_seqs("10", "") == [2]
    assert store.redact_audit_subjects("10", "customer", "erased:10") == 1
    assert store.audit_subject_seqs("10") == [2]
    assert store.audit_subject_seqs("erased:10") == [1]
    assert store.redact_audit_subjects("a\nb", None, "erased:ab") == 1
    assert store.audit_subject_seqs("a\nb") == []
    assert store.audit_subject_seqs("a\nb\n") == [1]  # its neighbour kept
    # the record 1 part names "erased:10" already: erasing "11" into it drops "11"
    assert store.redact_audit_subjects("11", None, "erased:10") == 2
    assert store.audit_subject_seqs("11") == []
    assert store.audit_subject_seqs("erased:10") == [1, 2]
    assert store.audit_subject_seqs("12") == [1, 2]
    assert [r.body for r in store.audit_records()] == ['{"a":1}', '{"a":2}', '{"a":3}']


def _pending_lists(store: MetadataStore) -> int:
    rows = store._query(  # type: ignore[attr-defined]
        "SELECT count(*) FROM audit_subject_sets WHERE part = -1"
    )
    return int(rows[0][0])


def test_medium_subject_lists_wait_as_sets_then_fold_into_the_index(
    store: MetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 100-key read's list is written as one pending set (not 100 index inserts): found
    and renamed like any set; a later append folds every pending list into the index
    (keys unescaped whole), where it is found and renamed the same; a rename made before
    the fold is what the index holds after it."""
    from tidegate.meta import subject_sets

    medium = (*(str(i) for i in range(100)), "a\nb", "x\\y", "7")  # "7" twice: one entry

    def record(seq: int, subjects: tuple[str, ...], kind: str = "customer") -> StoredAuditRecord:
        return StoredAuditRecord(seq, f'{{"n":{seq}}}', "p", f"h{seq}", subjects, kind)

    store.append_audit_chained(lambda last: [record(1, ("1",))])  # a process's first: folds
    store.append_audit_chained(lambda last: [record(2, medium), record(3, medium[:10], "")])
    assert _pending_lists(store) == 2
    assert store.audit_subject_seqs("7") == [2, 3]
    assert store.audit_subject_seqs("7", "customer") == [2]
    assert store.audit_subject_seqs("a\nb") == [2]
    assert store.audit_subject_seqs("a") == []
    assert store.redact_audit_subjects("5", None, "erased:5") == 2  # both pending lists
    monkeypatch.setattr(subject_sets, "FOLD_SECONDS", 0.0)
    store.append_audit_chained(lambda last: [record(4, (*medium[20:40], "7"))])  # due: folds
    assert _pending_lists(store) == 0
    assert store.audit_subject_seqs("7") == [2, 3, 4]
    assert store.audit_subject_seqs("x\\y") == [2]
    assert store.audit_subject_seqs("5") == []  # renamed before the fold, folded renamed
    assert store.audit_subject_seqs("erased:5") == [2, 3]
    assert store.audit_subject_seqs("99", "customer") == [2]
    assert store.redact_audit_subjects("99", None, "erased:99") == 1  # now an index row
    assert store.audit_subject_seqs("erased:99") == [2]
    assert [r.body for r in store.audit_records()] == [f'{{"n":{i}}}' for i in (1, 2, 3, 4)]


def test_audit_anchor_moves_by_compare_and_set(store: MetadataStore) -> None:
    assert store.audit_anchor() is None
    assert store.move_audit_anchor("one", None)
    assert not store.move_audit_anchor("other", None)  # someone stored one first
    assert store.move_audit_anchor("two", "one")
    assert not store.move_audit_anchor("three", "one")  # moved meanwhile: refused
    assert store.audit_anchor() == "two"


# ---------------------------------------------------------------- sync state


def _state(keys: list[str], tag: str) -> pa.Table:
    return pa.table(
        {
            "key": keys,
            "row_hash": [f"{tag}{k}" for k in keys],
            "subject": [f"s{k}" for k in keys],
            "source_key": keys,
        }
    )


def test_sync_state(store: MetadataStore) -> None:
    store.set_sync_target("s", "crm")
    store.checkpoint_sync("s", upserted=_state(["1", "2", "3"], "a"), fresh=True)
    store.checkpoint_sync(
        "s",
        upserted=[SyncedRow("2", "b2", "s2", "2")],
        deleted=["3"],
        errors=[SyncRowError("4", "s4", "h4", "refused", 0, 0, 0)],
        suppressed=[SyncedRow("1", "", "s1")],
    )
    assert {k: r.row_hash for k, r in store.synced_rows("s").items()} == {"2": "b2"}
    assert store.synced_count("s") == 1
    assert set(store.synced_rows_matching("s", ["2"], [])) == {"2"}
    errors = store.sync_row_errors("s")
    assert [(e.key, e.attempts) for e in errors] == [("4", 1)]
    store.checkpoint_sync("s", errors=[SyncRowError("4", "s4", "h4", "again", 0, 0, 0)])
    assert store.sync_row_errors("s")[0].attempts == 2
    assert store.dismiss_sync_errors("s", ["4"], 9.0) == 1
    assert store.sync_row_errors("s") == []
    assert len(store.sync_row_errors("s", include_dismissed=True)) == 1
    assert [r.key for r in store.sync_suppressions("s")] == ["1"]

    store.set_sync_inflight("s", [SyncedRow("5", "h5", "s5", "5")])
    assert [r.key for r in store.sync_inflight("s")] == ["5"]
    store.checkpoint_sync("s", upserted=[SyncedRow("5", "h5", "s5", "5")], clear_inflight=True)
    assert store.sync_inflight("s") == []

    locations = store.subject_locations("s2")
    assert [(loc.sync, loc.destination, loc.key) for loc in locations] == [("s", "crm", "2")]
    assert store.compact_sync_state("s", 1)
    assert not store.compact_sync_state("s", 1)
    assert set(store.synced_rows("s")) == {"2", "5"}
    store.forget_sync("s")
    assert store.synced_count("s") == 0
    assert store.sync_suppressions("s") == []


# ---------------------------------------------------------------- parts


def test_freshness(store: MetadataStore) -> None:
    ledger = store.freshness
    ledger.stale("p", "batch", 10.0)
    ledger.stale("p", "batch", 20.0)  # the first unapplied change is kept
    assert ledger.all()["p"].stale_since == 10.0
    ledger.updated("p", "incremental", lag=3.0, slo=2.0)
    ledger.updated("p", "incremental", lag=1.0, slo=2.0)
    seen = ledger.all()["p"]
    assert (seen.updates, seen.breaches, seen.max_lag, seen.last_lag) == (2, 1, 3.0, 1.0)
    assert seen.stale_since is None
    assert seen.current_lag() == 0.0


def test_dead_letters(store: MetadataStore) -> None:
    dead = store.dead_letters
    letter = DeadLetter("orders", "bad", b"\x00{", "log", b"k", "t", 0, 7)
    assert dead.add([letter, letter]) == 1  # one per log position
    assert dead.add([DeadLetter("clicks", "worse", None, "http")]) == 1
    assert dead.count() == 2
    assert dead.count("orders") == 1
    assert dead.counts_by_source() == {"clicks": 1, "orders": 1}
    first = dead.list(source="orders")[0]
    assert (first.payload, first.key, first.offset, first.partition) == (b"\x00{", b"k", 7, 0)
    dead.update_reason(first.id, "still bad")
    assert (got := dead.get(first.id)) is not None
    assert got.reason == "still bad"
    dead.mark_replayed([first.id])
    assert dead.count() == 1
    assert dead.count(include_replayed=True) == 2
    assert [d.source for d in dead.list(after_id=0)] == ["clicks"]
    assert dead.delete([first.id]) == 1
    assert dead.get(first.id) is None
    dead.close()  # a part of the store: closing it leaves the store open
    assert store.dead_letters.count() == 1


def test_observations(store: MetadataStore) -> None:
    obs = store.observations
    obs.add_points("p", 1, 10.0, "batch", "live", [("rows", "", 5.0), ("nulls", "c", None)])
    obs.add_points("p", 2, 20.0, "batch", "failed", [("rows", "", 7.0)])
    assert [(p.at, p.value) for p in obs.series("p", "rows")] == [(10.0, 5.0)]
    assert len(obs.series("p", "rows", status=None)) == 2
    assert obs.series("p", "nulls", "c") == []  # points without a value are left out
    assert obs.series_names("p") == [("rows", ""), ("nulls", "c")]
    obs.add_schema(SchemaSnapshot("p", 1, 10.0, "f1", {"a": "INTEGER"}), "live")
    obs.add_schema(SchemaSnapshot("p", 2, 20.0, "f2", {"a": "VARCHAR"}), "live")
    last = obs.last_schema("p")
    assert last is not None
    assert last.columns == {"a": "VARCHAR"}
    earlier = obs.last_schema("p", before=15.0)
    assert earlier is not None
    assert earlier.fingerprint == "f1"
    row = ("p", 1, 10.0, "not_null", "not_null", "error", "a", 0, 3, None, "0", "t", "")
    obs.add_quality([row, ("p", 2, *row[2:3], "unique", *row[4:])])
    assert [r["check_name"] for r in obs.quality("p")] == ["unique"]
    assert obs.quality("p", 1)[0]["failing_rows"] == 3
    assert obs.quality("q") == []
    assert obs.should_send("k", 60, now=100.0)
    assert not obs.should_send("k", 60, now=130.0)
    assert obs.should_send("k", 60, now=200.0)


def test_cdc_positions(store: MetadataStore) -> None:
    positions = store.cdc_positions
    assert not positions.snapshot_done("slot")
    positions.mark_snapshot("slot")
    assert positions.snapshot_done("slot")
    state = SlotState("slot", "accounts", "0/16B3748", 4096, 1.5, None, 100.0)
    positions.report(state)
    positions.report(SlotState("slot", "accounts", "0/16B3750", 0, 0.0, None, 101.0))
    positions.report(SlotState("other", "orders", None, None, None, "slot dropped", 102.0))
    assert positions.states() == [
        SlotState("other", "orders", None, None, None, "slot dropped", 102.0),
        SlotState("slot", "accounts", "0/16B3750", 0, 0.0, None, 101.0),
    ]
    positions.forget("slot")
    assert not positions.snapshot_done("slot")
    assert [s.slot for s in positions.states()] == ["other"]


def test_freshness_confirm_keeps_a_waiting_change(store: MetadataStore) -> None:
    ledger = store.freshness
    ledger.confirm("new", "batch", 5.0)  # a product never seen: current as of 5
    assert ledger.all()["new"].last_update == 5.0
    assert ledger.all()["new"].updates == 0
    ledger.updated("p", "batch", lag=1.0, slo=10.0)
    ledger.confirm("p", "batch", 50.0)
    assert (ledger.all()["p"].last_update, ledger.all()["p"].updates) == (50.0, 1)
    ledger.stale("p", "batch", 60.0)
    ledger.confirm("p", "batch", 70.0)  # a change waits: not confirmed, not cleared
    seen = ledger.all()["p"]
    assert (seen.last_update, seen.stale_since) == (50.0, 60.0)


def test_slo_history(store: MetadataStore) -> None:
    ledger = store.freshness
    ledger.sample([("p", 10.0, 5.0, True), ("p", 15.0, 5.0, False), ("q", 15.0, 5.0, True)])
    ledger.sample([("p", 20.0, 10.0, True)])
    assert ledger.compliance(0.0) == {"p": (15.0, 20.0), "q": (5.0, 5.0)}
    assert ledger.compliance(15.0) == {"p": (10.0, 15.0), "q": (5.0, 5.0)}
    ledger.prune_samples(16.0)
    assert ledger.compliance(0.0) == {"p": (10.0, 10.0)}


def test_erasure(store: MetadataStore) -> None:
    assert store.add_tombstone("h1", 1.0, "r1")
    assert not store.add_tombstone("h1", 2.0, "r2")
    assert [(s, h) for s, h, _ in store.tombstones()] == [(1, "h1")]
    store.append_consent([consent("42"), consent("7")])
    store.checkpoint_sync("s", suppressed=[SyncedRow("42", "", "42")])
    now = time.time()
    store.checkpoint_sync(
        "s",
        errors=[  # one by subject; one whose subject was not recorded, quoting the email
            SyncRowError("k1", "42", "h", "refused", now, now, 1),
            SyncRowError("k2", None, "h", "duplicate (email)=(p42@example.org)", now, now, 1),
            SyncRowError("k3", None, "h", "duplicate (email)=(p7@example.org)", now, now, 1),
        ],
    )
    token = store.change_token()
    with store.erasing():
        counts = store.erase_subject_rows(
            "42", "erased:x", lambda text: "digest", ["p42@example.org"]
        )
    assert counts["consent_ledger"] == 1
    assert counts["sync_suppressions"] == 1
    assert counts["sync_row_errors"] == 2
    assert [e.key for e in store.sync_row_errors("s")] == ["k3"]
    assert store.change_token() != token
    assert store.consent_history("42") == []
    assert [r.evidence for r in store.consent_history("erased:x")] == ["digest"]

    store.append_audit_chained(chained("secret 42"))
    assert store.redact_audit({1: "redacted"}) == 1
    assert store.audit_records()[0].body == "redacted"
    run = store.start_run("build", "p")
    store.finish_run(run, "failed", {"max": 42}, "42 broke")
    assert (run, json.dumps({"max": 42}), "42 broke") in list(store.runs_text())
    assert store.redact_runs({run: ("{}", "")}) == 1
    assert store.runs()[0]["error"] == ""
    store.observations.add_points("p", 1, 1.0, "batch", "live", [("max", "id", 42.0)])
    assert store.redact_observations([("p", "id")], 42.0) == 1
    assert store.observations.series("p", "max", "id") == []


def test_erasure_of_some_syncs_only(store: MetadataStore) -> None:
    """`syncs` limits the sync-state rows erased to those syncs' (none: no sync state)."""
    for sync in ("s1", "s2", "s3"):
        store.checkpoint_sync(sync, suppressed=[SyncedRow("42", "", "42")])
    store.append_consent([consent("42")])
    counts = store.erase_subject_rows("42", "erased:x", lambda t: "d", syncs=[], consent=False)
    assert sum(n for t, n in counts.items() if t != "consent_ledger") == 0
    assert counts.get("consent_ledger", 0) == 0
    assert [r.subject for r in store.consent_history("42")] == ["42"]
    counts = store.erase_subject_rows("42", "erased:x", lambda t: "d", syncs=["s1", "s3"])
    assert counts["sync_suppressions"] == 2
    assert counts["consent_ledger"] == 1
    assert [s for s in ("s1", "s2", "s3") if store.sync_suppressions(s)] == ["s2"]


# ---------------------------------------------------------------- two processes at once

WRITER = """
import sys, hashlib, json, time
from pathlib import Path
from tidegate.meta import open_metadata
from tidegate.meta.base import ConsentRow, StoredAuditRecord, SyncedRow
from tidegate.meta.parts import DeadLetter
from tidegate.project.models import BackendsConfig

config, root, writer, count = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
store = open_metadata(BackendsConfig.model_validate({"metadata": config}).metadata, Path(root))
(Path(root) / f"ready-{writer}").touch()
while not (Path(root) / "go").exists():  # both start together
    time.sleep(0.005)

def step(body):
    def chain(last):
        prev = last.hash if last else ""
        digest = hashlib.sha256((prev + body).encode()).hexdigest()
        return [StoredAuditRecord((last.seq if last else 0) + 1, body, prev, digest)]
    return chain

for i in range(count):
    store.append_audit_chained(step(f"{writer}-{i}"))
    store.append_consent(
        [ConsentRow(0, f"{writer}-{i}", "analytics", "grant", 1.0, writer, "e", None, 1.0)]
    )
    store.checkpoint_sync("shared", upserted=[SyncedRow(f"{writer}-{i}", "h", writer)])
    # both writers dead-letter the same log positions: each is stored once
    store.dead_letters.add([DeadLetter("orders", writer, b"x", "log", None, "t", 0, i)])
store.close()
"""


def test_two_processes_writing_at_once(
    backend: tuple[str, dict[str, str]], open_store: Opener, tmp_path: Path
) -> None:
    """Audit chain intact, no consent event lost, no sequence number used twice; sync
    checkpoints of one sync and dead letters of the same log positions do not collide."""
    store = open_store()  # migrated before the writers start
    count = 150
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, json.dumps(backend[1]), str(tmp_path), name, str(count)],
            env=env,
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in "ab"):
        assert time.monotonic() < deadline, "the writers did not start"
        assert all(w.poll() is None for w in writers), "a writer died while starting"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for writer in writers:
        _, err = writer.communicate(timeout=240)
        assert writer.returncode == 0, err.decode()[-2000:]
    records = store.audit_records()
    assert len(records) == 2 * count
    assert_chain_intact(records)
    bodies = {r.body for r in records}
    assert bodies == {f"{w}-{i}" for w in "ab" for i in range(count)}
    ledger = store.consent_rows()
    assert len(ledger) == 2 * count
    assert len({r.seq for r in ledger}) == 2 * count
    assert {r.subject for r in ledger} == {f"{w}-{i}" for w in "ab" for i in range(count)}
    assert set(store.synced_rows("shared")) == {f"{w}-{i}" for w in "ab" for i in range(count)}
    assert store.dead_letters.count() == count
    # the two writers' appends interleave (they ran at once, not one after the other)
    order = [r.body[0] for r in records]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    print(f"{backend[0]}: the writer changed {switches} times in {len(order)} audit records")
    if backend[0] == "postgres":  # row locks queue fairly; SQLite's busy handler does not
        assert switches > 10


def test_without_psycopg_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from tidegate.meta.postgres import PostgresMetadataStore

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    with pytest.raises(TidegateError, match=r"pip install 'tidegate\[postgres\]'"):
        PostgresMetadataStore("postgresql://nobody@127.0.0.1:1/none")


OPENER = """
import sys, json, time
from pathlib import Path
from tidegate.meta import open_metadata
from tidegate.project.models import BackendsConfig

config, root, name = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
(Path(root) / f"ready-{name}").touch()
while not (Path(root) / "go").exists():
    time.sleep(0.002)
store = open_metadata(BackendsConfig.model_validate({"metadata": config}).metadata, Path(root))
print(store.schema_version())
store.close()
"""


def test_processes_opening_a_new_store_at_once_migrate_it_once(
    backend: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    names = [str(n) for n in range(4)]
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, json.dumps(backend[1]), str(tmp_path), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in names):
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.01)
    (tmp_path / "go").touch()
    for opened in openers:
        out, err = opened.communicate(timeout=120)
        assert opened.returncode == 0, err.decode()[-2000:]
        assert int(out) == latest(backend[0])
    store = opener(backend[1], tmp_path)()
    try:
        assert store.schema_version() == latest(backend[0])
    finally:
        store.close()
