"""Two `tidegate worker` processes in one Kafka group on one project (DuckDB warehouse).

The warehouse has one writer process, so the second worker is a hot standby: it says
what it waits for, stays up (never exit 70) through a minute of traffic, and when the
first is killed (-9) it takes the warehouse, joins the group and carries on. In the end
nothing is lost or doubled: every order is in the raw table once, the product equals a
batch recompute, and the online store shows every order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tidegate.ingest.intake import open_intake
from tidegate.platform import Platform
from tidegate.runtime.control import answers, socket_path
from tidegate.store.online.codec import decode_row

from .conftest import differences  # type: ignore[import-not-found]

pytestmark = [pytest.mark.services, pytest.mark.slow]

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
CUSTOMERS = 50
TRAFFIC_SECONDS = float(os.environ.get("TIDEGATE_TWO_WORKERS_SECONDS", "60"))


def _kafka_project(root: Path, bootstrap: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    (root / "tidegate.yml").write_text(
        f"name: streamshop\nbackends:\n  log: {{type: kafka, bootstrap: '{bootstrap}',"
        f" namespace: t{suffix}}}\n"
    )
    for source in ("orders", "clicks", "accounts"):
        path = root / "sources" / f"{source}.yml"
        path.write_text(path.read_text() + f"topic: {source}-{suffix}\n")


def _worker(root: Path, log: Path) -> Any:
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [TIDEGATE, "worker", "-p", str(root), "--no-schedule"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TIDEGATE_LOG_LEVEL": "WARNING"},
        )


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _online_orders(platform: Platform) -> int:
    types = {c: s.type for c, s in platform.project.products["customer_orders"].columns.items()}
    rows = platform.online.read_many("customer_orders", [str(c) for c in range(1, CUSTOMERS + 1)])
    return sum(int(decode_row(v, types)["order_count"]) for v in rows.values())


class Traffic:
    """Orders into Kafka from a thread, a batch every 0.2s, until stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from tidegate.project import load_project

        intake = open_intake(load_project(self.root))
        try:
            while not self._stop.is_set():
                orders = [
                    {"order_id": i, "customer_id": 1 + i % CUSTOMERS, "amount": float(i % 17)}
                    for i in range(self.sent, self.sent + 20)
                ]
                assert intake.submit("orders", orders, "test").accepted == len(orders)
                self.sent += len(orders)
                self._stop.wait(0.2)
        finally:
            intake.close()

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_second_worker_is_a_standby_that_takes_over_after_kill_9(
    built_stream_project: Path, kafka_bootstrap: str, tmp_path: Path
) -> None:
    root = built_stream_project
    _kafka_project(root, kafka_bootstrap)
    admin = socket_path(root / ".tidegate")
    first = _worker(root, tmp_path / "first.log")
    second = None
    try:
        _wait(lambda: first.poll() is None and answers(admin), 90, "the first worker")
        second = _worker(root, tmp_path / "second.log")
        standby = tmp_path / "second.log"
        _wait(lambda: "standby: waiting for the warehouse" in standby.read_text(), 60, "standby")
        assert f"PID {first.pid}" in standby.read_text()
        with Traffic(root) as traffic:
            deadline = time.monotonic() + TRAFFIC_SECONDS
            while time.monotonic() < deadline:
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert second.poll() is None, standby.read_text()
                time.sleep(1)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            _wait(lambda: "running" in standby.read_text(), 60, "the standby to take over")
            assert answers(admin)  # the standby now answers the CLI
            time.sleep(5)  # traffic while the second worker holds the project
        assert second.poll() is None, standby.read_text()
        total = traffic.sent

        def applied() -> bool:
            with Platform.open(root) as platform:
                return _online_orders(platform) == total

        _wait(applied, 120, f"all {total} orders in the online store")
        status = subprocess.run(
            [TIDEGATE, "status", "-p", str(root)], capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 0, status.stderr
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    assert second is not None
    assert second.returncode in (0, 130), (tmp_path / "second.log").read_text()
    log_text = (tmp_path / "second.log").read_text()
    assert "internal error" not in log_text
    with Platform.open(root) as platform:
        with platform.warehouse.cursor() as db:
            row = db.execute(
                'SELECT count(*), count(DISTINCT order_id) FROM raw."orders"'
            ).fetchone()
        assert row is not None
        assert row[0] == row[1]  # nothing doubled
        assert row[1] == total  # nothing lost
        assert differences(platform, "customer_orders") == 0
        assert _online_orders(platform) == total
