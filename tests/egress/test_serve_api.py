"""The serving API over real HTTP: purposes, consent, treatments, auth, and the audit trail."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.api import create_app
from tidegate.audit.log import AuditRecord
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.platform.secrets import load_master_key
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
from tidegate.privacy.guard import guard_of

ADA, GRACE = "1", "2"  # the demo's fixed customers: Ada consented; Grace revoked marketing


class Api:
    def __init__(self, platform: Platform, client: httpx.Client) -> None:
        self.platform = platform
        self.client = client
        self.keys = {
            role: create_key(platform.meta, f"app-{role}", [role])[0]
            for role in ("support_agent", "analyst", "marketer")
        }

    def get(
        self,
        product: str,
        key: str,
        purpose: str | None,
        role: str | None = "support_agent",
        token: str | None = None,
    ) -> httpx.Response:
        headers = {}
        if purpose is not None:
            headers["X-Purpose"] = purpose
        bearer = token if token is not None else (self.keys[role] if role else None)
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        return self.client.get(f"/v1/products/{product}/entities/{key}", headers=headers)

    def audit_since(self, seq: int) -> list[AuditRecord]:
        return [r for s, r in self.platform.audit.records(after_seq=seq)]

    def last_seq(self) -> int:
        return self.platform.audit.last_seq()  # flushes the API's batched audit writer


@pytest.fixture(scope="module")
def api(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("serve") / "shop"
    shutil.copytree(demo_dir, directory)
    platform = Platform.open(directory)
    server = BackgroundServer(create_app(platform), _free_port(0))
    server.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            yield Api(platform, client)
    finally:
        server.stop()
        platform.close()


def _hmac(platform: Platform, purpose: str, text: str) -> str:
    key = guard_of(platform).hash_key(purpose).key
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def test_support_sees_the_email_in_clear(api: Api) -> None:
    response = api.get("customer_360", ADA, "support")
    assert response.status_code == 200
    body = response.json()
    assert body["data"]["email"] == "ada.lovelace1@example.com"
    assert body["data"]["customer_id"] == 1
    assert body["purpose"] == "support"
    assert body["treatments"]["email"] == "clear"
    assert body["version"] >= 1


def test_analytics_sees_a_stable_keyed_hash(api: Api) -> None:
    ada = _hmac(api.platform, "analytics", ADA)  # analytics addresses Ada by her pseudonym
    first = api.get("customer_360", ada, "analytics", role="analyst").json()["data"]
    second = api.get("customer_360", ada, "analytics", role="analyst").json()["data"]
    assert first["customer_id"] == ada
    assert first["email"] == second["email"]
    assert first["email"] == _hmac(api.platform, "analytics", "ada.lovelace1@example.com")
    assert first["email"] != _hmac(api.platform, "support", "ada.lovelace1@example.com")
    assert "first_name" not in first  # names are dropped for analytics
    master = load_master_key(api.platform.state_dir)
    assert master.hex() not in str(first)


def test_revoked_subject_is_indistinguishable_from_absent(api: Api) -> None:
    revoked = api.get("marketing_audience", GRACE, "marketing.email", role="marketer")
    absent = api.get("marketing_audience", "424242", "marketing.email", role="marketer")
    assert revoked.status_code == absent.status_code == 404
    assert revoked.json()["error"]["code"] == absent.json()["error"]["code"] == "not_found"
    assert set(revoked.json()["error"]) == set(absent.json()["error"])
    # Grace is in the product itself: only the guard keeps her out
    assert api.platform.online.read("marketing_audience", GRACE) is not None


def test_consented_subject_is_served_for_marketing(api: Api) -> None:
    response = api.get("marketing_audience", ADA, "marketing.email", role="marketer")
    assert response.status_code == 200
    assert response.json()["data"]["email"] == "ada.lovelace1@example.com"


@pytest.mark.parametrize(
    ("role", "purpose", "product", "status", "code"),
    [
        ("analyst", "marketing.email", "customer_360", 403, "forbidden"),
        ("marketer", "support", "customer_360", 403, "forbidden"),
        ("support_agent", "no.such.purpose", "customer_360", 403, "forbidden"),
        ("support_agent", None, "customer_360", 400, "bad_request"),
        ("support_agent", "support", "no_such_product", 404, "not_found"),
        ("marketer", "analytics", "marketing_audience", 403, "forbidden"),
    ],
)
def test_denials_are_json_and_audited(
    api: Api, role: str, purpose: str | None, product: str, status: int, code: str
) -> None:
    before = api.last_seq()
    response = api.get(product, ADA, purpose, role=role)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    records = api.audit_since(before)
    assert len(records) == 1
    assert records[0].outcome == "denied"
    assert records[0].principal == f"app-{role}"
    assert records[0].columns == {}


@pytest.mark.parametrize("token", [None, "not-a-key", "tg_000000000000_wrongsecret", "tg_onlytwo"])
def test_missing_or_unknown_keys_get_401(api: Api, token: str | None) -> None:
    response = api.get("customer_360", ADA, "support", role=None, token=token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


def test_revoked_and_expired_keys_get_401(api: Api) -> None:
    token, row = create_key(api.platform.meta, "temp", ["support_agent"])
    assert api.get("customer_360", ADA, "support", token=token).status_code == 200
    api.platform.meta.revoke_api_key(row.key_id, time.time())
    assert api.get("customer_360", ADA, "support", token=token).status_code == 401
    expiring, _ = create_key(api.platform.meta, "temp2", ["support_agent"], ttl_seconds=0.01)
    time.sleep(0.05)
    response = api.get("customer_360", ADA, "support", token=expiring)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_every_served_read_is_audited_with_columns(api: Api) -> None:
    before = api.last_seq()
    ada = _hmac(api.platform, "analytics", ADA)
    body = api.get("customer_360", ada, "analytics", role="analyst").json()
    records = api.audit_since(before)
    assert len(records) == 1
    record = records[0]
    assert (record.action, record.principal, record.purpose, record.product) == (
        "serve",
        "app-analyst",
        "analytics",
        "customer_360",
    )
    assert set(record.columns) == set(body["data"])
    assert record.columns["email"] == "hash"
    assert record.subjects == (ADA,)
    assert api.platform.audit.verify() == []


def test_filtered_read_is_audited_as_filtered(api: Api) -> None:
    before = api.last_seq()
    api.get("marketing_audience", GRACE, "marketing.email", role="marketer")
    (record,) = api.audit_since(before)
    assert record.outcome == "filtered"
    assert record.rows == 0


def test_revocation_shows_on_the_very_next_read(api: Api) -> None:
    subject = "3"
    consent_ledger_of(api.platform).record(
        [ConsentEvent(subject, "analytics", "grant", time.time() - 10, "test")]
    )
    token = _hmac(api.platform, "analytics", subject)
    assert api.get("customer_360", token, "analytics", role="analyst").status_code == 200
    consent_ledger_of(api.platform).record(
        [ConsentEvent(subject, "analytics", "revoke", time.time(), "test")]
    )
    assert api.get("customer_360", token, "analytics", role="analyst").status_code == 404


def test_unknown_routes_and_huge_keys_are_json_404(api: Api) -> None:
    response = api.client.get("/v1/nothing/here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    huge = api.get("customer_360", "9" * 5000, "support")
    assert huge.status_code == 404


def _body(response: httpx.Response) -> dict[str, Any]:
    data: dict[str, Any] = response.json()
    return data


def test_products_listing_needs_a_key(api: Api) -> None:
    assert api.client.get("/v1/products").status_code == 401
    listed = _body(
        api.client.get(
            "/v1/products", headers={"Authorization": f"Bearer {api.keys['support_agent']}"}
        )
    )
    assert {p["name"] for p in listed["products"]} == {
        "customer_360",
        "churn_risk",
        "marketing_audience",
    }
