"""Two `tidegate serve` replicas of one project (online store on real Redis): a role's
rate limit holds in total across them (shared buckets in Redis), and a revocation
written through replica A answers on replica B's very next read.

Parametrised by metadata backend: SQLite, and PostgreSQL (a schema of the test's own,
dropped afterwards), the production layout for several replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.demo.runner import _free_port, load_consent
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.products.builder import build_products, load_sources

pytestmark = [pytest.mark.services, pytest.mark.slow]

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
RATE = 5

POLICY = f"""
roles:
  limited_desk:
    description: A support desk held to {RATE} requests a second, in total.
    purposes: [support]
    rate_limit: {{requests_per_second: {RATE}, burst: {RATE}}}
  cmp:
    description: The consent management platform's backend.
    purposes: [support]
    write_consent: true
"""

#: metadata backend -> the `metadata:` line of tidegate.yml ({schema}: the test's own)
METADATA: dict[str, str] = {
    "sqlite": "  metadata: {{type: sqlite, path: .tidegate/metadata.db}}",
    "postgres": "  metadata: {{type: postgres, dsn_env: TIDEGATE_PG_DSN, schema: {schema}}}",
}


@pytest.fixture(params=sorted(METADATA))
def replicated_shop(
    request: pytest.FixtureRequest,
    demo_copy: Path,
    redis_url: str,
    pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """The demo on Redis (online store, so rate limits too) and the given metadata."""
    config = demo_copy / "tidegate.yml"
    tag = uuid.uuid4().hex[:8]
    prefix, schema = f"tgtest{tag}", f"replicas_{tag}"
    monkeypatch.setenv("TIDEGATE_PG_DSN", pg_dsn)  # read by this process and the replicas
    lines = []
    for line in config.read_text().splitlines():
        if line.strip().startswith("online:"):
            line = f"  online: {{type: redis, url: '{redis_url}', prefix: {prefix}}}"
        elif line.strip().startswith("metadata:"):
            line = METADATA[request.param].format(schema=schema)
        lines.append(line)
    config.write_text("\n".join(lines) + "\n")
    (demo_copy / "policies" / "replicas.yml").write_text(POLICY)
    with Platform.open(demo_copy) as platform:
        if request.param == "postgres":  # a fresh metadata store: the demo's choices again
            load_consent(platform, demo_copy)
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
    yield demo_copy
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(key)
    client.close()
    if request.param == "postgres":
        import psycopg

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _serve(project: Path, port: int) -> Any:
    return subprocess.Popen(
        [TIDEGATE, "serve", "-p", str(project), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIDEGATE_NO_FORWARD": "1"},
    )


def _wait_up(process: Any, port: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not come up")


@pytest.fixture
def replicas(replicated_shop: Path) -> Iterator[tuple[Path, str, str]]:
    ports = [_free_port(0), _free_port(0)]
    while ports[1] == ports[0]:
        ports[1] = _free_port(0)
    processes = [_serve(replicated_shop, port) for port in ports]
    try:
        for process, port in zip(processes, ports, strict=True):
            _wait_up(process, port)
        yield replicated_shop, f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}"
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def test_a_role_limit_holds_in_total_across_replicas(replicas: tuple[Path, str, str]) -> None:
    project, a, b = replicas
    with Platform.open(project) as platform:
        token = create_key(platform.meta, "desk-1", ["limited_desk"])[0]
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "support"}
    counts = {200: 0, 429: 0}
    other: list[int] = []
    lock = threading.Lock()
    seconds = 4.0
    stop = time.monotonic() + seconds

    def hammer(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as client:
            while time.monotonic() < stop:
                status = client.get("/v1/products/customer_360/entities/1", headers=headers)
                with lock:
                    if status.status_code in counts:
                        counts[status.status_code] += 1
                    else:
                        other.append(status.status_code)

    started = time.monotonic()
    threads = [threading.Thread(target=hammer, args=(base,)) for base in (a, b, a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert other == []
    assert counts[429] > 0  # the replicas were pushed past the limit
    # RATE per second in total, plus one burst (the bucket starts full), plus one token
    # refilled while the last requests were in flight
    assert counts[200] <= RATE * elapsed + RATE + 1, (counts, elapsed)
    assert counts[200] >= RATE * (seconds - 1), (counts, elapsed)  # and not far below it


def test_a_revocation_through_one_replica_shows_on_the_others_next_read(
    replicas: tuple[Path, str, str],
) -> None:
    project, a, b = replicas
    with Platform.open(project) as platform:
        marketer = create_key(platform.meta, "crm", ["marketer"])[0]
        cmp = create_key(platform.meta, "cmp", ["cmp"])[0]
        support, support_row = create_key(platform.meta, "desk-2", ["support_agent"])
    subject = "17"
    as_marketer = {"Authorization": f"Bearer {marketer}", "X-Purpose": "marketing.email"}
    path = f"/v1/products/customer_360/entities/{subject}"
    with httpx.Client(timeout=10) as client:
        assert client.get(b + path, headers=as_marketer).status_code == 200
        revoked = client.post(
            a + "/v1/consent",
            json={
                "subject": subject,
                "choices": [{"purpose": "marketing.email", "action": "revoke"}],
            },
            headers={"Authorization": f"Bearer {cmp}"},
        )
        assert revoked.status_code == 200, revoked.text
        assert client.get(b + path, headers=as_marketer).status_code == 404
        # a key revoked elsewhere (the CLI, through the metadata) is refused at once
        as_support = {"Authorization": f"Bearer {support}", "X-Purpose": "support"}
        assert client.get(b + path, headers=as_support).status_code == 200
        done = subprocess.run(
            [TIDEGATE, "keys", "revoke", support_row.key_id, "-p", str(project)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert client.get(b + path, headers=as_support).status_code == 401
        assert client.get(a + path, headers=as_support).status_code == 401
