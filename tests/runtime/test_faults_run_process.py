"""`tidegate run` as a real process: events posted over HTTP come back changed through
the API, and Ctrl-C (SIGINT) stops it cleanly, without a traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.demo.runner import _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key

from .conftest import faults  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))


def test_run_ingests_serves_and_stops_on_sigint(built_stream_project: Path) -> None:
    with Platform.open(built_stream_project) as platform:
        ingest = "Bearer " + create_key(platform.meta, "shop-backend", ["ingester"])[0]
        support = "Bearer " + create_key(platform.meta, "desk", ["support_agent"])[0]
    port = _free_port(0)
    process = subprocess.Popen(
        [TIDEGATE, "run", "-p", str(built_stream_project), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            def up() -> bool:
                assert process.poll() is None, process.communicate()
                try:
                    return client.get("/v1/health").status_code == 200
                except httpx.TransportError:
                    return False

            faults.wait_until(up, 60, "the API of `tidegate run`")

            def customer(key: int) -> dict[str, Any]:
                response = client.get(
                    f"/v1/products/customer_orders/entities/{key}",
                    headers={"Authorization": support, "X-Purpose": "support"},
                )
                assert response.status_code == 200, response.text
                data: dict[str, Any] = response.json()["data"]
                return data

            assert customer(5)["order_count"] == 0
            posted = client.post(
                "/v1/events/orders",
                json=[
                    {"order_id": 1, "customer_id": 5, "amount": 12.5},
                    {"order_id": 2, "customer_id": 5, "amount": 7.5},
                    {"order_id": 3, "customer_id": "five", "amount": 1},
                ],
                headers={"Authorization": ingest},
            )
            assert posted.json() == {
                "accepted": 2,
                "rejected": [
                    {"index": 2, "reason": "column 'customer_id': 'five' is not an integer"}
                ],
                "unknown_fields": {"events": 0, "fields": {}, "policy": "drop"},
            }
            faults.wait_until(
                lambda: customer(5)["order_count"] == 2, 60, "the orders visible through the API"
            )
            assert customer(5)["revenue"] == 20.0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise AssertionError(f"`tidegate run` ignored SIGINT\n{out}\n{err}") from None
    assert process.returncode in (0, 130), (process.returncode, out, err)
    assert "Traceback" not in out + err
    assert "stopping" in out
