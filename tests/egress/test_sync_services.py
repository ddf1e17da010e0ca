"""Syncs into the real servers: consent revocation in PostgreSQL and Redis, refused rows in
MariaDB, tombstones in Kafka, and an HTTP API that rate-limits (429 + Retry-After)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tidegate.egress.destinations.kafka.client import KafkaDestination
from tidegate.egress.destinations.redis.client import RedisDestination
from tidegate.egress.sync import run_sync
from tidegate.errors import DestinationError
from tidegate.platform import Platform

pytestmark = pytest.mark.services


@pytest.fixture
def mysql_table(mysql_dsn: str) -> Iterator[str]:
    import pymysql

    from tidegate.egress.destinations.mysql.client import connect_args

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with pymysql.connect(**connect_args(mysql_dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{name}`")


def test_revocation_removes_the_subject_from_postgres_and_redis(
    people: Any, pg_dsn: str, pg_table: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_PG", pg_dsn)
    monkeypatch.setenv("T_REDIS", redis_url)
    prefix = f"test:{uuid.uuid4().hex[:8]}"
    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    people.sync(
        "to_pg",
        f"purpose: crm\ndestination: {{type: postgres, dsn_env: T_PG, table: {pg_table}}}\n"
        "mode: upsert\ntrigger: manual\n",
    )
    people.sync(
        "to_redis",
        "purpose: crm\ndestination: {type: redis, url_env: T_REDIS, "
        f"key_template: '{prefix}:{{key}}', ttl: 1h}}\nmode: upsert\ntrigger: manual\n",
    )
    with Platform.open(people.root) as platform:
        people.grant(platform, [1, 2, 3, 4])
        assert run_sync(platform, "to_pg").added == 4
        assert run_sync(platform, "to_redis").added == 4
        people.revoke(platform, [3])
        for name in ("to_pg", "to_redis"):
            report = run_sync(platform, name)
            assert (report.removed, report.revoked) == (1, 1)
        locations = platform.meta.subject_locations("3")
        removals = [r for _, r in platform.audit.records() if r.action == "sync_removal"]
    assert locations == []
    assert sorted(r.detail["sync"] for r in removals) == ["to_pg", "to_redis"]
    with psycopg.connect(pg_dsn) as conn:
        ids = conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(pg_table)))
        assert sorted(r[0] for r in ids.fetchall()) == [1, 2, 4]
    redis_dest = RedisDestination(redis_url, f"{prefix}:{{key}}")
    redis_dest.open({"id": "BIGINT", "score": "DOUBLE"}, "id")
    try:
        assert sorted(r["id"] for r in redis_dest.read_all()) == [1, 2, 4]
        assert 0 < redis_dest._client.ttl(f"{prefix}:1") <= 3600
    finally:
        redis_dest.delete([1, 2, 4])
        redis_dest.close()


def test_mariadb_refuses_some_rows_the_rest_land_and_they_are_retried(
    people: Any, mysql_dsn: str, mysql_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pymysql

    from tidegate.egress.destinations.mysql.client import connect_args

    monkeypatch.setenv("T_MYSQL", mysql_dsn)
    with pymysql.connect(**connect_args(mysql_dsn)) as conn, conn.cursor() as cur:
        cur.execute(
            f"CREATE TABLE `{mysql_table}` (id BIGINT PRIMARY KEY, email VARCHAR(100),"
            " score DOUBLE, CONSTRAINT score_ok CHECK (score < 100))"
        )
    people.set_rows([people.row(i, score=500.0 if i % 25 == 0 else 1.0) for i in range(1, 101)])
    people.build()
    people.sync(
        "to_mysql",
        f"purpose: ops\ndestination: {{type: mysql, dsn_env: T_MYSQL, table: {mysql_table}}}\n"
        "mode: upsert\ntrigger: manual\nfields: {id: id, email: email, score: score}\n",
    )
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "to_mysql")
        assert (report.added, report.failed) == (96, 4)
        errors = {e.key: e.message for e in platform.meta.sync_row_errors("to_mysql")}
        assert set(errors) == {"25", "50", "75", "100"}
        assert "score_ok" in errors["25"]
        retry = run_sync(platform, "to_mysql")
        assert retry.failed == 4
    with pymysql.connect(**connect_args(mysql_dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*), MAX(score) FROM `{mysql_table}`")
        assert cur.fetchone() == (96, 1.0)


def test_kafka_gets_change_events_and_a_tombstone_for_a_revoked_subject(
    people: Any, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from confluent_kafka.admin import AdminClient

    monkeypatch.setenv("T_KAFKA", kafka_bootstrap)
    topic = f"tidegate-sync-{uuid.uuid4().hex[:8]}"
    people.set_rows([people.row(i) for i in range(1, 6)])
    people.build()
    people.sync(
        "to_kafka",
        f"purpose: crm\ndestination: {{type: kafka, bootstrap_env: T_KAFKA, topic: {topic}}}\n"
        "mode: upsert\ntrigger: manual\n",
    )
    people.sync(
        "bad_mode",
        f"purpose: crm\ndestination: {{type: kafka, bootstrap_env: T_KAFKA, topic: {topic}}}\n"
        "mode: update\ntrigger: manual\n",
    )
    try:
        with Platform.open(people.root) as platform:
            people.grant(platform, [1, 2, 3])
            assert run_sync(platform, "to_kafka").added == 3
            people.revoke(platform, [2])
            assert run_sync(platform, "to_kafka").revoked == 1
            with pytest.raises(DestinationError, match="does not support mode 'update'"):
                run_sync(platform, "bad_mode")
        reader = KafkaDestination(kafka_bootstrap, topic)
        rows = reader.read_all()
        reader.close()
        assert sorted(r["id"] for r in rows) == [1, 3]
    finally:
        AdminClient({"bootstrap.servers": kafka_bootstrap}).delete_topics([topic])


def _windows(times: list[float], width: float = 1.0) -> int:
    """The most requests that arrived within any window of `width` seconds."""
    most = 0
    for i, start in enumerate(times):
        most = max(most, sum(1 for t in times[i:] if t - start < width))
    return most


def test_http_honours_retry_after_and_the_rate_limit(
    people: Any, crm_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("T_TOKEN", "s3cret")
    crm_server.script.append((429, {"Retry-After": "1"}, '{"error": "slow down"}'))
    crm_server.reject = lambda row: "score too high" if row["score"] > 100 else None
    people.set_rows([people.row(i, score=500.0 if i == 7 else 1.0) for i in range(1, 61)])
    people.build()
    people.sync(
        "to_api",
        f"purpose: ops\ndestination: {{type: http, url: '{crm_server.url}', auth_env: T_TOKEN}}\n"
        "mode: upsert\ntrigger: manual\nbatch_rows: 2\nrate_limit: 20\n"
        "retry: {backoff: 10ms}\n",
    )
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "to_api")
        errors = platform.meta.sync_row_errors("to_api")
    assert (report.added, report.failed) == (59, 1)
    assert [(e.key, e.message) for e in errors] == [("7", "score too high")]
    assert len(crm_server.rows) == 59
    requests = crm_server.requests
    assert {r.authorization for r in requests} == {"Bearer s3cret"}
    # the 429'd batch was retried after Retry-After, with the same idempotency key
    assert requests[1].at - requests[0].at >= 1.0
    assert requests[1].idempotency_key == requests[0].idempotency_key
    # 31 requests at 20 per second: never more than 20 (+1 at a window's edge) in a second
    assert len(requests) == 31
    assert _windows([r.at for r in requests]) <= 21


def test_http_transient_errors_are_retried_and_4xx_is_a_row_error(
    people: Any, crm_server: Any
) -> None:
    crm_server.script.extend(
        [
            (503, {}, "maintenance"),
            (502, {}, "bad gateway"),
            (422, {}, '{"error": {"message": "email is not valid"}}'),
        ]
    )
    people.set_rows([people.row(1)])
    people.build()
    people.sync(
        "to_api",
        f"purpose: ops\ndestination: {{type: http, url: '{crm_server.url}'}}\n"
        "trigger: manual\nretry: {backoff: 10ms, max_attempts: 5}\n",
    )
    with Platform.open(people.root) as platform:
        first = run_sync(platform, "to_api")
        assert first.failed == 1
        assert first.errors == ["1: HTTP 422: email is not valid"]
        second = run_sync(platform, "to_api")  # retried on the next run: lands
        assert (second.added, second.failed) == (1, 0)
    assert len(crm_server.requests) == 4
