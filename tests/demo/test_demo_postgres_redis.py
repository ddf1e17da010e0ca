"""The demo end to end with metadata on PostgreSQL and the online store on Redis.

The configuration comes from `TIDEGATE__...` environment overrides (a `__TYPE` override
starts the section afresh), so the demo's own tidegate.yml stays the embedded default.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.services

SRC = Path(__file__).resolve().parents[2] / "src"


def test_demo_runs_on_postgres_metadata_and_redis(
    pg_dsn: str, redis_url: str, tmp_path: Path
) -> None:
    import psycopg
    import redis

    tag = uuid.uuid4().hex[:10]
    schema, prefix = f"demo_{tag}", f"demo{tag}"
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "TIDEGATE_PG_DSN": pg_dsn,
        "TIDEGATE__BACKENDS__METADATA__TYPE": "postgres",
        "TIDEGATE__BACKENDS__METADATA__DSN_ENV": "TIDEGATE_PG_DSN",
        "TIDEGATE__BACKENDS__METADATA__SCHEMA": schema,
        "TIDEGATE__BACKENDS__ONLINE__TYPE": "redis",
        "TIDEGATE__BACKENDS__ONLINE__URL": redis_url,
        "TIDEGATE__BACKENDS__ONLINE__PREFIX": prefix,
    }
    directory = tmp_path / "shop"
    command = [str(Path(sys.executable).with_name("tidegate")), "demo", "--no-serve", "--small"]
    client = redis.Redis.from_url(redis_url)
    try:
        done = subprocess.run(
            [*command, "--dir", str(directory)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "chain intact" in done.stdout
        assert f"schema {schema}" in done.stdout
        assert pg_dsn.split("@")[0] not in done.stdout  # the DSN's credentials never shown
        # nothing went to the embedded files
        assert not (directory / ".tidegate" / "metadata.db").exists()
        assert not (directory / ".tidegate" / "online.db").exists()
        with psycopg.connect(pg_dsn) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            counts = {
                table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("consent_ledger", "audit_log", "api_keys", "runs", "sync_targets")
            }
        assert all(n > 0 for n in counts.values()), counts
        assert any(True for _ in client.scan_iter(match=f"{prefix}:customer_360:*", count=1000))
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
