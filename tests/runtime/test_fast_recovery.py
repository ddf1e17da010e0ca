"""Regression (issue 15): after a `kill -9` and restart, consumption resumes at once, not
after the 10 s session timeout of the dead member.

* Embedded log: `tidegate run` is killed and started again; an order posted once the new
  process answers shows through the API well within the session timeout, because the
  new member sees that the old member's process is gone (pid and start time).
* Kafka: a member with a stable `group.instance.id` (static membership) is killed; its
  successor under the same id gets the partitions back without waiting for the session.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.demo.runner import _free_port
from tidegate.log.base import Message
from tidegate.platform import Platform
from tidegate.platform.keys import create_key

from .conftest import faults  # type: ignore[import-not-found]

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
SESSION = 10.0  # the worker's session timeout (run_worker's default)
MEMBER = Path(__file__).parents[1] / "log" / "member_process.py"


class Run:
    """`tidegate run` in its own process, and an API client for it."""

    def __init__(self, project: Path, ingest: str, support: str) -> None:
        self.port = _free_port(0)
        self.ingest, self.support = ingest, support
        self.process = subprocess.Popen(
            [TIDEGATE, "run", "-p", str(project), "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)

    def up(self) -> bool:
        assert self.process.poll() is None, self.process.communicate()
        try:
            return self.client.get("/v1/health").status_code == 200
        except httpx.TransportError:
            return False

    def orders(self, customer: int) -> int:
        response = self.client.get(
            f"/v1/products/customer_orders/entities/{customer}",
            headers={"Authorization": self.support, "X-Purpose": "support"},
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return int(data["order_count"])

    def post(self, order_id: int, customer: int) -> None:
        posted = self.client.post(
            "/v1/events/orders",
            json=[{"order_id": order_id, "customer_id": customer, "amount": 1.0}],
            headers={"Authorization": self.ingest},
        )
        assert posted.json() == {
            "accepted": 1,
            "rejected": [],
            "unknown_fields": {"policy": "drop", "events": 0, "fields": {}},
        }

    def kill(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.mark.slow
def test_a_restarted_run_resumes_consuming_at_once(built_stream_project: Path) -> None:
    with Platform.open(built_stream_project) as platform:
        ingest = "Bearer " + create_key(platform.meta, "backend", ["ingester"])[0]
        support = "Bearer " + create_key(platform.meta, "desk", ["support_agent"])[0]
    first = Run(built_stream_project, ingest, support)
    try:
        faults.wait_until(first.up, 60, "the first `tidegate run`")
        first.post(1, 5)
        faults.wait_until(lambda: first.orders(5) == 1, 30, "the first order")
    finally:
        first.kill()  # kill -9: its group membership stays behind in the log file
    killed = time.monotonic()
    second = Run(built_stream_project, ingest, support)
    try:
        faults.wait_until(second.up, 60, "the restarted `tidegate run`")
        started = time.monotonic()
        second.post(2, 5)
        faults.wait_until(lambda: second.orders(5) == 2, 30, "the order after the restart")
        resumed = time.monotonic()
    finally:
        second.process.send_signal(signal.SIGINT)
        try:
            second.process.wait(30)
        finally:
            second.kill()
    # Waiting for the dead member's session would take ~SESSION s after the kill.
    assert resumed - started < SESSION / 4, f"resumed {resumed - started:.1f}s after start"
    assert resumed - killed < SESSION * 0.8, f"resumed {resumed - killed:.1f}s after the kill"


@pytest.mark.services
def test_a_static_kafka_member_gets_its_partitions_back_at_once(
    kafka_bootstrap: str,
) -> None:
    from tidegate.log.kafka import KafkaEventLog

    log = KafkaEventLog(kafka_bootstrap)
    topic, group, instance = (f"{n}-{uuid.uuid4().hex[:10]}" for n in ("t", "g", "worker"))
    log.append(topic, [Message(f"k{i}".encode(), b"v") for i in range(20)])
    arguments = ["kafka", kafka_bootstrap, group, topic, str(SESSION), instance]
    child = subprocess.Popen(
        [sys.executable, str(MEMBER), *arguments],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("ready"), line
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    killed = time.monotonic()
    consumer = log.consumer(group, [topic], session_timeout=SESSION, instance_id=instance)
    try:
        got: list[Any] = []
        while len(got) < 20:
            assert time.monotonic() - killed < SESSION, "waited for the session timeout"
            got += consumer.poll(100, 0.2)
        taken = time.monotonic() - killed
    finally:
        consumer.close()
        log.close()
    assert taken < SESSION / 2, f"took {taken:.1f}s"
