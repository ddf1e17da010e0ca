"""`kill -9` at random points of a 200k-row insert-mode sync, repeatedly, then resume.

The destination tables have no primary key, so a row sent twice would show as a
duplicate rather than as a refused insert. After every kill: no duplicates, nothing
that is not in the product, and everything the sync state claims is really there.
After the last resume: exactly the product's rows, each once.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tidegate.platform import Platform

ROWS = 200_000
KILLS = 6
RUNNER = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", stream=sys.stderr)
from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
with Platform.open(sys.argv[1]) as platform:
    report = run_sync(platform, "crash")
print("DONE", report.added, report.failed, flush=True)
"""
COLUMNS = "id BIGINT, first_name TEXT, last_name TEXT, email TEXT, score DOUBLE PRECISION"


def _start(root: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _kill_after_batches(
    proc: subprocess.Popen[str], batches: int, pause: float, *, in_flight: bool = False
) -> tuple[bool, str]:
    """Wait for `batches` checkpointed batches (and with `in_flight`, for the next batch
    to be marked in flight), then `pause` seconds, then SIGKILL. Returns whether it was
    killed (not finished first), and what it logged."""
    assert proc.stderr is not None
    seen, lines, marked = 0, [], not in_flight
    while seen < batches or not marked:
        line = proc.stderr.readline()
        if not line:
            proc.communicate()
            return False, "".join(lines)
        lines.append(line)
        if "batch sent" in line:
            seen += 1
        elif "batch in flight" in line and seen >= batches:
            marked = True
    time.sleep(pause)
    os.kill(proc.pid, signal.SIGKILL)
    _, rest = proc.communicate()
    return True, "".join(lines) + rest


def _crash_and_resume(people: Any, read_ids: Any, env: dict[str, str]) -> None:
    rng = random.Random(20261123)
    kills, logged = 0, ""
    for attempt in range(KILLS):
        proc = _start(people.root, env)
        # every other kill lands as soon as a batch is marked in flight: the window the
        # resume must reconcile is hit however fast (or loaded) the machine is
        batches, pause, in_flight = rng.randint(0, 5), rng.uniform(0, 0.08), attempt % 2 == 1
        killed, output = _kill_after_batches(
            proc, batches, 0.0 if in_flight else pause, in_flight=in_flight
        )
        kills += killed
        logged += output
        ids = read_ids()
        assert len(ids) == len(set(ids)), "a row was sent twice"
        assert set(ids) <= set(range(1, ROWS + 1))
        with Platform.open(people.root) as platform:
            claimed = {int(k) for k in platform.meta.synced_rows("crash")}
        assert claimed <= set(ids), "the state claims rows the destination does not hold"
    assert kills >= 5
    proc = _start(people.root, env)
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    ids = read_ids()
    assert len(ids) == ROWS
    assert set(ids) == set(range(1, ROWS + 1))
    with Platform.open(people.root) as platform:
        runs = platform.meta.runs("sync", "crash", limit=50)
    assert sum(r["status"] == "interrupted" for r in runs) >= 5
    assert runs[0]["status"] == "ok"
    # at least one kill landed while a batch was in flight, and its resume reconciled it
    assert "reconciled an interrupted batch" in logged


def _project(people: Any, destination: str) -> dict[str, str]:
    people.set_rows([people.row(i) for i in range(1, ROWS + 1)])
    people.build()
    people.sync(
        "crash", f"purpose: ops\n{destination}\nmode: insert\ntrigger: manual\nbatch_rows: 5000\n"
    )
    return dict(os.environ)


@pytest.mark.slow
def test_kill_9_mid_sync_into_sqlite_loses_nothing_and_doubles_nothing(people: Any) -> None:
    with sqlite3.connect(people.root / "crm.db") as db:
        db.execute(f"CREATE TABLE people ({COLUMNS})")  # no primary key: duplicates would show
    env = _project(people, "destination: {type: sqlite, path: crm.db, table: people}")

    def read_ids() -> list[int]:
        with sqlite3.connect(people.root / "crm.db") as db:
            return [r[0] for r in db.execute("SELECT id FROM people")]

    _crash_and_resume(people, read_ids, env)


@pytest.mark.slow
@pytest.mark.services
def test_kill_9_mid_sync_into_postgres_loses_nothing_and_doubles_nothing(
    people: Any, pg_dsn: str, pg_table: str
) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL(f"CREATE TABLE {{}} ({COLUMNS})").format(sql.Identifier(pg_table)))
    env = _project(
        people, f"destination: {{type: postgres, dsn_env: T_CRASH_PG, table: {pg_table}}}"
    )
    env["T_CRASH_PG"] = pg_dsn

    def read_ids() -> list[int]:
        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(pg_table)))
            return [r[0] for r in rows.fetchall()]

    _crash_and_resume(people, read_ids, env)
