"""PostgreSQL CDC under `tidegate run` (issue 17 item 3), as a real process.

* inserts, updates, deletes and a truncate on a real table each show in the API within
  the product's 5s freshness SLO (pgoutput, the default plugin, with its publication);
  `status` shows the slot and its lag, `/metrics` too;
* a dropped slot is a clear error in `status` (and the products behind it breach);
  `tidegate cdc reset` (forwarded to the runtime) takes a fresh snapshot;
* PostgreSQL restarted mid-stream, and the runtime killed (-9) mid-stream: the capture
  resumes from the slot's confirmed LSN, and every customer's row equals what the
  operational table says: nothing lost, nothing doubled. This PostgreSQL is the test's
  own (same binaries, another port), so the shared one keeps serving other tests.
"""

from __future__ import annotations

import json
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
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.products.builder import build_products, load_sources

from .conftest import faults  # type: ignore[import-not-found]

pytestmark = [pytest.mark.services, pytest.mark.slow]

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
SLO = 5.0

ACCOUNTS = """name: accounts
type: postgres
cdc: logical
dsn: "{dsn}"
table: {table}
slot: {slot}
key: id
subject: customer_id
columns:
  id: {{type: BIGINT, nullable: false}}
  customer_id: {{type: BIGINT, classification: user.unique_id}}
  tier: {{type: VARCHAR}}
"""


def cdc_project(root: Path, dsn: str, table: str, slot: str) -> Path:
    """The stream shop with `accounts` captured from PostgreSQL, a 5s SLO on
    customer_orders and an account count per customer (a doubled row would show)."""
    (root / "sources" / "accounts.yml").write_text(ACCOUNTS.format(dsn=dsn, table=table, slot=slot))
    product = root / "products" / "customer_orders.yml"
    text = product.read_text().replace("freshness: 1s", f"freshness: {SLO:g}s")
    text = text.replace(
        "SELECT customer_id, max(tier) AS tier FROM accounts",
        "SELECT customer_id, max(tier) AS tier, count(*) AS accounts FROM accounts",
    )
    text = text.replace("a.tier\n", "a.tier, coalesce(a.accounts, 0) AS accounts\n")
    text = text.replace(
        "  tier: {type: VARCHAR, classification: none}\n",
        "  tier: {type: VARCHAR, classification: none}\n"
        "  accounts: {type: BIGINT, classification: none}\n",
    )
    product.write_text(text)
    with Platform.open(root) as platform:
        load_sources(platform)
        assert all(r.status == "live" for r in build_products(platform))
    return root


class Runtime:
    """`tidegate run` in a process, with an API client holding a support key."""

    def __init__(self, project: Path) -> None:
        self.project = project
        with Platform.open(project) as platform:
            self.token = "Bearer " + create_key(platform.meta, "desk", ["support_agent"])[0]
        self.process: subprocess.Popen[str] | None = None
        self.client: httpx.Client | None = None

    def start(self) -> Runtime:
        port = _free_port(0)
        with (self.project / "run.log").open("a") as log:  # the child keeps its own handle
            self.process = subprocess.Popen(
                [TIDEGATE, "run", "-p", str(self.project), "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def up() -> bool:
            assert self.process is not None
            assert self.process.poll() is None, (self.project / "run.log").read_text()
            try:
                assert self.client is not None
                return self.client.get("/v1/health/live").status_code == 200
            except httpx.TransportError:
                return False

        faults.wait_until(up, 90, "the API of `tidegate run`")
        return self

    def customer(self, key: int) -> dict[str, Any]:
        assert self.client is not None
        response = self.client.get(
            f"/v1/products/customer_orders/entities/{key}",
            headers={"Authorization": self.token, "X-Purpose": "support"},
        )
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    def cli(self, *args: str) -> Any:
        done = subprocess.run(
            [TIDEGATE, *args, "-p", str(self.project), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def stop(self, sig: int = signal.SIGINT) -> None:
        log = self.project / "run.log"
        if log.exists():  # shown by pytest when the test fails
            print(log.read_text()[-5000:])
        if self.client is not None:
            self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def within_slo(check: Any, what: str) -> float:
    """Wait for `check()`; fail unless it held within the SLO. Returns the seconds."""
    started = time.monotonic()
    faults.wait_until(check, SLO * 4, what)  # fail with a clear message first
    took = time.monotonic() - started
    assert took <= SLO, f"{what}: visible after {took:.1f}s, SLO {SLO:g}s"
    print(f"{what}: visible in the API after {took:.2f}s")
    return took


def test_changes_reach_the_api_within_the_slo_and_status_shows_the_slot(
    stream_project: Path, pg_dsn: str, pg_table: str
) -> None:
    import psycopg

    slot = f"tg_{uuid.uuid4().hex[:12]}"
    pg = psycopg.connect(pg_dsn, autocommit=True)
    pg.execute(f"CREATE TABLE {pg_table} (id bigint PRIMARY KEY, customer_id bigint, tier text)")
    pg.execute(f"INSERT INTO {pg_table} VALUES (1, 11, 'free'), (2, 12, 'gold')")
    runtime = Runtime(cdc_project(stream_project, pg_dsn, pg_table, slot))
    try:
        runtime.start()
        faults.wait_until(
            lambda: runtime.customer(12)["tier"] == "gold", 120, "the snapshot in the API"
        )
        assert runtime.customer(11)["tier"] == "free"

        pg.execute(f"INSERT INTO {pg_table} VALUES (3, 13, 'pro')")
        within_slo(lambda: runtime.customer(13)["tier"] == "pro", "an INSERT")
        pg.execute(f"UPDATE {pg_table} SET tier = 'gold' WHERE id = 1")
        within_slo(lambda: runtime.customer(11)["tier"] == "gold", "an UPDATE")
        pg.execute(f"DELETE FROM {pg_table} WHERE id = 2")
        within_slo(lambda: runtime.customer(12)["accounts"] == 0, "a DELETE")
        assert runtime.customer(12)["tier"] is None
        pg.execute(f"TRUNCATE {pg_table}")
        within_slo(
            lambda: [runtime.customer(c)["accounts"] for c in (11, 13)] == [0, 0], "a TRUNCATE"
        )

        status = runtime.cli("status")
        (shown,) = status["cdc"]
        assert (shown["source"], shown["slot"], shown["error"]) == ("accounts", slot, None)
        assert isinstance(shown["lag_bytes"], int)
        assert shown["lag_seconds"] is not None
        assert shown["confirmed_lsn"]
        orders = next(p for p in status["products"] if p["product"] == "customer_orders")
        assert orders["within_slo"] is True
        assert runtime.client is not None
        metrics = runtime.client.get("/metrics").text
        assert f'tidegate_cdc_slot_lag_bytes{{slot="{slot}",source="accounts"}}' in metrics
        assert f'tidegate_cdc_capture_failing{{slot="{slot}",source="accounts"}} 0.0' in metrics

        # A dropped slot: a clear error with what to do, and the product breaches.
        def dropped() -> bool:
            try:
                pg.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                return True
            except psycopg.errors.ObjectInUse:
                return False  # the capture is reading it this instant

        faults.wait_until(dropped, 30, "the slot dropped")

        def reported() -> bool:
            (state,) = runtime.cli("status")["cdc"]
            return bool(state["error"])

        faults.wait_until(reported, 30, "status to report the dropped slot")
        status = runtime.cli("status")
        assert "no longer exists" in status["cdc"][0]["error"]
        assert "tidegate cdc reset accounts" in status["cdc"][0]["error"]
        orders = next(p for p in status["products"] if p["product"] == "customer_orders")
        assert orders["within_slo"] is False
        pg.execute(f"INSERT INTO {pg_table} VALUES (4, 14, 'pro')")
        reset = runtime.cli("cdc", "reset", "accounts")
        assert reset["slot"] == slot
        faults.wait_until(
            lambda: runtime.customer(14)["tier"] == "pro", 60, "the fresh snapshot in the API"
        )
        assert runtime.cli("status")["cdc"][0]["error"] is None
    finally:
        runtime.stop()
        pg.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            (slot,),
        )
        pg.execute(f"DROP PUBLICATION IF EXISTS {slot}")  # pgoutput's, named like the slot
        pg.close()


def _expected(pg: Any, table: str) -> dict[int, tuple[str | None, int]]:
    """customer -> (max tier, number of accounts), as the operational table says."""
    rows = pg.execute(
        f"SELECT customer_id, max(tier), count(*) FROM {table} GROUP BY customer_id"
    ).fetchall()
    found = {int(c): (t, int(n)) for c, t, n in rows}
    return {c: found.get(c, (None, 0)) for c in range(1, 51)}


def test_capture_resumes_after_postgres_and_runtime_restarts(
    stream_project: Path, own_postgres: Any
) -> None:
    table, slot = "accounts", "tg_restarts"
    pg = own_postgres.connect()
    pg.execute(f"CREATE TABLE {table} (id bigint PRIMARY KEY, customer_id bigint, tier text)")
    pg.execute(f"INSERT INTO {table} SELECT i, i, 'free' FROM generate_series(1, 40) i")
    runtime = Runtime(cdc_project(stream_project, own_postgres.dsn, table, slot))

    def mirrors() -> bool:
        want = _expected(pg, table)
        return all(
            (runtime.customer(c)["tier"], runtime.customer(c)["accounts"]) == want[c]
            for c in range(1, 51)
        )

    try:
        runtime.start()
        faults.wait_until(lambda: runtime.customer(40)["tier"] == "free", 60, "the snapshot")
        # Changes in flight while PostgreSQL restarts.
        for step in range(1, 6):
            pg.execute(f"UPDATE {table} SET tier = 'gold' WHERE id % 5 = {step % 5}")
            pg.execute(f"INSERT INTO {table} VALUES ({100 + step}, {step}, 'pro')")
        pg.close()
        own_postgres.pg_ctl("restart")
        pg = own_postgres.connect()
        pg.execute(f"DELETE FROM {table} WHERE id % 7 = 0")
        pg.execute(f"UPDATE {table} SET customer_id = 50 WHERE id IN (1, 2)")
        faults.wait_until(mirrors, 90, "the API to mirror PostgreSQL after its restart")

        # The runtime killed mid-stream; changes meanwhile; a new runtime resumes.
        pg.execute(f"UPDATE {table} SET tier = 'pro' WHERE id % 3 = 0")
        runtime.stop(signal.SIGKILL)
        pg.execute(
            f"INSERT INTO {table} SELECT i, i % 50 + 1, 'late' FROM generate_series(200, 230) i"
        )
        pg.execute(f"DELETE FROM {table} WHERE id % 11 = 0")
        runtime.start()
        faults.wait_until(mirrors, 90, "the API to mirror PostgreSQL after a kill -9")

        status = runtime.cli("status")
        (state,) = status["cdc"]
        assert state["error"] is None
        lag_row = pg.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), confirmed_flush_lsn)"
            " FROM pg_replication_slots WHERE slot_name = %s",
            (slot,),
        ).fetchone()
        assert lag_row is not None  # the slot survived both restarts
    finally:
        runtime.stop()
        pg.close()
