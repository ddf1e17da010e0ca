"""What the `ingest` and `freshness` benchmarks share: a one-source project, events,
`tidegate run` as a process, and Kafka helpers.

The project is the smallest real-time one: a stream source `events` (event id, customer,
amount, time) and an incremental product `customer_counts` (events and amount per
customer, freshness 1s), served under the purpose `support`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import ROOT, wait_until

SOURCE = "events"
PRODUCT = "customer_counts"
KAFKA_BOOTSTRAP = os.environ.get("TIDEGATE_BENCH_KAFKA", "127.0.0.1:9092")
TIDEGATE = str(Path(sys.executable).with_name("tidegate"))

FILES = {
    "sources/events.yml": """
name: events
type: stream
event_id: event_id
event_time: occurred_at
subject: customer_id
columns:
  event_id: {type: BIGINT, nullable: false}
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  amount: {type: DOUBLE}
  occurred_at: {type: TIMESTAMPTZ}
""",
    "products/customer_counts.yml": """
name: customer_counts
owner: bench
key: customer_id
subject: customer_id
freshness: 1s
purposes: [support]
sql: |
  SELECT customer_id, count(*) AS events, sum(amount) AS amount, max(occurred_at) AS last_at
  FROM events GROUP BY customer_id
columns:
  customer_id: {type: BIGINT, nullable: false, classification: user.unique_id}
  events: {type: BIGINT, classification: none}
  amount: {type: DOUBLE, classification: none}
  last_at: {type: TIMESTAMPTZ, classification: none}
""",
    "policies/policy.yml": """
purposes:
  support: {legal_basis: contract}
roles:
  ingester: {purposes: [support], products: [], ingest: ["*"]}
  support_agent: {purposes: [support]}
treatments:
  "*":
    user: clear
""",
}


def write_project(root: Path, log: dict[str, Any], topic: str | None = None) -> Path:
    """The bench project in `root`, with the event log `log` (`{"type": "sqlite"}` or
    `{"type": "kafka", "bootstrap": ...}`) and, optionally, the source's topic."""
    root.mkdir(parents=True, exist_ok=True)
    backends = {"log": log}
    (root / "tidegate.yml").write_text(
        "name: bench\nbackends: " + json.dumps(backends) + "\nserve: {port: 8787}\n"
    )
    for relative, text in FILES.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        body = text.lstrip("\n")
        if relative == "sources/events.yml" and topic:
            body += f"topic: {topic}\n"
        path.write_text(body)
    return root


def build(root: Path) -> tuple[str, str]:
    """Build the product (empty) and create an ingest key and a support key."""
    from tidegate.platform import Platform
    from tidegate.platform.keys import create_key
    from tidegate.products.builder import build_products, load_sources

    with Platform.open(root) as platform:
        load_sources(platform)
        results = build_products(platform)
        if any(r.status != "live" for r in results):
            raise RuntimeError(f"the bench project did not build: {results}")
        ingest = create_key(platform.meta, "bench-producer", ["ingester"])[0]
        support = create_key(platform.meta, "bench-reader", ["support_agent"])[0]
    return ingest, support


def make_events(first: int, count: int, customers: int, seed: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed + first)
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).isoformat()
    return [
        {
            "event_id": first + i,
            "customer_id": rng.randint(1, customers),
            "amount": float(rng.randint(1, 500)),
            "occurred_at": at,
        }
        for i in range(count)
    ]


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TidegateRun:
    """`tidegate run -p ROOT --port PORT` as a process, stopped with SIGINT."""

    def __init__(self, root: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.log_path = log_path
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [TIDEGATE, "run", "-p", str(root), "--port", str(self.port)],
            cwd=ROOT.parent,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_up(self, timeout: float = 90) -> None:
        import httpx

        def up() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"`tidegate run` exited; see {self.log_path}")
            try:
                return httpx.get(f"{self.base}/v1/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(up, timeout, 0.1):
            raise RuntimeError(f"`tidegate run` did not answer within {timeout}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()


def kafka_topic(name: str, partitions: int = 3) -> None:
    from tidegate.log.base import TopicSpec
    from tidegate.log.kafka import KafkaEventLog

    log = KafkaEventLog(KAFKA_BOOTSTRAP)
    try:
        log.create_topic(TopicSpec(name, partitions))
    finally:
        log.close()


def kafka_delete(names: list[str]) -> None:
    from tidegate.log.kafka import KafkaEventLog

    log = KafkaEventLog(KAFKA_BOOTSTRAP)
    try:
        for name in names:
            log.delete_topic(name)
    finally:
        log.close()


def kafka_produce(topic: str, events: list[dict[str, Any]]) -> None:
    """Produce `events` keyed by customer, as an application would (untimed setup)."""
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": KAFKA_BOOTSTRAP, "linger.ms": 20, "batch.size": 1 << 20}
    )
    for event in events:
        while True:
            try:
                producer.produce(topic, key=str(event["customer_id"]), value=encode(event))
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("Kafka did not take every event")
