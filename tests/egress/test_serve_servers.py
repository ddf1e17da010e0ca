"""`tidegate serve` under each HTTP server it offers (`serve.server`, `--server`,
`--workers`): the same guarded answers, and every read audited once the server stops
(each worker process's audit writer stores what it holds when the worker exits)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tidegate.demo.runner import _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key

pytestmark = pytest.mark.slow

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def _wait_up(process: subprocess.Popen[str], port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}: {process.communicate()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("serve did not come up")


@pytest.mark.parametrize(("server", "workers"), [("granian", 2), ("uvicorn", 2)])
def test_each_server_answers_through_the_guard_and_audits(
    demo_copy: Path, server: str, workers: int
) -> None:
    with Platform.open(demo_copy) as platform:
        token = create_key(platform.meta, "desk", ["support_agent"])[0]
        before = len(list(platform.audit.records()))
    port = _free_port(0)
    process = subprocess.Popen(
        [
            *(TIDEGATE, "serve", "-p", str(demo_copy), "--port", str(port)),
            *("--server", server, "--workers", str(workers)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TIDEGATE_NO_FORWARD": "1"},
    )
    try:
        _wait_up(process, port)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}", "X-Purpose": "support"}
        for _ in range(6):  # enough for both workers to answer some
            found = httpx.get(f"{base}/v1/products/customer_360/entities/1", headers=headers)
            assert found.status_code == 200, found.text
            assert found.json()["data"]["customer_id"] == 1
            assert found.headers["cache-control"] == "no-store"
        denied = httpx.get(
            f"{base}/v1/products/customer_360/entities/1",
            headers={**headers, "X-Purpose": "marketing.email"},
        )
        assert denied.status_code == 403
        lookup = httpx.post(
            f"{base}/v1/products/customer_360/lookup", json={"keys": [1, 2]}, headers=headers
        )
        assert lookup.status_code == 200
        assert [r["found"] for r in lookup.json()["results"]] == [True, True]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert f"({server}, {workers} workers)" in out
    with Platform.open(demo_copy) as platform:
        records = list(platform.audit.records())[before:]
    actions = [(r.action, r.outcome) for _, r in records if r.principal == "desk"]
    assert actions.count(("serve", "allowed")) == 7, (actions, err[-2000:])
    assert actions.count(("serve", "denied")) == 1


def test_an_unknown_server_is_a_usage_error(demo_copy: Path) -> None:
    done = subprocess.run(
        [TIDEGATE, "serve", "-p", str(demo_copy), "--server", "gunicorn"],
        capture_output=True,
        text=True,
        env={**os.environ, "TIDEGATE_NO_FORWARD": "1"},
        timeout=60,
    )
    assert done.returncode == 2
    assert "choose uvicorn or granian" in done.stderr
    assert "Traceback" not in done.stderr
