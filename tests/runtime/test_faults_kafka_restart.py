"""The Kafka broker restarts while the worker runs: it reconnects, resumes, loses nothing.

The worker (`run_worker`, the loop of `tidegate run` and `tidegate worker`) consumes
real Kafka topics in a thread. One wave of orders is applied; a second wave is
produced and the broker is restarted right away, while the worker is busy with it; a
third wave is produced once the broker is back. In the end every order is in the raw
table once, the product equals a batch recompute and the online store shows it.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.errors import ServiceUnavailableError
from tidegate.ingest.intake import Intake, open_intake
from tidegate.platform import Platform
from tidegate.runtime.worker import run_worker
from tidegate.store.online.codec import decode_row

from .conftest import differences, faults  # type: ignore[import-not-found]

pytestmark = [pytest.mark.services, pytest.mark.slow]

CUSTOMERS = 50
WAVE = 300


def _kafka_project(root: Path, bootstrap: str, suffix: str) -> None:
    (root / "tidegate.yml").write_text(
        f"name: streamshop\nbackends:\n  log: {{type: kafka, bootstrap: '{bootstrap}',"
        f" namespace: t{suffix}}}\n"
    )
    for source in ("orders", "clicks", "accounts"):
        path = root / "sources" / f"{source}.yml"
        path.write_text(path.read_text() + f"topic: {source}-{suffix}\n")


def _submit(intake: Intake, first: int, count: int) -> None:
    """Orders `first` .. `first + count - 1`, retried while the broker is away (a retry
    may append some twice: the order id deduplicates them)."""
    orders = [
        {"order_id": i, "customer_id": 1 + i % CUSTOMERS, "amount": float(i % 17)}
        for i in range(first, first + count)
    ]
    deadline = time.monotonic() + 180
    while True:
        try:
            assert intake.submit("orders", orders, "test").accepted == count
            return
        except ServiceUnavailableError:
            assert time.monotonic() < deadline, "Kafka did not take the orders again"
            time.sleep(1)


def _online_orders(platform: Platform) -> int:
    types = {c: s.type for c, s in platform.project.products["customer_orders"].columns.items()}
    rows = platform.online.read_many("customer_orders", [str(c) for c in range(1, CUSTOMERS + 1)])
    return sum(int(decode_row(v, types)["order_count"]) for v in rows.values())


def test_worker_survives_a_broker_restart(built_stream_project: Path, kafka_bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    _kafka_project(built_stream_project, kafka_bootstrap, suffix)
    with Platform.open(built_stream_project) as platform:
        platform.online  # noqa: B018  (opened here, before the worker thread uses it)
        platform.warehouse  # noqa: B018
        intake = open_intake(platform.project)

        def target(stop: threading.Event) -> Any:
            return run_worker(
                platform,
                group=f"faults-{suffix}",
                schedule=False,
                stop=stop,
                session_timeout=6,
                on_batch=worker.on_batch,
            )

        worker = faults.WorkerThread(target)
        worker.start()
        try:
            _submit(intake, 1, WAVE)
            faults.wait_until(
                lambda: worker.alive() and _online_orders(platform) == WAVE, 120, "first wave"
            )
            _submit(intake, WAVE + 1, WAVE)
            faults.services("restart", "kafka")  # mid-run: the second wave is being applied
            _submit(intake, 2 * WAVE + 1, WAVE)
            faults.wait_until(
                lambda: worker.alive() and _online_orders(platform) == 3 * WAVE,
                180,
                "every order in the online store after the restart",
            )
            worker.stop()
            with platform.warehouse.cursor() as db:
                assert db.execute(
                    'SELECT count(*), count(DISTINCT order_id) FROM raw."orders"'
                ).fetchall() == [(3 * WAVE, 3 * WAVE)]
            assert differences(platform, "customer_orders") == 0
        finally:
            if worker.thread.is_alive():
                worker.event.set()
                worker.thread.join(60)
            faults.ensure_up("kafka", 9092)
            for source in ("orders", "clicks", "accounts"):
                intake.log.delete_topic(f"{source}-{suffix}")
            intake.log.delete_topic(f"t{suffix}.__changes.customer_orders")
            intake.close()
