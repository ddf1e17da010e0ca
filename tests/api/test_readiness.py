"""`/v1/health/ready` checks every backend and names the one that is down; `/v1/health/live`
stays a liveness probe. The Redis here is the test's own, on another port, so stopping
it leaves the shared one serving everyone else."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tidegate.api import create_app
from tidegate.demo.runner import _free_port
from tidegate.platform import Platform
from tidegate.products.builder import build_products, load_sources

pytestmark = pytest.mark.services


def _answers(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed (scripts/services.sh installs it)"
    port = _free_port(0)
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not _answers(port):
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.1)
        yield port, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_ready_names_the_backend_that_is_down(
    stream_project: Path, own_redis: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, server = own_redis
    config = stream_project / "tidegate.yml"
    config.write_text(
        config.read_text()
        + f"backends:\n  online: {{type: redis, url: 'redis://127.0.0.1:{port}/0'}}\n"
    )
    with Platform.open(stream_project) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        with TestClient(create_app(platform)) as client:
            ready = client.get("/v1/health/ready")
            assert ready.status_code == 200, ready.text
            body = ready.json()
            assert body["status"] == "ready"
            assert [c["name"] for c in body["checks"]] == [
                "warehouse",
                "online store",
                "event log",
                "metadata",
            ]
            assert all(c["ok"] for c in body["checks"])

            server.terminate()
            server.wait(10)
            down = client.get("/v1/health/ready")
            assert down.status_code == 503
            assert down.json()["status"] == "unavailable"
            assert down.json()["down"] == ["online store"]
            failing = next(c for c in down.json()["checks"] if c["name"] == "online store")
            assert failing["backend"] == "redis"
            assert "Connection" in failing["note"] or "connect" in failing["note"].lower()

            live = client.get("/v1/health/live")
            assert live.status_code == 200
            assert live.json()["status"] == "ok"


def test_ready_names_the_metadata_store_when_its_postgresql_stops(
    stream_project: Path, own_postgres: Any
) -> None:
    config = stream_project / "tidegate.yml"
    config.write_text(
        config.read_text()
        + f"backends:\n  metadata: {{type: postgres, dsn: '{own_postgres.dsn}'}}\n"
    )
    with Platform.open(stream_project) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
        with TestClient(create_app(platform)) as client:
            assert client.get("/v1/health/ready").status_code == 200
            own_postgres.pg_ctl("stop")
            down = client.get("/v1/health/ready")
            assert down.status_code == 503
            assert down.json()["down"] == ["metadata"]
            failing = next(c for c in down.json()["checks"] if c["name"] == "metadata")
            assert failing["backend"] == "postgres"
            assert client.get("/v1/health/live").status_code == 200
            own_postgres.pg_ctl("start")

            def back() -> bool:
                return client.get("/v1/health/ready").status_code == 200

            deadline = time.monotonic() + 30
            while not back():
                assert time.monotonic() < deadline, "readiness did not come back"
                time.sleep(0.3)
