"""The sync engine on the embedded destination (SQLite): mapping, diff, modes, row errors,
mirror, consent removal, partial (on-change) runs, alerts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tidegate.egress.sync import run_sync, sync_changes
from tidegate.platform import Platform

SQLITE_DEST = "destination: {type: sqlite, path: crm.db, table: people}\n"


def held(root: Path, table: str = "people") -> dict[int, dict[str, Any]]:
    with sqlite3.connect(root / "crm.db") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
    return {int(r[0]): dict(r) for r in rows}


def test_fields_rename_constants_and_templates_and_only_mapped_fields_count(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 6)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\n" + SQLITE_DEST + "mode: upsert\ntrigger: manual\nkey: customer\n"
        "fields:\n"
        "  customer: id\n"
        "  full_name: '{first_name} {last_name}'\n"
        "  mail: email\n"
        "  origin: {const: tidegate}\n"
        "  braces: {template: '{{literal}} {id}'}\n",
    )
    with Platform.open(people.root) as platform:
        first = run_sync(platform, "crm")
    assert (first.added, first.changed, first.failed) == (5, 0, 0)
    rows = held(people.root)
    assert rows[2] == {
        "customer": 2,
        "full_name": "First2 Last2",
        "mail": "p2@example.com",
        "origin": "tidegate",
        "braces": "{literal} 2",
    }

    # a change to a mapped source column is a change; one to an unmapped column is not
    people.set_rows(
        [people.row(1, last_name="Lovelace"), people.row(2, score=99.0)]
        + [people.row(i) for i in range(3, 6)]
    )
    people.build()
    with Platform.open(people.root) as platform:
        second = run_sync(platform, "crm")
    assert (second.added, second.changed, second.unchanged) == (0, 1, 4)
    assert held(people.root)[1]["full_name"] == "First1 Lovelace"


def test_insert_mode_sends_each_row_once_and_says_why_it_skips(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    people.sync("crm", "purpose: ops\n" + SQLITE_DEST + "mode: insert\ntrigger: manual\n")
    with Platform.open(people.root) as platform:
        assert run_sync(platform, "crm").added == 3
        people.set_rows([people.row(1, email="new@example.com"), people.row(2), people.row(3)])
    people.build()
    with Platform.open(people.root) as platform:
        again = run_sync(platform, "crm")
        assert (again.added, again.failed) == (0, 0)
        assert again.skipped == {"changed, but mode insert does not update rows": 1}
        with pytest.raises(Exception, match="insert mode"):
            run_sync(platform, "crm", full=True)
    assert held(people.root)[1]["email"] == "p1@example.com"


def test_refused_rows_keep_the_destination_message_and_are_retried(people: Any) -> None:
    with sqlite3.connect(people.root / "crm.db") as db:
        db.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT,"
            " email TEXT, score REAL CHECK (score < 100))"
        )
    people.set_rows([people.row(i, score=150.0 if i in (7, 42) else 1.0) for i in range(1, 61)])
    people.build()
    people.sync("crm", "purpose: ops\n" + SQLITE_DEST + "mode: upsert\ntrigger: manual\n")
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "crm")
        assert (report.added, report.failed) == (58, 2)
        errors = {e.key: e for e in platform.meta.sync_row_errors("crm")}
        assert set(errors) == {"7", "42"}
        assert "CHECK constraint failed" in errors["7"].message
        assert set(held(people.root)) == set(range(1, 61)) - {7, 42}

        # the next run retries them (and they fail again: the data did not change)
        retry = run_sync(platform, "crm")
        assert (retry.added, retry.unchanged, retry.failed) == (0, 58, 2)
        assert {e.attempts for e in platform.meta.sync_row_errors("crm")} == {2}

        # dismissed: skipped, and said so, until the row changes
        assert platform.meta.dismiss_sync_errors("crm", ["42"], at=1.0) == 1
        third = run_sync(platform, "crm")
        assert third.failed == 1
        assert third.skipped == {"refused before and dismissed; unchanged since": 1}

    # fixed upstream: both land and their errors are gone
    people.set_rows([people.row(i, score=1.0) for i in range(1, 61)])
    people.build()
    with Platform.open(people.root) as platform:
        fixed = run_sync(platform, "crm")
        assert (fixed.added, fixed.failed) == (2, 0)
        assert platform.meta.sync_row_errors("crm", include_dismissed=True) == []
    assert set(held(people.root)) == set(range(1, 61))


def test_mirror_deletes_only_rows_tidegate_wrote(people: Any) -> None:
    with sqlite3.connect(people.root / "crm.db") as db:
        db.execute(
            "CREATE TABLE people (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT,"
            " email TEXT, score REAL)"
        )
        db.execute("INSERT INTO people VALUES (999, 'Not', 'Ours', 'crm@example.com', 0)")
    people.set_rows([people.row(i) for i in range(1, 6)])
    people.build()
    people.sync("crm", "purpose: ops\n" + SQLITE_DEST + "mode: mirror\ntrigger: manual\n")
    people.sync(
        "copy",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: copy}\n"
        "mode: upsert\ntrigger: manual\n",
    )
    with Platform.open(people.root) as platform:
        run_sync(platform, "crm")
        run_sync(platform, "copy")
    people.set_rows([people.row(i) for i in (1, 2, 4)])
    people.build()
    with Platform.open(people.root) as platform:
        mirrored = run_sync(platform, "crm")
        kept = run_sync(platform, "copy")
    assert mirrored.removed == 2
    assert set(held(people.root)) == {1, 2, 4, 999}
    # upsert mode does not delete, and says so
    assert kept.removed == 0
    assert kept.skipped == {"left the product; mode upsert does not delete (mirror does)": 2}
    assert set(held(people.root, "copy")) == {1, 2, 3, 4, 5}


def test_revocation_removes_the_subject_audits_it_and_records_where_rows_went(
    people: Any,
) -> None:
    people.set_rows([people.row(i) for i in range(1, 6)])
    people.build()
    people.sync("crm", "purpose: crm\n" + SQLITE_DEST + "mode: insert\ntrigger: manual\n")
    with Platform.open(people.root) as platform:
        people.grant(platform, [1, 2, 3])
        assert run_sync(platform, "crm").added == 3
        (where,) = platform.meta.subject_locations("2")
        assert (where.sync, where.key) == ("crm", "2")
        assert where.destination.startswith("sqlite:")
        assert where.written_at
        people.revoke(platform, [2])
        report = run_sync(platform, "crm")
        assert (report.removed, report.revoked) == (1, 1)
        assert platform.meta.subject_locations("2") == []
        removals = [r for _, r in platform.audit.records() if r.action == "sync_removal"]
        assert len(removals) == 1
        assert removals[0].subjects == ("2",)
        assert removals[0].outcome == "removed"
        assert platform.audit.verify() == []
    assert set(held(people.root)) == {1, 3}


def test_sync_changes_looks_only_at_the_given_keys(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 6)])
    people.build()
    people.sync("crm", "purpose: ops\n" + SQLITE_DEST + "mode: mirror\ntrigger: on_change\n")
    with Platform.open(people.root) as platform:
        run_sync(platform, "crm")
    people.set_rows(
        [people.row(1, email="one@example.com"), people.row(2, email="two@example.com")]
        + [people.row(i) for i in (3, 4)]
    )
    people.build()
    with Platform.open(people.root) as platform:
        only_one = sync_changes(platform, "crm", [1, 5])
        assert (only_one.changed, only_one.removed, only_one.partial) == (1, 1, True)
        rows = held(people.root)
        assert rows[1]["email"] == "one@example.com"
        assert rows[2]["email"] == "p2@example.com"  # not among the changed keys
        assert 5 not in rows
        rest = run_sync(platform, "crm")
        assert (rest.changed, rest.removed) == (1, 0)


def test_rejected_rows_past_the_threshold_alert_a_webhook(
    people: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    with sqlite3.connect(people.root / "crm.db") as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT NOT NULL)")
    people.set_rows([people.row(i, email=None if i <= 2 else "x@y") for i in range(1, 11)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\n" + SQLITE_DEST + "mode: upsert\ntrigger: manual\n"
        "fields: {id: id, email: email}\n"
        f"alerts: {{failed_percent: 10, webhook_url: '{url}'}}\n",
    )
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "crm")
    assert report.failed == 2
    (alert,) = received
    assert "crm" in alert["text"]
    assert "20.0% of sent rows refused" in alert["text"]
    assert "NOT NULL constraint failed" in alert["text"]
    assert alert["counts"]["failed"] == 2


def test_a_run_that_fails_is_recorded_and_alerted(
    people: Any, webhook: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, received = webhook
    monkeypatch.setenv("TEST_ALERT_URL", url)
    people.set_rows([people.row(1)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\n"
        "destination: {type: postgres, dsn_env: TIDEGATE_NO_SUCH_DSN, table: t}\n"
        "trigger: manual\nalerts: {webhook_env: TEST_ALERT_URL}\n",
    )
    with Platform.open(people.root) as platform:
        with pytest.raises(Exception, match="TIDEGATE_NO_SUCH_DSN is unset"):
            run_sync(platform, "crm")
        (run,) = platform.meta.runs("sync", "crm")
    assert run["status"] == "failed"
    assert "TIDEGATE_NO_SUCH_DSN" in run["error"]
    assert "the run failed" in received[0]["text"]


def test_a_first_sync_streams_and_one_keyed_by_a_shared_or_null_field_skips_those_rows(
    people: Any,
) -> None:
    """With no state to diff against, rows stream straight from the guarded query; but
    only when every destination key is non-null and unique, else the rows that cannot be
    keyed are skipped with their reasons, as on any run."""
    from tidegate.egress.sync import diff as diff_module

    rows = [people.row(i) for i in range(1, 7)]
    rows[1]["last_name"] = rows[2]["last_name"] = "Shared"  # keys 2 and 3 share a key
    rows[4]["last_name"] = None  # key 5 has none
    people.set_rows(rows)
    people.build()
    people.sync(
        "crm",
        "purpose: ops\n" + SQLITE_DEST + "mode: upsert\ntrigger: manual\nkey: surname\n"
        "fields:\n  surname: last_name\n  mail: email\n",
    )
    people.sync(
        "all",
        "purpose: ops\n"
        + SQLITE_DEST.replace("people}", "everyone}")
        + "mode: upsert\ntrigger: manual\n",
    )
    streamed: list[bool] = []
    original = diff_module.Diff.compare

    def compare(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts = original(self, *args, **kwargs)
        streamed.append(self._streamed)
        return counts

    diff_module.Diff.compare = compare  # type: ignore[method-assign]
    try:
        with Platform.open(people.root) as platform:
            keyed = run_sync(platform, "crm")
            everyone = run_sync(platform, "all")
            again = run_sync(platform, "all")
    finally:
        diff_module.Diff.compare = original  # type: ignore[method-assign]
    assert streamed == [False, True, False]  # the shared key; a first sync; a second one
    assert (keyed.added, keyed.failed) == (3, 0)
    assert keyed.skipped == {
        "null destination key": 1,
        "destination key shared by several rows": 2,
    }
    with sqlite3.connect(people.root / "crm.db") as db:
        assert sorted(r[0] for r in db.execute("SELECT surname FROM people")) == [
            "Last1",
            "Last4",
            "Last6",
        ]
    assert (everyone.added, everyone.changed, everyone.skipped) == (6, 0, {})
    assert set(held(people.root, "everyone")) == set(range(1, 7))
    assert (again.added, again.changed, again.unchanged) == (0, 0, 6)


def test_a_sync_of_a_product_never_built_says_to_build_it_first(people: Any) -> None:
    from tidegate.errors import NotFoundError

    people.set_rows([people.row(1)])
    people.sync("crm", "purpose: ops\n" + SQLITE_DEST + "mode: upsert\ntrigger: manual\n")
    with Platform.open(people.root) as platform, pytest.raises(NotFoundError, match="build it"):
        run_sync(platform, "crm")
    people.build()
    with Platform.open(people.root) as platform:
        assert run_sync(platform, "crm").added == 1
