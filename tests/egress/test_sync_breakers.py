"""Issue 19, item 2: circuit breakers stop a sync before it writes, alert once, and wait for
`tidegate sync approve` (audited) or a version back within the thresholds; and item 3's
row errors and retries in the run history."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from tidegate.egress.sync import run_sync
from tidegate.egress.sync.breakers import approve
from tidegate.egress.sync.preview import preview_sync
from tidegate.errors import BadRequestError, ConfigError
from tidegate.platform import Platform
from tidegate.project import load_project


def _pg_rows(dsn: str, table: str) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(sql.SQL("SELECT id, email FROM {}").format(sql.Identifier(table)))
        return {int(i): str(e) for i, e in rows.fetchall()}


def _alerting(people: Any, url: str) -> None:
    (people.root / "tidegate.yml").write_text(
        "name: people_project\ndefaults: {sync_batch_rows: 1000}\n"
        f"observe: {{alerts: {{webhook_url: '{url}'}}}}\n"
    )


@pytest.mark.services
def test_a_mirror_sync_after_a_70_percent_smaller_version_trips_and_leaves_postgres_untouched(
    people: Any,
    pg_dsn: str,
    pg_table: str,
    monkeypatch: pytest.MonkeyPatch,
    webhook: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = webhook
    _alerting(people, url)
    monkeypatch.setenv("T_PG", pg_dsn)
    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    people.sync(
        "crm",
        f"purpose: ops\ndestination: {{type: postgres, dsn_env: T_PG, table: {pg_table}}}\n"
        "mode: mirror\ntrigger: manual\nbreakers: {max_removed: 5%}\n",
    )
    with Platform.open(people.root) as platform:
        assert run_sync(platform, "crm").added == 10
    held = _pg_rows(pg_dsn, pg_table)
    people.set_rows([people.row(i, email=f"new{i}@example.com") for i in range(1, 4)])
    people.build()
    with Platform.open(people.root) as platform:
        look = preview_sync(platform, "crm")
        assert look.breakers
        assert "max_removed" in look.breakers[0]
        assert not look.approved
        blocked = run_sync(platform, "crm")
        assert blocked.status == "blocked"
        assert (blocked.added, blocked.changed, blocked.removed) == (0, 0, 0)
        assert _pg_rows(pg_dsn, pg_table) == held  # not a row touched
        assert platform.meta.synced_count("crm") == 10
        again = run_sync(platform, "crm")  # still waiting: blocked again, alerted once
        assert again.status == "blocked"
        history = platform.meta.runs("sync", "crm", limit=2)
        assert [r["status"] for r in history] == ["blocked", "blocked"]
        assert "7 of the 10 rows" in history[0]["stats"]["blocked"][0]
        alerts = [a for a in received if a.get("kind") == "sync_breaker"]
        assert len(alerts) == 1
        assert "tidegate sync approve crm" in alerts[0]["text"]

        detail = approve(platform, "crm", "alice")
        assert detail["reasons"] == history[0]["stats"]["blocked"]
        assert preview_sync(platform, "crm").approved
        through = run_sync(platform, "crm")
        assert (through.status, through.approved) == ("ok", True)
        assert (through.changed, through.removed) == (3, 7)
        approvals = [r for _, r in platform.audit.records() if r.action == "sync_approval"]
        assert [r.principal for r in approvals] == ["alice"]
        with pytest.raises(BadRequestError, match="not waiting for an approval"):
            approve(platform, "crm", "alice")
    assert _pg_rows(pg_dsn, pg_table) == {i: f"new{i}@example.com" for i in range(1, 4)}


def test_the_next_healthy_version_goes_through_without_an_approval(people: Any) -> None:
    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: upsert\ntrigger: manual\n",
    )
    # the product's default, which the sync does not override
    product = (people.root / "products" / "people.yml").read_text()
    (people.root / "products" / "people.yml").write_text(
        product + "sync_breakers: {max_row_change: 30%}\n"
    )
    with Platform.open(people.root) as platform:
        assert run_sync(platform, "crm").added == 10
    people.set_rows([people.row(i) for i in range(1, 21)])  # twice as many rows
    people.build()
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "crm")
        assert report.status == "blocked"
        assert "max_row_change" in report.blocked[0]
    people.set_rows([people.row(i) for i in range(1, 13)])  # 20% more: within the limit
    people.build()
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "crm")
        assert (report.status, report.added, report.approved) == ("ok", 2, False)


def test_a_sync_overrides_its_products_breakers_field_by_field(people: Any) -> None:
    product = (people.root / "products" / "people.yml").read_text()
    (people.root / "products" / "people.yml").write_text(
        product + "sync_breakers: {max_row_change: 30%, max_removed: 5%}\n"
    )
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: mirror\nbreakers: {max_removed: 50}\n",
    )
    from tidegate.egress.sync.breakers import policy_of

    with Platform.open(people.root) as platform:
        policy = policy_of(platform, platform.project.syncs["crm"].config)
    assert str(policy.max_removed) == "50 rows"
    assert str(policy.max_row_change) == "30%"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("5 percent", "is not a threshold"), ("150%", "at most 100%"), ("true", "a share")],
)
def test_a_bad_threshold_names_the_file_and_field(people: Any, value: str, fragment: str) -> None:
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        f"breakers: {{max_removed: {value}}}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_project(people.root)
    text = str(caught.value)
    assert "crm.yml" in text
    assert "max_removed" in text
    assert fragment in text


def test_row_errors_keep_the_key_and_message_without_the_personal_values(
    people: Any, crm_server: Any
) -> None:
    crm_server.reject = lambda row: (
        f"contact {row['email']} ({row['first_name']}) is on a block list"
        if row["id"] == 2
        else None
    )
    crm_server.script.append((503, {}, '{"message": "busy"}'))  # one retry, with its reason
    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    people.sync(
        "crm",
        f"purpose: ops\ndestination: {{type: http, url: '{crm_server.url}'}}\n"
        "mode: upsert\ntrigger: manual\nretry: {backoff: 10ms}\n",
    )
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "crm")
        assert (report.added, report.failed) == (2, 1)
        (error,) = platform.meta.sync_row_errors("crm")
        (run,) = platform.meta.runs("sync", "crm")
    assert error.key == "2"
    assert "contact <email> (<first_name>) is on a block list" in error.message
    assert "p2@example.com" not in error.message
    assert "p2@example.com" not in run["error"]
    assert "First2" not in " ".join(report.errors)
    assert run["stats"]["retries"] == 1
    assert run["stats"]["retry_reasons"] == {"HTTP 503: busy": 1}


def test_on_anomaly_block_keeps_the_previous_version_live_until_accepted(
    people: Any, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    from tidegate.products.builder import build_products, load_sources

    url, received = webhook
    (people.root / "tidegate.yml").write_text(
        "name: people_project\n"
        f"observe: {{alerts: {{webhook_url: '{url}'}}, anomaly: {{min_training: 3, "
        "floors: {freshness.since_update_s: 1000000}}}\n"
    )
    product = (people.root / "products" / "people.yml").read_text()
    (people.root / "products" / "people.yml").write_text(product + "on_anomaly: block\n")
    people.set_rows([people.row(i) for i in range(1, 101)])
    with Platform.open(people.root) as platform:
        load_sources(platform)
        for _ in range(4):  # a steady history: 100 rows each time
            assert [r.status for r in build_products(platform)] == ["live"]
        live = platform.meta.live_version("people")
        assert live is not None
        people.set_rows([people.row(i) for i in range(1, 31)])  # 70% smaller
        load_sources(platform)
        (result,) = build_products(platform)
        assert result.status == "failed"
        assert "anomalous" in result.error
        assert "--accept-anomalies" in result.error
        assert platform.meta.live_version("people") == live  # the previous stays live
        assert [a["kind"] for a in received] == ["anomaly_gate"]
        (accepted,) = build_products(platform, accept_anomalies=True)
        assert accepted.status == "live"
        assert accepted.rows == 30


def test_on_anomaly_warn_still_publishes_the_anomalous_version(people: Any) -> None:
    from tidegate.products.builder import build_products, load_sources

    (people.root / "tidegate.yml").write_text(
        "name: people_project\n"
        "observe: {anomaly: {min_training: 3, floors: {freshness.since_update_s: 1000000}}}\n"
    )
    people.set_rows([people.row(i) for i in range(1, 101)])
    with Platform.open(people.root) as platform:
        load_sources(platform)
        for _ in range(4):
            build_products(platform)
        people.set_rows([people.row(i) for i in range(1, 31)])
        load_sources(platform)
        (result,) = build_products(platform)  # on_anomaly defaults to warn
        assert (result.status, result.rows) == ("live", 30)


def test_preview_and_approve_on_the_api_need_a_key_whose_roles_cover_the_sync(
    people: Any,
) -> None:
    from starlette.testclient import TestClient

    from tidegate.api import create_app
    from tidegate.platform.keys import create_key

    policy = (people.root / "policies" / "policy.yml").read_text()
    (people.root / "policies" / "policy.yml").write_text(
        policy + "roles:\n  crm_ops: {purposes: [ops]}\n  marketer: {purposes: [crm]}\n"
    )
    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: mirror\ntrigger: manual\nbreakers: {max_removed: 10%}\n",
    )
    with Platform.open(people.root) as platform:
        ops = create_key(platform.meta, "ops-desk", ["crm_ops"])[0]
        other = create_key(platform.meta, "marketing", ["marketer"])[0]
        run_sync(platform, "crm")
    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    with Platform.open(people.root) as platform, TestClient(create_app(platform)) as client:
        assert client.get("/v1/syncs/crm/preview").status_code == 401
        denied = client.get("/v1/syncs/crm/preview", headers={"Authorization": f"Bearer {other}"})
        assert denied.status_code == 403
        assert denied.json()["error"]["code"]
        auth = {"Authorization": f"Bearer {ops}"}
        assert client.get("/v1/syncs/nope/preview", headers=auth).status_code == 404
        answer = client.get("/v1/syncs/crm/preview", headers=auth)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["counts"]["delete"] == 7
        assert body["breakers"]["tripped"]
        assert client.post("/v1/syncs/crm/approve", headers=auth).status_code == 400  # not run
        assert run_sync(platform, "crm").status == "blocked"
        approved = client.post("/v1/syncs/crm/approve", headers=auth)
        assert approved.status_code == 200, approved.text
        assert run_sync(platform, "crm").removed == 7
        actions = [r.action for _, r in platform.audit.records()]
        assert "sync_preview" in actions
        assert "sync_approval" in actions
        assert "deny" in actions
        assert "/v1/syncs/{sync}/preview" in client.get("/openapi.json").json()["paths"]


def test_the_cli_shows_a_blocked_run_previews_it_and_approves_it(people: Any) -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    tidegate = str(Path(sys.executable).with_name("tidegate"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tidegate, *args, "-p", str(people.root)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: mirror\ntrigger: manual\nbreakers: {max_removed: 5%}\n",
    )
    assert cli("sync", "run", "crm").returncode == 0
    people.set_rows([people.row(i) for i in range(1, 4)])
    people.build()
    look = cli("sync", "preview", "crm", "--json")
    assert look.returncode == 0, look.stderr
    preview = json.loads(look.stdout)
    assert preview["counts"]["delete"] == 7
    assert preview["breakers"]["tripped"]
    blocked = cli("sync", "run", "crm")
    assert blocked.returncode == 1
    assert "blocked by its circuit breakers" in blocked.stdout
    assert "tidegate sync approve crm" in blocked.stdout
    history = json.loads(cli("sync", "history", "crm", "--json").stdout)
    assert history[0]["status"] == "blocked"
    status = cli("sync", "status", "crm")
    assert "stopped by its circuit breakers" in status.stdout
    assert "tidegate sync approve crm" in status.stdout
    approved = cli("sync", "approve", "crm", "--principal", "alice")
    assert approved.returncode == 0, approved.stderr
    assert "approved past max_removed" in approved.stdout
    assert json.loads(cli("sync", "status", "crm", "--json").stdout)["approved"]
    again = cli("sync", "approve", "crm")
    assert again.returncode == 1
    assert "already approved" in again.stderr + again.stdout
    assert "Traceback" not in again.stderr
    through = cli("sync", "run", "crm", "--json")
    assert json.loads(through.stdout)["deleted"] == 7
    after = cli("sync", "approve", "crm")
    assert after.returncode == 1
    assert "not waiting for an approval" in after.stderr + after.stdout
    assert cli("sync", "preview", "nope").returncode == 1


def test_on_quality_issue_block_holds_a_sync_of_a_suspect_live_version(people: Any) -> None:
    from tidegate.products.builder import build_products, load_sources

    (people.root / "tidegate.yml").write_text(
        "name: people_project\n"
        "observe: {anomaly: {min_training: 3, floors: {freshness.since_update_s: 1000000}}}\n"
    )
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: upsert\ntrigger: manual\nbreakers: {on_quality_issue: block}\n",
    )
    people.set_rows([people.row(i) for i in range(1, 101)])
    with Platform.open(people.root) as platform:
        load_sources(platform)
        for _ in range(4):
            build_products(platform)
        assert run_sync(platform, "crm").status == "ok"  # a healthy version goes
        people.set_rows([people.row(i) for i in range(1, 31)])  # published: on_anomaly warn
        load_sources(platform)
        assert [r.status for r in build_products(platform)] == ["live"]
        report = run_sync(platform, "crm")
        assert report.status == "blocked"
        assert "is anomalous" in report.blocked[0]
        assert "volume.rows" in report.blocked[0]
        assert preview_sync(platform, "crm").breakers == report.blocked


def test_on_quality_issue_block_also_holds_a_version_that_failed_a_warn_check(
    people: Any,
) -> None:
    product = (people.root / "products" / "people.yml").read_text()
    (people.root / "products" / "people.yml").write_text(
        product + "checks:\n  - {type: row_count, min: 50, severity: warn}\n"
    )
    people.sync(
        "crm",
        "purpose: ops\ndestination: {type: sqlite, path: crm.db, table: people}\n"
        "mode: upsert\ntrigger: manual\nbreakers: {on_quality_issue: block}\n",
    )
    people.set_rows([people.row(i) for i in range(1, 11)])
    people.build()
    with Platform.open(people.root) as platform:
        report = run_sync(platform, "crm")
        assert report.status == "blocked"
        assert "failed 1 check(s)" in report.blocked[0]
        approve(platform, "crm", "alice")
        assert run_sync(platform, "crm").added == 10
