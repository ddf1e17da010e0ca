"""While `tidegate run` holds a project, every command works and prints what it prints
when nothing runs; an erased subject stays erased through the runtime's rebuilds and
syncs; a process that is not a runtime holding the warehouse makes commands wait, then
fail naming it (never exit 70, never a partial answer reported as success)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.demo.runner import _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key

from .control_helpers import (  # type: ignore[import-not-found]
    cli,
    comparable,
    live_shop,
    running,
    wait_for,
)

pytestmark = pytest.mark.slow

SUBJECT = "42"


def _commands(out: Path) -> list[list[str]]:
    return [
        ["build"],
        ["sync", "run", "crm_audience"],
        [
            "export",
            "customer_360",
            "--purpose",
            "analytics",
            "--quasi-identifiers",
            "postal_code,birth_date",
            "--out",
            str(out),
        ],
        ["request", "access", SUBJECT],
        ["classify", "customer_360"],
        ["quality", "show", "customer_360"],  # the demo has no checks: exit 1, saying so
        ["observe", "customer_360"],
        ["lineage", "customer_360"],
        ["consent", "show", "7"],
        ["consent", "revoke", "7", "marketing.email"],
        ["keys", "list"],
        ["request", "erase", SUBJECT, "--yes"],
    ]


def _run_all(project: Path) -> list[tuple[list[str], Any]]:
    done = []
    for command in _commands(project / "export.parquet"):
        result = cli(*command, "-p", str(project))
        done.append((command, result))
    return done


def test_every_command_works_while_run_is_up_with_the_same_output(
    demo_dir: Path, tmp_path: Path
) -> None:
    # "solo" as long as "live": the same wrapping; no 2s rebuilds: the same versions
    alone = live_shop(demo_dir, tmp_path / "solo" / "shop", fast_rebuilds=False)
    live = live_shop(demo_dir, tmp_path / "live" / "shop", fast_rebuilds=False)
    expected = _run_all(alone)
    for command, result in expected:
        wanted = 1 if command[0] == "quality" else 0
        assert result.returncode == wanted, (command, result.stdout, result.stderr)
    with running(live):
        got = _run_all(live)
    for (command, want), (_, have) in zip(expected, got, strict=True):
        assert have.returncode == want.returncode, (command, have.stdout, have.stderr)
        assert "internal error" not in have.stderr
        assert comparable(have.stdout, live) == comparable(want.stdout, alone), command
        assert comparable(have.stderr, live) == comparable(want.stderr, alone), command
    assert (live / "export.parquet").exists()  # a relative-to-cwd path would be elsewhere


def _served(client: httpx.Client, token: str, product: str, key: str) -> int:
    response = client.get(
        f"/v1/products/{product}/entities/{key}",
        headers={"Authorization": f"Bearer {token}", "X-Purpose": "support"},
    )
    return response.status_code


def _destination_keys(path: Path, table: str) -> set[str]:
    """The keys a SQLite destination holds (none before the sync created its table)."""
    with closing(sqlite3.connect(path)) as db:
        try:
            return {str(r[0]) for r in db.execute(f"SELECT customer_id FROM {table}")}
        except sqlite3.OperationalError:
            return set()


def test_erased_subject_stays_gone_through_rebuilds_and_on_change_syncs(
    demo_dir: Path, tmp_path: Path
) -> None:
    project = live_shop(demo_dir, tmp_path / "shop")
    with Platform.open(project) as platform:
        support = create_key(platform.meta, "desk", ["support_agent"])[0]
        backend = create_key(platform.meta, "shop", ["shop_backend"])[0]
    port = _free_port(0)
    with (
        running(project, port=port),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):

        def post(source: str, rows: list[dict[str, Any]]) -> None:
            answer = client.post(
                f"/v1/events/{source}", json=rows, headers={"Authorization": f"Bearer {backend}"}
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["accepted"] == len(rows), answer.text

        # an order for 42 and one for 43: the on_change sync catches up and holds both
        post(
            "orders_live",
            [
                {"order_id": 900001, "customer_id": 42, "amount": 5.0},
                {"order_id": 900002, "customer_id": 43, "amount": 5.0},
            ],
        )
        wait_for(
            lambda: {"42", "43"} <= _destination_keys(project / "live.db", "profiles"),
            60,
            "the on_change sync to write 42 and 43",
        )
        assert _served(client, support, "customer_360", SUBJECT) == 200
        erased = cli("request", "erase", SUBJECT, "--yes", "--json", "-p", str(project))
        assert erased.returncode == 0, erased.stderr
        report = json.loads(erased.stdout)
        assert report["complete"], report
        warehouse = [s for s in report["systems"] if s["system"] == "warehouse"]
        assert warehouse
        assert all(s["status"] in ("removed", "none") for s in warehouse)
        assert sum(s["removed"] for s in warehouse) > 0
        # the shop keeps sending: 42's events are dropped, 43's make churn_risk stale,
        # so the scheduler rebuilds it, and the on_change sync runs again
        with Platform.open(project) as platform:
            rebuilt_before = platform.meta.live_version("churn_risk")
        assert rebuilt_before is not None
        post(
            "orders_live",
            [
                {"order_id": 900003, "customer_id": 42, "amount": 9.0},
                {"order_id": 900004, "customer_id": 43, "amount": 9.0},
            ],
        )

        def rebuilt() -> bool:
            with Platform.open(project) as platform:
                now = platform.meta.live_version("churn_risk")
            return now is not None and now.version > rebuilt_before.version

        wait_for(rebuilt, 60, "a scheduled rebuild of churn_risk")
        wait_for(
            lambda: _served(client, support, "customer_360", "43") == 200,
            30,
            "43 to stay served",
        )
        time.sleep(1.0)  # one more micro-batch and tick
        for product in ("customer_360", "churn_risk"):  # marketing_audience: online store below
            assert _served(client, support, product, SUBJECT) == 404, product
        assert SUBJECT not in _destination_keys(project / "live.db", "profiles")
        assert "43" in _destination_keys(project / "live.db", "profiles")
        assert SUBJECT not in _destination_keys(project / "crm.db", "audience")
        # a forwarded build (sources still hold 42) and a forwarded sync keep it out too
        assert cli("build", "-p", str(project)).returncode == 0
        assert cli("sync", "run", "crm_live", "-p", str(project)).returncode == 0
        assert SUBJECT not in _destination_keys(project / "live.db", "profiles")
        access = cli("request", "access", SUBJECT, "-p", str(project))
        assert access.returncode == 0, access.stderr
        package = json.loads(access.stdout)
        assert package["erased"] is True
        assert package["complete"] is True
        assert package["counts"]["warehouse_rows"] == 0
        assert package["counts"]["online_rows"] == 0
    with Platform.open(project) as platform:
        for product in platform.project.products:
            assert platform.online.read_many(product, [SUBJECT]) == {}, product


HOLD = """
import sys, time, duckdb
db = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def test_a_non_runtime_holder_makes_commands_wait_then_fail_naming_it(
    demo_copy: Path,
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(demo_copy / ".tidegate" / "warehouse.duckdb")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        quick = {"TIDEGATE_LOCK_TIMEOUT": "2"}
        started = time.monotonic()
        build = cli("build", "-p", str(demo_copy), env=quick)
        assert time.monotonic() - started >= 2
        assert build.returncode == 1, (build.stdout, build.stderr)
        assert "internal error" not in build.stderr
        assert "waiting for the warehouse" in build.stderr
        assert f"PID {holder.pid}" in build.stderr
        assert "not released within 2s" in build.stderr
        access = cli("request", "access", SUBJECT, "-p", str(demo_copy), env=quick)
        assert access.returncode == 1, access.stdout
        assert "INCOMPLETE" in access.stderr
        assert "warehouse unavailable" in access.stderr
        assert json.loads(access.stdout)["complete"] is False
        erase = cli("request", "erase", SUBJECT, "--yes", "-p", str(demo_copy), env=quick)
        assert erase.returncode == 1, erase.stdout
        assert "PARTIAL" in erase.stdout
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    # once the holder is gone, the erasure completes (it is idempotent)
    again = cli("request", "erase", SUBJECT, "--yes", "--json", "-p", str(demo_copy))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["complete"] is True
