"""kill -9 the worker at random points: nothing lost, nothing doubled.

200,000 events (orders with some re-sent ids, clicks, and malformed records) go
through a worker process that is killed with SIGKILL at least ten times, each time
while it is making progress, and restarted. Afterwards every product equals a batch
recompute, the online store equals the product, each event id is in the raw table
once, and each malformed record is in the dead-letter store once.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidegate.ingest.deadletters import DeadLetterStore
from tidegate.log.base import Message
from tidegate.log.sqlite import SqliteEventLog
from tidegate.platform import Platform
from tidegate.runtime.worker import DEFAULT_GROUP
from tidegate.store.online.codec import decode_row

from .conftest import differences  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("worker_process.py")
EVENTS = 200_000
KILLS = 10
DEADLINE = 300.0


def _events(rng: random.Random) -> tuple[dict[str, list[Message]], int, int]:
    orders, clicks, valid = [], [], []
    resent = malformed = 0
    order_id = 0
    while len(orders) + len(clicks) < EVENTS:
        roll = rng.random()
        customer = rng.randint(1, 60)  # 51-60 are not customers: their rows never show
        if roll < 0.6:
            order_id += 1
            body = {"order_id": order_id, "customer_id": customer, "amount": rng.randint(1, 500)}
            orders.append(Message(str(customer).encode(), json.dumps(body).encode()))
            valid.append(body)
        elif roll < 0.61 and order_id:
            resent += 1  # a producer retry: same order id, same content
            again = valid[rng.randrange(len(valid))]
            orders.append(Message(str(again["customer_id"]).encode(), json.dumps(again).encode()))
        elif roll < 0.612:
            malformed += 1
            orders.append(Message(str(customer).encode(), b'{"order_id": '))
        else:
            body = {"event_id": f"c{len(clicks)}", "customer_id": customer, "url": "/"}
            clicks.append(Message(str(customer).encode(), json.dumps(body).encode()))
    del resent
    return {"orders": orders, "clicks": clicks}, order_id, malformed


def _progress(log: SqliteEventLog, topics: list[str]) -> int:
    return sum(sum(log.committed(DEFAULT_GROUP, t).values()) for t in topics)


def _start(project: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(WORKER), str(project), "1500"])


def test_kill_9_loses_nothing_and_doubles_nothing(built_stream_project: Path) -> None:
    rng = random.Random(20261124)
    topics, orders, malformed = _events(rng)
    log = SqliteEventLog(built_stream_project / ".tidegate" / "log.db")
    for topic, messages in topics.items():
        for start in range(0, len(messages), 20_000):
            log.append(topic, messages[start : start + 20_000])
    total = sum(len(m) for m in topics.values())
    assert total == EVENTS

    kills = 0
    deadline = time.monotonic() + DEADLINE
    while kills < KILLS:
        seen = _progress(log, list(topics))
        worker = _start(built_stream_project)
        try:
            while _progress(log, list(topics)) == seen:  # kill only a worker that is working
                assert time.monotonic() < deadline, "the worker made no progress"
                assert worker.poll() is None, "the worker exited"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.25))
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
        kills += 1
        assert _progress(log, list(topics)) < total, "finished before the tenth kill"

    worker = _start(built_stream_project)
    try:
        while _progress(log, list(topics)) < total:
            assert time.monotonic() < deadline, "the last worker did not finish"
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    log.close()

    with Platform.open(built_stream_project) as platform:
        with platform.warehouse.cursor() as db:
            assert db.execute(
                'SELECT count(*), count(DISTINCT order_id) FROM raw."orders"'
            ).fetchall() == [(orders, orders)]
            clicks = len(topics["clicks"])
            assert db.execute(
                'SELECT count(*), count(DISTINCT event_id) FROM raw."clicks"'
            ).fetchall() == [(clicks, clicks)]
            rows = db.sql('SELECT * FROM products."customer_orders"').to_arrow_table().to_pylist()
        assert differences(platform, "customer_orders") == 0
        types = {c: s.type for c, s in platform.project.products["customer_orders"].columns.items()}
        online = platform.online.read_many("customer_orders", [str(r["customer_id"]) for r in rows])
        assert {k: decode_row(v, types) for k, v in online.items()} == {
            str(r["customer_id"]): r for r in rows
        }
    dead = DeadLetterStore(built_stream_project / ".tidegate" / "metadata.db")
    assert dead.count("orders") == malformed
    dead.close()
