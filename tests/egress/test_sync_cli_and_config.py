"""Sync definitions (validation with file:line), the sender's retry/bisect/rate policy, the
cron schedule, and the `tidegate sync` commands."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from tidegate.egress.destinations.base import Capabilities, Destination
from tidegate.egress.sync.apply import RateLimiter, Sender
from tidegate.errors import ConfigError, TerminalDestinationError, TransientDestinationError
from tidegate.project import load_project
from tidegate.project.cron import next_fire, parse_cron
from tidegate.project.models import RetryPolicy

TIDEGATE = str(Path(sys.executable).with_name("tidegate"))
DEST = "destination: {type: sqlite, path: crm.db, table: people}\n"


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ("trigger: schedule\n", "schedule", "needs a cron"),
        ("trigger: schedule\nschedule: '61 * * * *'\n", "schedule", "bad minute"),
        ("trigger: manual\nschedule: '@daily'\n", "schedule", "only used with trigger"),
        ("fields: {id: id, x: '{first_name!r}'}\n", "fields", "conversions are not allowed"),
        ("fields: {id: id, x: '{first_name.__class__}'}\n", "fields", "not a plain column"),
        ("fields: {id: {const: 1}}\n", "fields", "cannot be a constant"),
        ("fields: {id: id, x: '{nope} y'}\n", "fields", "maps from 'nope'"),
        ("fields: {id: id, x: {const: 1, column: id}}\n", "fields", "exactly one of"),
        ("retry: {backoff: soon}\n", "retry", "not a duration"),
        ("alerts: {failed_percent: 150}\n", "alerts", "less than or equal to 100"),
        ("rate_limit: 0\n", "rate_limit", "greater than 0"),
    ],
)
def test_bad_sync_definitions_name_file_line_and_field(
    people: Any, body: str, field: str, fragment: str
) -> None:
    people.sync("bad", "purpose: ops\n" + DEST + body)
    with pytest.raises(ConfigError) as caught:
        load_project(people.root)
    (problem,) = caught.value.problems
    assert problem.file == "syncs/bad.yml"
    assert problem.line > 0
    assert problem.field.startswith(field)
    assert fragment in problem.message


def test_every_destination_type_validates(people: Any) -> None:
    destinations = [
        "{type: mysql, dsn_env: X, table: t}",
        "{type: redis, url_env: X, key_template: 'crm:{key}', ttl: 1d}",
        "{type: kafka, bootstrap: 'localhost:9092', topic: people.changes}",
        "{type: http, url: 'https://api.example.com/v1/people', auth_env: X}",
        "{type: file, path: out/people.parquet}",
    ]
    for i, destination in enumerate(destinations):
        people.sync(f"s{i}", f"purpose: ops\ndestination: {destination}\ntrigger: on_change\n")
    people.sync(
        "cron", "purpose: ops\n" + DEST + "trigger: schedule\nschedule: '*/15 9-17 * * mon-fri'\n"
    )
    project = load_project(people.root)
    assert len(project.syncs) == len(destinations) + 1


def test_cron_next_fire() -> None:
    at = dt.datetime(2026, 11, 20, 17, 50, tzinfo=dt.UTC)  # a Friday
    assert next_fire("*/15 9-17 * * mon-fri", at) == dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
    assert next_fire("@daily", at) == dt.datetime(2026, 11, 21, 0, 0, tzinfo=dt.UTC)
    assert next_fire("0 0 1 jan *", at) == dt.datetime(2027, 1, 1, 0, 0, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="expected 5 fields"):
        parse_cron("* * *")


class Picky(Destination):
    """All-or-nothing batches that refuse rows with a negative id; flaky at first."""

    kind: ClassVar[str] = "picky"
    capabilities: ClassVar[Capabilities] = Capabilities(True, True, 1000)

    def __init__(self, flaky: int = 0, retry_after: float | None = None) -> None:
        self.flaky = flaky
        self.retry_after = retry_after
        self.rows: list[int] = []

    def open(self, columns: dict[str, str], key: str) -> None: ...

    def write(self, batch: Any, mode: str) -> int:
        if self.flaky:
            self.flaky -= 1
            raise TransientDestinationError("connection reset", retry_after=self.retry_after)
        ids = batch.column("id").to_pylist()
        bad = [i for i in ids if i < 0]
        if bad:
            raise TerminalDestinationError(f"id {bad[0]} violates check")
        self.rows += ids
        return len(ids)

    def delete(self, keys: list[Any]) -> int:
        return 0

    def read_all(self) -> list[dict[str, Any]]:
        return [{"id": i} for i in self.rows]

    def close(self) -> None: ...


def test_a_refused_batch_is_bisected_down_to_its_bad_rows() -> None:
    dest = Picky()
    sender = Sender(dest, RetryPolicy(), None, sleep=lambda s: None)
    ids = [*range(1, 50), -7, *range(50, 90), -3]
    outcome = sender.write(pa.table({"id": ids}), "upsert")
    assert outcome.refused == {49: "id -7 violates check", 90: "id -3 violates check"}
    assert sorted(dest.rows) == list(range(1, 90))
    assert len(outcome.landed) == 89


def test_transient_errors_back_off_exponentially_or_as_told() -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=4, backoff="1s", multiplier=2.0, max_backoff="3s")
    sender = Sender(Picky(flaky=3), policy, None, sleep=waits.append)
    assert list(sender.write(pa.table({"id": [1]}), "upsert").landed) == [0]
    assert [0.5 <= waits[0] <= 1.0, 1.0 <= waits[1] <= 2.0, 1.5 <= waits[2] <= 3.0] == [True] * 3

    told: list[float] = []
    Sender(Picky(flaky=1, retry_after=7.0), policy, None, sleep=told.append).write(
        pa.table({"id": [1]}), "upsert"
    )
    assert told == [7.0]

    with pytest.raises(TransientDestinationError, match="gave up after 4 attempts"):
        Sender(Picky(flaky=9), policy, None, sleep=lambda s: None).write(
            pa.table({"id": [1]}), "upsert"
        )


def test_the_rate_limiter_spaces_requests_evenly(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr("tidegate.egress.sync.apply.time.sleep", sleep)
    limiter = RateLimiter(4.0, clock=lambda: clock[0])
    starts = []
    for _ in range(9):
        limiter.acquire()
        starts.append(clock[0])
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(starts)]
    assert gaps[:3] == [0.25] * 3  # evenly spaced ...
    assert all(g >= 0.25 for g in gaps)
    # ... and never a fifth start within one second of the first: a strict server counting
    # requests per sliding second sees at most the limit
    assert all(starts[i + 4] - starts[i] > 1.0 for i in range(len(starts) - 4))
    assert starts[-1] - starts[0] < 2.1  # but not slower than needed


def test_the_rate_limiter_slows_down_after_push_back_and_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    monkeypatch.setattr("tidegate.egress.sync.apply.time.sleep", sleep)
    limiter = RateLimiter(10.0, clock=lambda: clock[0])
    assert limiter.interval == pytest.approx(0.1)
    limiter.pushed_back()
    limiter.pushed_back()
    assert limiter.interval == pytest.approx(0.1 * 1.5 * 1.5)
    for _ in range(2000):
        limiter.succeeded()
    assert limiter.interval == pytest.approx(0.1)
    limiter.acquire()
    first = clock[0]
    limiter.pushed_back()
    limiter.acquire()
    assert clock[0] - first == pytest.approx(0.1)  # the widened spacing applies to the next one
    limiter.acquire()
    assert clock[0] - first == pytest.approx(0.1 + 0.15)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TIDEGATE, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_sync_commands_run_status_history_errors_and_dismiss(people: Any) -> None:
    with sqlite3.connect(people.root / "crm.db") as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, score REAL CHECK (score < 10))")
    people.set_rows([people.row(i) for i in range(1, 21)])
    people.build()
    people.sync(
        "crm", "purpose: ops\n" + DEST + "trigger: manual\nfields: {id: id, score: score}\n"
    )
    root = str(people.root)
    first = run("sync", "run", "crm", "-p", root)
    assert first.returncode == 1
    assert "9 inserted" in first.stdout
    assert "11 failed" in first.stdout
    assert "CHECK constraint failed" in first.stdout

    errors = json.loads(run("sync", "errors", "crm", "-p", root, "--json").stdout)
    assert sorted(int(e["key"]) for e in errors) == list(range(10, 21))
    status = json.loads(run("sync", "status", "crm", "-p", root, "--json").stdout)
    assert (status["rows_written"], status["open_errors"]) == (9, 11)

    dismissed = run("sync", "errors", "crm", "-p", root, "--dismiss", "--key", "10")
    assert "dismissed 1 row errors" in dismissed.stdout
    second = run("sync", "run", "crm", "-p", root, "--json")
    report = json.loads(second.stdout)
    assert (report["failed"], report["skipped"]) == (10, 1)

    history = run("sync", "history", "crm", "-p", root, "--json")
    assert [r["status"] for r in json.loads(history.stdout)] == ["failed", "failed"]
    listed = run("sync", "list", "-p", root)
    assert "crm" in listed.stdout
    unknown = run("sync", "status", "nope", "-p", root)
    assert unknown.returncode == 1
    assert "no sync named 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
