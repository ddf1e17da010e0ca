"""`POST /v1/consent` over real HTTP: choices, TCF strings and GPC in; revocations pushed
out of every sync destination (SQLite CRM, PostgreSQL, Redis) without a sync run."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from tidegate.api import create_app
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.egress.sync import run_sync
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.consent import consent_ledger_of
from tidegate.privacy.consent_input import gpc_purposes
from tidegate.requests.propagation import propagator_for

from .conftest import add_sync

ADA = "1"  # granted marketing.email in the demo; in the CRM audience
SPEC_TCF = "COvFyGBOvFyGBAbAAAENAPCAAOAAAAAAAAAAAEEUACCKAAA"  # purposes 1, 2, 3; vendors 2, 6, 8


class Api:
    def __init__(self, platform: Platform, client: httpx.Client) -> None:
        self.platform = platform
        self.client = client
        self.cmp = create_key(platform.meta, "cmp-backend", ["cmp"])[0]
        self.agent = create_key(platform.meta, "desk", ["support_agent"])[0]

    def post(self, body: dict[str, Any], token: str | None = None, **headers: str) -> Any:
        headers["Authorization"] = f"Bearer {token or self.cmp}"
        return self.client.post("/v1/consent", json=body, headers=headers)

    def read(self, key: str, purpose: str = "support") -> int:
        response = self.client.get(
            f"/v1/products/marketing_audience/entities/{key}",
            headers={"Authorization": f"Bearer {self.agent}", "X-Purpose": purpose},
        )
        return response.status_code


def serve(shop: Path) -> Iterator[Api]:
    platform = Platform.open(shop)
    server = BackgroundServer(create_app(platform), _free_port(0))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=30) as client:
            yield Api(platform, client)
    finally:
        server.stop()
        propagator_for(platform).wait()
        platform.close()


def crm_ids(shop: Path) -> set[int]:
    db = sqlite3.connect(str(shop / "crm.db"))
    try:
        return {row[0] for row in db.execute("SELECT customer_id FROM audience")}
    finally:
        db.close()


@pytest.fixture
def api(shop: Path) -> Iterator[Api]:
    yield from serve(shop)


def test_choices_are_recorded_audited_and_answered_with_the_state(api: Api) -> None:
    response = api.post({"subject": "77", "choices": [{"purpose": "analytics", "action": "grant"}]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["recorded"][0]["purpose"] == "analytics"
    assert body["allowed"]["analytics"] is True
    assert body["propagation"] == {"status": "none"}
    consent = [r for _, r in api.platform.audit.records() if r.action == "consent"][-1]
    assert consent.principal == "cmp-backend"
    assert consent.subjects == ("77",)
    read = api.client.get("/v1/consent/77", headers={"Authorization": f"Bearer {api.cmp}"})
    assert read.json()["history"][-1]["source"] == "api"


@pytest.mark.parametrize(
    ("body", "token", "status", "code"),
    [
        ({"subject": "1", "choices": [{"purpose": "nope", "action": "grant"}]}, None, 400, ""),
        ({"subject": "1"}, None, 400, "bad_request"),
        ({"subject": "1", "choices": [{"purpose": "support", "action": "maybe"}]}, None, 422, ""),
        ({"subject": "1", "tcf": "not-a-tc-string"}, None, 400, ""),
        ({"subject": "1", "choices": [{"purpose": "support", "action": "object"}]}, "agent", 403,
         "forbidden"),
        ({"subject": "1", "choices": []}, "bogus", 401, ""),
    ],
)  # fmt: skip
def test_bad_calls_get_clear_json_errors(
    api: Api, body: dict[str, Any], token: str | None, status: int, code: str
) -> None:
    tokens = {None: None, "agent": api.agent, "bogus": "tg_x_y"}
    response = api.post(body, tokens[token])
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code


def test_tcf_string_maps_to_project_purposes(api: Api) -> None:
    response = api.post({"subject": "501", "tcf": SPEC_TCF})
    assert response.status_code == 200, response.text
    recorded = {r["purpose"]: r["action"] for r in response.json()["recorded"]}
    # marketing.email rests on TCF 1 + 3 (consented); ads.partners on 1 + 4 (4 refused)
    assert recorded == {"marketing.email": "grant", "ads.partners": "revoke"}
    (history,) = [
        h for h in consent_ledger_of(api.platform).history("501") if h.purpose == "marketing.email"
    ]
    assert history.source == "tcf"
    assert history.occurred_at == pytest.approx(1582243059.3)  # the string's LastUpdated
    vendor = api.post({"subject": "502", "tcf": SPEC_TCF, "tcf_vendor": 7})
    assert {r["purpose"]: r["action"] for r in vendor.json()["recorded"]}["marketing.email"] == (
        "revoke"
    )


def test_gpc_opts_out_of_sale_and_sharing_purposes(api: Api) -> None:
    assert gpc_purposes(api.platform.project.policy.purposes) == ["ads.partners"]
    api.post({"subject": "601", "choices": [{"purpose": "ads.partners", "action": "grant"}]})
    response = api.post({"subject": "601", "source": "web"}, **{"Sec-GPC": "1"})
    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == [
        {"seq": response.json()["recorded"][0]["seq"], "purpose": "ads.partners",
         "action": "revoke", "source": "gpc"}
    ]  # fmt: skip
    assert response.json()["allowed"]["ads.partners"] is False
    assert response.json()["allowed"]["marketing.email"] is False  # never granted; untouched


@pytest.mark.services
def test_revocation_leaves_every_destination_without_a_sync_run(
    shop: Path, pg_dsn: str, pg_table: str, redis_url: str, redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("T_PG", pg_dsn)
    monkeypatch.setenv("T_REDIS", redis_url)
    add_sync(shop, "to_pg", f"{{type: postgres, dsn_env: T_PG, table: {pg_table}}}")
    add_sync(
        shop,
        "to_redis",
        f"{{type: redis, url_env: T_REDIS, key_template: '{redis_prefix}:{{key}}'}}",
    )
    with Platform.open(shop) as platform:
        for name in ("crm_audience", "to_pg", "to_redis"):
            assert run_sync(platform, name).added > 0
        assert {loc.sync for loc in platform.meta.subject_locations(ADA)} == {
            "crm_audience", "to_pg", "to_redis"
        }  # fmt: skip
    assert int(ADA) in crm_ids(shop)

    for api in serve(shop):
        assert api.read(ADA, "marketing.email") == 403  # the agent may not use it at all
        started = time.perf_counter()
        response = api.post(
            {"subject": ADA, "choices": [{"purpose": "marketing.email", "action": "revoke"}]}
        )
        assert response.json()["propagation"]["status"] == "scheduled"
        propagator_for(api.platform).wait()
        elapsed = time.perf_counter() - started
        (report,) = propagator_for(api.platform).reports
        assert sorted(r.sync for r in report.removals) == ["crm_audience", "to_pg", "to_redis"]
        assert all(r.how == "deleted" for r in report.removals)
        print(f"revocation to absence in 3 destinations: {elapsed * 1000:.0f} ms")
        removals = [r for _, r in api.platform.audit.records() if r.action == "sync_removal"]
        assert {r.detail["sync"] for r in removals} == {"crm_audience", "to_pg", "to_redis"}
        assert api.platform.meta.subject_locations(ADA) == []

    assert int(ADA) not in crm_ids(shop)
    assert crm_ids(shop)  # the others stay
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT customer_id FROM {}").format(sql.Identifier(pg_table))
        ).fetchall()
    assert int(ADA) not in {r[0] for r in rows}
    assert rows
    import redis

    client = redis.Redis.from_url(redis_url)
    assert not client.exists(f"{redis_prefix}:{ADA}")
    assert list(client.scan_iter(f"{redis_prefix}:*"))
    client.close()
