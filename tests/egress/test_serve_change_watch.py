"""The serving caches (API keys, access plans) follow the metadata store's change token.

A consent or key change in any process is seen on the next read; audit appends (every
request writes one) do not flush the caches.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tidegate.audit.log import AuditLog, AuditRecord
from tidegate.egress.serve.state import ChangeWatch
from tidegate.meta.base import ApiKeyRow, ConsentRow
from tidegate.meta.sqlite import SqliteMetadataStore

PRODUCT, PURPOSE = "people_out", "crm"


def test_audit_appends_do_not_move_the_watch_but_consent_and_keys_do(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path / "m.db")
    other = SqliteMetadataStore(tmp_path / "m.db")  # another process, as far as SQLite knows
    watch = ChangeWatch(store)
    start = watch.generation()
    AuditLog(other, key=b"k" * 32).append(AuditRecord("serve", "alice"))
    store.start_run("build", "p")
    assert watch.generation() == start
    other.append_consent([ConsentRow(0, "1", PURPOSE, "revoke", 1.0, "t", "", None, 1.0)])
    after_consent = watch.generation()
    assert after_consent != start
    other.add_api_key(ApiKeyRow("k", "h", "p", ("r",), 1.0, None, None))
    assert watch.generation() != after_consent
    assert watch.generation() == watch.generation()  # quiet: no movement
    store.close()
    other.close()


def _project(root: Path, pg_dsn: str, schema: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for folder in ("sources", "products", "policies", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    columns = (
        "  id: {type: BIGINT, nullable: false, classification: user.unique_id}\n"
        "  email: {type: VARCHAR, classification: user.contact.email}\n"
    )
    (root / "tidegate.yml").write_text(
        "name: replicas\nbackends:\n"
        f'  metadata: {{type: postgres, dsn: "{pg_dsn}", schema: {schema}}}\n'
    )
    (root / "sources" / "people.yml").write_text(
        "name: people\ntype: file\npath: data/people.parquet\nowner: t\n"
        "key: id\nsubject: id\ncolumns:\n" + columns
    )
    (root / "products" / f"{PRODUCT}.yml").write_text(
        f"name: {PRODUCT}\nowner: t\nsql: SELECT id, email FROM people\n"
        f"key: id\nsubject: id\npurposes: [{PURPOSE}]\ncolumns:\n" + columns
    )
    (root / "policies" / "policy.yml").write_text(
        f"purposes:\n  {PURPOSE}: {{legal_basis: consent}}\n"
        f"roles:\n  crm_app: {{purposes: [{PURPOSE}]}}\n"
        f"treatments:\n  {PURPOSE}:\n    user: clear\n"
    )
    ids = [1, 2, 3]
    pq.write_table(
        pa.table({"id": pa.array(ids, pa.int64()), "email": [f"p{i}@x.org" for i in ids]}),
        root / "data" / "people.parquet",
    )


@pytest.fixture
def replicas(pg_dsn: str, tmp_path: Path) -> Iterator[tuple[Any, Any, Any, str]]:
    """Two API servers on one project whose metadata is on PostgreSQL."""
    import httpx
    import psycopg

    from tidegate.api import create_app
    from tidegate.demo.runner import BackgroundServer, _free_port
    from tidegate.platform import Platform
    from tidegate.platform.keys import create_key
    from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
    from tidegate.products.builder import build_products, load_sources

    schema = f"replicas_{uuid.uuid4().hex[:10]}"
    root = tmp_path / "project"
    _project(root, pg_dsn, schema)
    platforms = [Platform.open(root), Platform.open(root)]
    servers = []
    clients = []
    try:
        first = platforms[0]
        consent_ledger_of(first).record(
            [ConsentEvent(str(i), PURPOSE, "grant", time.time() - 60, "t") for i in (1, 2, 3)]
        )
        load_sources(first)
        assert all(r.status == "live" for r in build_products(first))
        token, _ = create_key(first.meta, "app", ["crm_app"])
        for platform in platforms:
            server = BackgroundServer(create_app(platform), _free_port(0))
            server.start()
            servers.append(server)
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30))
        yield platforms[0], clients[0], clients[1], token
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()
        for platform in platforms:
            platform.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.services
def test_a_revocation_by_one_replica_is_seen_by_the_other_on_its_next_read(
    replicas: tuple[Any, Any, Any, str],
) -> None:
    from tidegate.platform.keys import split_token
    from tidegate.privacy.consent import ConsentEvent, consent_ledger_of

    replica_a, client_a, client_b, token = replicas
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": PURPOSE}
    url = f"/v1/products/{PRODUCT}/entities/2"
    for client in (client_a, client_b, client_b):  # the last one is served from B's caches
        assert client.get(url, headers=headers).status_code == 200
    # consent: revoked through replica A's platform (as its consent API does)
    consent_ledger_of(replica_a).record([ConsentEvent("2", PURPOSE, "revoke", time.time(), "t")])
    assert client_b.get(url, headers=headers).status_code == 404
    assert client_b.get(f"/v1/products/{PRODUCT}/entities/3", headers=headers).status_code == 200
    # API key: revoked through replica A
    assert replica_a.meta.revoke_api_key(split_token(token)[0], time.time())
    assert client_b.get(url, headers=headers).status_code == 401


def test_a_plan_rebuilt_for_its_age_reads_no_ledger_yet_sees_a_grant_expire(
    demo_copy: Path,
) -> None:
    """Plans age out so that a consent grant's own expiry shows without any write; while
    the watch stands still, the rebuild decides on the consent view as it is (asking the
    ledger could only wait behind an audit batch for nothing). A consent write moves the
    watch, and the next plan asks the ledger again."""
    from tidegate.egress.serve.state import PlanCache
    from tidegate.platform import Platform
    from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
    from tidegate.privacy.guard import AccessContext, guard_of

    with Platform.open(demo_copy) as platform:
        guard = guard_of(platform)
        watch = ChangeWatch(platform.meta)
        cache = PlanCache(guard, platform.meta, watch, max_age=0.0)  # every plan ages out
        ledger = consent_ledger_of(platform)
        context = AccessContext("t", ("privacy_officer",), "marketing.email")
        start = time.time()
        ledger.record(
            [ConsentEvent("900001", "marketing.email", "grant", start, "t", expires_at=start + 1)]
        )
        first = cache.plan(context, "customer_360")
        assert first.row_filter is not None
        assert first.row_filter.admits("900001")

        reads: list[int] = []
        refresh = guard.consent.refresh

        def counted() -> None:  # the real refresh, counted
            reads.append(1)
            refresh()

        guard.consent.refresh = counted  # type: ignore[method-assign]
        while time.time() <= start + 1:
            time.sleep(0.05)
        aged = cache.plan(context, "customer_360")
        assert aged is not first  # rebuilt for its age
        assert aged.row_filter is not None
        assert not aged.row_filter.admits("900001")
        assert reads == []

        ledger.record([ConsentEvent("900002", "marketing.email", "grant", time.time(), "t")])
        moved = cache.plan(context, "customer_360")
        assert reads == [1]
        assert moved.row_filter is not None
        assert moved.row_filter.admits("900002")
