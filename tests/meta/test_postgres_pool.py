"""PostgreSQL metadata connections survive a server-side disconnect."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tidegate.errors import ServiceUnavailableError
from tidegate.meta import postgres_pool
from tidegate.meta.postgres import PostgresMetadataStore

pytestmark = pytest.mark.services


@pytest.fixture
def store(pg_dsn: str) -> Iterator[PostgresMetadataStore]:
    import psycopg

    schema = f"pool_{uuid.uuid4().hex[:10]}"
    opened = PostgresMetadataStore(pg_dsn, schema, pool_size=1)
    yield opened
    opened.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _kill_pool_connections(pg_dsn: str, store: PostgresMetadataStore) -> None:
    import psycopg

    pids = [conn.info.backend_pid for conn, _ in store._pool._idle]
    assert pids
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_dropped_connection_fails_one_call_clearly_then_reconnects(
    pg_dsn: str, store: PostgresMetadataStore
) -> None:
    store.start_run("build", "p")
    _kill_pool_connections(pg_dsn, store)
    with pytest.raises(ServiceUnavailableError, match="PostgreSQL metadata"):
        store.runs()
    assert len(store.runs()) == 1  # a fresh connection


def test_an_idle_connection_is_checked_before_use(
    pg_dsn: str, store: PostgresMetadataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.start_run("build", "p")
    _kill_pool_connections(pg_dsn, store)
    monkeypatch.setattr(postgres_pool, "CHECK_AFTER", 0.0)
    assert len(store.runs()) == 1  # the dead one was noticed and replaced: no failed call
