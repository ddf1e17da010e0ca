"""Access and erasure requests on real services: a subject synced into PostgreSQL, Redis
and MariaDB, served by the API, in the online store, a dead letter and the consent
ledger; after `tidegate request erase`, a scan of DuckDB, every SQLite file, PostgreSQL,
MariaDB and Redis finds neither their id nor their email, and nothing brings them back."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tidegate.api import create_app
from tidegate.audit.log import AuditRecord
from tidegate.cli.app import app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.egress.sync import run_sync
from tidegate.ingest.deadletters import DeadLetter
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of

from .conftest import add_sync

pytestmark = pytest.mark.services

_spec = importlib.util.spec_from_file_location(
    "tidegate_tests_erasure_world", Path(__file__).parent / "erasure_world.py"
)
assert _spec is not None
assert _spec.loader is not None
erasure_world = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(erasure_world)

# the same distinctive person as the erasure scan's (erasure_world.py)
SUBJECT, EMAIL, OTHER = erasure_world.SUBJECT, erasure_world.EMAIL, erasure_world.OTHER
add_subject = erasure_world.add_subject
SYNCS = ("to_pg", "to_redis", "to_mysql")


@pytest.fixture
def world(
    shop: Path,
    pg_dsn: str,
    pg_table: str,
    redis_url: str,
    redis_prefix: str,
    mysql_dsn: str,
    mysql_table: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from tidegate.products.builder import build_products, load_sources

    monkeypatch.setenv("T_PG", pg_dsn)
    monkeypatch.setenv("T_REDIS", redis_url)
    monkeypatch.setenv("T_MYSQL", mysql_dsn)
    add_subject(shop)
    add_sync(shop, "to_pg", f"{{type: postgres, dsn_env: T_PG, table: {pg_table}}}")
    add_sync(
        shop,
        "to_redis",
        f"{{type: redis, url_env: T_REDIS, key_template: '{redis_prefix}:{{key}}'}}",
    )
    add_sync(shop, "to_mysql", f"{{type: mysql, dsn_env: T_MYSQL, table: {mysql_table}}}")
    with Platform.open(shop) as platform:
        consent_ledger_of(platform).record(
            [
                ConsentEvent(
                    SUBJECT, "marketing.email", "grant", time.time() - 60, "form", f"signup {EMAIL}"
                )
            ]
        )
        platform.audit.append(
            AuditRecord(
                action="consent", principal="cli", purpose="marketing.email", subjects=(SUBJECT,)
            )
        )
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        for name in SYNCS:
            assert run_sync(platform, name).added > 0
        assert {loc.sync for loc in platform.meta.subject_locations(SUBJECT)} == set(SYNCS)
        dead = platform.meta.dead_letters
        bad = {"order_id": 5550002, "customer_id": int(SUBJECT), "amount": "lots", "note": EMAIL}
        other = {"order_id": 5550003, "customer_id": int(OTHER), "amount": "lots"}
        dead.add(
            [
                DeadLetter("orders", "amount: not a number", json.dumps(bad).encode(), "file"),
                DeadLetter("orders", "amount: not a number", json.dumps(other).encode(), "file"),
            ]
        )
        dead.close()
    return {
        "shop": shop,
        "pg": (pg_dsn, pg_table),
        "redis": (redis_url, redis_prefix),
        "mysql": (mysql_dsn, mysql_table),
    }


class Api:
    def __init__(self, platform: Platform, client: httpx.Client) -> None:
        self.platform = platform
        self.client = client
        self.dpo = create_key(platform.meta, "dpo-tool", ["dpo"])[0]
        self.agent = create_key(platform.meta, "desk", ["support_agent"])[0]

    def entity(self, key: str) -> int:
        response = self.client.get(
            f"/v1/products/customer_360/entities/{key}",
            headers={"Authorization": f"Bearer {self.agent}", "X-Purpose": "support"},
        )
        return response.status_code


def serve(shop: Path) -> Iterator[Api]:
    platform = Platform.open(shop)
    server = BackgroundServer(create_app(platform), _free_port(0))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=60) as client:
            yield Api(platform, client)
    finally:
        server.stop()
        platform.close()


# ---------------------------------------------------------------- scans


def traces_in_text(text: str) -> bool:
    return SUBJECT in text or EMAIL in text


def scan_duckdb(path: Path) -> list[str]:
    import duckdb

    found = []
    db = duckdb.connect(str(path), read_only=True)
    try:
        columns = db.execute(
            "SELECT c.table_schema, c.table_name, c.column_name FROM information_schema.columns c"
            " JOIN information_schema.tables t USING (table_schema, table_name)"
            " WHERE t.table_type = 'BASE TABLE'"
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
                found.append(f"{schema}.{table}.{column}: {hits[0]}")
    finally:
        db.close()
    return found


def scan_sqlite(path: Path) -> list[str]:
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


def scan_files(shop: Path) -> list[str]:
    """The SQLite files' bytes (free pages and write-ahead logs included)."""
    found = []
    for path in sorted(shop.rglob("*")):
        if path.suffix in {".db", ".db-wal"} and path.is_file():
            data = path.read_bytes()
            if SUBJECT.encode() in data or EMAIL.encode() in data:
                found.append(f"{path.relative_to(shop)} (bytes)")
    return found


def scan_postgres(dsn: str, table: str) -> list[str]:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table))).fetchall()
    assert rows  # the others are still there
    return [str(r) for r in rows if traces_in_text(str(r))]


def scan_mysql(dsn: str, table: str) -> list[str]:
    import pymysql

    from tidegate.egress.destinations.mysql.client import connect_args

    with pymysql.connect(**connect_args(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM `{table}`")
        rows = cur.fetchall()
    assert rows
    return [str(r) for r in rows if traces_in_text(str(r))]


def scan_redis(url: str, prefix: str) -> list[str]:
    import redis

    client = redis.Redis.from_url(url)
    found = []
    try:
        keys = list(client.scan_iter(f"{prefix}:*", count=1000))
        assert keys
        for key in keys:
            values = client.hgetall(key) if client.type(key) == b"hash" else {b"": client.get(key)}
            text = key.decode() + " " + " ".join(f"{k!r}={v!r}" for k, v in values.items())
            if traces_in_text(text):
                found.append(text[:200])
    finally:
        client.close()
    return found


def scan_everything(world: dict[str, Any]) -> list[str]:
    shop: Path = world["shop"]
    state = shop / ".tidegate"
    found = scan_duckdb(state / "warehouse.duckdb")
    for path in sorted(shop.rglob("*.db")):
        found += scan_sqlite(path)
    found += scan_files(shop)
    found += scan_postgres(*world["pg"])
    found += scan_mysql(*world["mysql"])
    found += scan_redis(*world["redis"])
    return found


# ---------------------------------------------------------------- the tests


def test_access_then_erasure_leaves_no_trace_on_any_system(world: dict[str, Any]) -> None:
    shop: Path = world["shop"]
    for api in serve(shop):
        assert api.entity(SUBJECT) == 200  # audited with the subject in clear
        response = api.client.get(
            f"/v1/subjects/{SUBJECT}", headers={"Authorization": f"Bearer {api.dpo}"}
        )
        assert response.status_code == 200, response.text
        package = response.json()
    tables = package["warehouse"]["tables"]
    assert any(rows and rows[0].get("email") == EMAIL for name, rows in tables.items())
    assert any("raw" in name and rows for name, rows in tables.items())
    assert package["online_store"]["customer_360"][0]["email"] == EMAIL
    assert set(package["destinations"]) == set(SYNCS)
    for name in SYNCS:
        entry = package["destinations"][name]
        assert entry["status"] == "ok", entry
        assert [str(r["customer_id"]) for r in entry["rows"]] == [SUBJECT]
        assert entry["rows"][0]["email"] == EMAIL
    (letter,) = package["dead_letters"]
    assert letter["payload"]["customer_id"] == int(SUBJECT)
    assert [h["action"] for h in package["consent"]["history"]] == ["grant"]
    assert {r["action"] for r in package["audit"]} >= {"consent", "serve", "sync"}
    assert scan_everything(world)  # the scan does see the subject before erasure

    result = CliRunner().invoke(
        app, ["request", "erase", SUBJECT, "--project", str(shop), "--yes", "--json",
              "--principal", "dpo", "--reason", f"ticket 77 from {EMAIL}"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["complete"] is True
    systems = {(s["system"], s["status"]) for s in report["systems"]}
    for expected in [
        ("tombstone", "kept"),
        ("warehouse", "removed"),
        ("online_store", "removed"),
        ("dead_letters", "removed"),
        ("consent_ledger", "kept"),
        ("audit_log", "removed"),
        ("upstream_source", "retained"),
    ]:
        assert expected in systems, (expected, systems)
    destinations = {s["location"].split(" ")[1]: s for s in report["systems"]
                    if s["system"] == "destination"}  # fmt: skip
    assert set(destinations) == set(SYNCS)
    assert {d["status"] for d in destinations.values()} == {"removed"}
    assert any("postgres:" in d["location"] for d in destinations.values())
    assert any("redis:" in d["location"] for d in destinations.values())
    assert any("mysql:" in d["location"] for d in destinations.values())
    assert all(s["at"] >= report["started_at"] for s in report["systems"])
    assert SUBJECT not in result.output
    assert EMAIL not in result.output

    traces = scan_everything(world)
    assert traces == [], "\n".join(t[:160] for t in traces)

    with Platform.open(shop) as platform:
        assert platform.audit.verify() == []
        records = [r for _, r in platform.audit.records() if r.action == "erasure"]
        (record,) = records
        assert record.detail["request_id"] == report["request_id"]
        assert record.detail["subject_hash"] == report["subject_hash"]
        assert [s["system"] for s in record.detail["systems"]] == [
            s["system"] for s in report["systems"]
        ]
        history = consent_ledger_of(platform).history(record.detail["subject_hash"])
        assert history == []  # the ledger keeps no entry under the clear id or the hash
        kept = [r for r in platform.meta.consent_rows() if r.subject.startswith("erased:")]
        assert [(r.purpose, r.action) for r in kept] == [("marketing.email", "grant")]
        assert kept[0].evidence.startswith("sha256:")
        assert platform.meta.subject_locations(OTHER)  # the others are untouched


def test_nothing_brings_an_erased_subject_back(world: dict[str, Any]) -> None:
    from tidegate.products.builder import build_products, load_sources
    from tidegate.requests.subject_requests import erase

    shop: Path = world["shop"]
    with Platform.open(shop) as platform:
        report = erase(platform, SUBJECT, "dpo")
        assert report.complete
        # a rebuild from the sources, which still hold the subject upstream
        loaded = load_sources(platform)
        assert loaded["customers"] > 0
        assert all(r.status == "live" for r in build_products(platform))
        # consent granted again under the clear id must not resurrect them either
        consent_ledger_of(platform).record(
            [ConsentEvent(SUBJECT, "marketing.email", "grant", time.time(), "form")]
        )
        for name in SYNCS:
            run_sync(platform, name, full=True)
        assert platform.meta.subject_locations(SUBJECT) == []
    for api in serve(shop):
        assert api.entity(SUBJECT) == 404
        assert api.entity(OTHER) == 200
        again = api.client.get(
            f"/v1/subjects/{SUBJECT}", headers={"Authorization": f"Bearer {api.dpo}"}
        ).json()
        assert again["erased"] is True
        assert again["warehouse"]["tables"]
        assert not any(again["warehouse"]["tables"].values())
        assert again["online_store"] == {}
        assert again["destinations"] == {}
    state = shop / ".tidegate"
    assert scan_duckdb(state / "warehouse.duckdb") == []
    assert scan_sqlite(state / "online.db") == []
    assert scan_postgres(*world["pg"]) == []
    assert scan_mysql(*world["mysql"]) == []
    assert scan_redis(*world["redis"]) == []
    # what names them now came after the erasure: the new consent entry, and the audit
    # records of the reads that asked for them (answered 404 / empty)
    after = report.audit_seq or 0
    for trace in scan_sqlite(state / "metadata.db"):
        where, _, body = trace.partition(": ")
        if where.endswith("consent_ledger"):
            continue
        if where.endswith("audit_subjects"):  # (subject_key, subject_type, record_seq)
            assert int(body.rsplit(" ", 1)[1]) > after, trace
            continue
        assert where.endswith("audit_log"), trace
        assert int(body.split(" ", 1)[0]) > after, trace


def test_a_role_without_subject_requests_is_refused_and_audited(shop: Path) -> None:
    for api in serve(shop):
        for method in ("GET", "DELETE"):
            response = api.client.request(
                method, f"/v1/subjects/{OTHER}", headers={"Authorization": f"Bearer {api.agent}"}
            )
            assert response.status_code == 403
            assert "subject_requests" in response.json()["error"]["message"]
        denied = [r for _, r in api.platform.audit.records() if r.action == "deny"]
        assert [r.detail["request"] for r in denied] == ["access", "erase"]
        assert api.entity(OTHER) == 200  # nothing was erased
