"""Batch lookups, the product catalogue, freshness in answers, and serving while data moves."""

from __future__ import annotations

import datetime as dt
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.api import create_app
from tidegate.audit.log import AuditRecord
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.errors import TidegateError
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.platform.secrets import load_master_key
from tidegate.privacy.consent import ConsentEvent, consent_ledger_of
from tidegate.privacy.treatments import purpose_key
from tidegate.store.online.codec import encode_row

ADA, GRACE = "1", "2"


class Api:
    def __init__(self, platform: Platform, client: httpx.Client) -> None:
        self.platform = platform
        self.client = client
        self.keys = {
            role: create_key(platform.meta, f"app-{role}", [role])[0]
            for role in ("support_agent", "analyst", "marketer")
        }

    def headers(self, role: str, purpose: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        if purpose:
            headers["X-Purpose"] = purpose
        return headers

    def lookup(
        self, product: str, keys: Any, purpose: str = "support", role: str = "support_agent"
    ) -> httpx.Response:
        return self.client.post(
            f"/v1/products/{product}/lookup",
            json={"keys": keys},
            headers=self.headers(role, purpose),
        )

    def get(
        self, product: str, key: str, purpose: str = "support", role: str = "support_agent"
    ) -> httpx.Response:
        return self.client.get(
            f"/v1/products/{product}/entities/{key}", headers=self.headers(role, purpose)
        )

    def audit_since(self, seq: int) -> list[AuditRecord]:
        return [r for _, r in self.platform.audit.records(after_seq=seq)]


@pytest.fixture(scope="module")
def api(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    directory = tmp_path_factory.mktemp("lookup") / "shop"
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


# ---------------------------------------------------------------- lookup


def test_lookup_answers_each_key_in_order(api: Api) -> None:
    response = api.lookup("customer_360", [ADA, "424242", 3, ADA])
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["key"] for r in body["results"]] == [ADA, "424242", "3", ADA]
    assert [r["found"] for r in body["results"]] == [True, False, True, True]
    assert body["results"][0]["data"]["email"] == "ada.lovelace1@example.com"
    assert body["results"][0]["updated_at"]
    assert body["treatments"]["email"] == "clear"
    assert body["version"] >= 1
    assert body["built_at"]
    single = api.get("customer_360", ADA).json()
    assert body["results"][0]["data"] == single["data"]  # one guard, two faces


def test_lookup_hides_filtered_subjects_exactly_like_absent_keys(api: Api) -> None:
    body = api.lookup(
        "marketing_audience", [GRACE, "424242", ADA], "marketing.email", "marketer"
    ).json()
    grace, absent, ada = body["results"]
    assert grace == {"key": GRACE, "found": False}
    assert absent == {"key": "424242", "found": False}
    assert ada["found"] is True
    assert api.platform.online.read("marketing_audience", GRACE) is not None


def test_lookup_writes_one_audit_record_listing_subjects(api: Api) -> None:
    before = api.platform.audit.last_seq()
    api.lookup("marketing_audience", [ADA, GRACE, "424242"], "marketing.email", "marketer")
    (record,) = api.audit_since(before)
    assert (record.action, record.principal, record.purpose) == (
        "serve",
        "app-marketer",
        "marketing.email",
    )
    assert record.subjects == (ADA,)  # Grace was filtered: nothing of hers left
    assert record.rows == 1
    assert record.detail["lookup"] == 3
    assert record.detail["not_found"] == 2
    assert record.columns["email"] == "clear"


def test_lookup_takes_up_to_1000_keys(api: Api) -> None:
    keys = [str(i) for i in range(1, 1001)]
    body = api.lookup("customer_360", keys).json()
    assert len(body["results"]) == 1000
    too_many = api.lookup("customer_360", [*keys, "1001"])
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "invalid_request"
    assert "1,000" in too_many.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"keys": []}',
        b'{"keys": "1"}',
        b'{"keys": [true]}',
        b'{"keys": [null]}',
        b'{"keys": [{"a": 1}]}',
        b'{"keys": [""]}',
        b'{"keys": ["1"], "extra": 1}',
        b'{"keys": ["' + b"9" * 300 + b'"]}',
    ],
)
def test_malformed_lookups_are_422_and_audited(api: Api, body: bytes) -> None:
    before = api.platform.audit.last_seq()
    headers = {**api.headers("support_agent", "support"), "Content-Type": "application/json"}
    response = api.client.post("/v1/products/customer_360/lookup", content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request"
    (record,) = api.audit_since(before)
    assert record.outcome == "denied"


def test_lookup_needs_a_json_body_under_the_size_limit(api: Api) -> None:
    headers = api.headers("support_agent", "support")
    wrong_type = api.client.post(
        "/v1/products/customer_360/lookup",
        content=b'{"keys": ["1"]}',
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert wrong_type.status_code == 415
    huge = api.client.post(
        "/v1/products/customer_360/lookup",
        content=b'{"keys": ["' + b"1" * 400_000 + b'"]}',
        headers={**headers, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "payload_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b"x" * 10_000

    chunked = api.client.post(
        "/v1/products/customer_360/lookup",
        content=chunks(),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert chunked.status_code == 413


def test_lookup_denials_match_single_reads(api: Api) -> None:
    assert api.lookup("customer_360", [ADA], "marketing.email", "analyst").status_code == 403
    assert api.lookup("no_such_product", [ADA]).status_code == 404
    missing_purpose = api.client.post(
        "/v1/products/customer_360/lookup",
        json={"keys": [ADA]},
        headers={"Authorization": f"Bearer {api.keys['support_agent']}"},
    )
    assert missing_purpose.status_code == 400
    anonymous = api.client.post("/v1/products/customer_360/lookup", json={"keys": [ADA]})
    assert anonymous.status_code == 401


# ---------------------------------------------------------------- catalogue


def test_product_listing_shows_what_each_role_may_declare(api: Api) -> None:
    body = api.client.get("/v1/products", headers=api.headers("marketer")).json()
    by_name = {p["name"]: p for p in body["products"]}
    assert by_name["customer_360"]["allowed_purposes"] == ["marketing.email"]
    assert by_name["customer_360"]["owner"] == "shop-platform"


def test_product_description_has_contract_owner_freshness_and_purposes(api: Api) -> None:
    response = api.client.get("/v1/products/customer_360", headers=api.headers("analyst"))
    assert response.status_code == 200
    body = response.json()
    assert body["owner"] == "shop-platform"
    assert body["key"] == body["subject"] == "customer_id"
    assert body["columns"]["email"]["classification"] == "user.contact.email"
    assert body["freshness"]["slo"] == "15m"
    assert body["freshness"]["slo_seconds"] == 900
    assert body["allowed_purposes"] == ["analytics"]
    assert body["version"] >= 1
    assert body["built_at"]
    unknown = api.client.get("/v1/products/nope", headers=api.headers("analyst"))
    assert unknown.status_code == 404
    assert api.client.get("/v1/products/customer_360").status_code == 401


def test_freshness_recorded_by_the_stream_worker_is_shown(api: Api) -> None:
    ledger = api.platform.meta.freshness
    try:
        ledger.updated("churn_risk", "incremental", lag=0.25, slo=900)
    finally:
        ledger.close()
    body = api.client.get("/v1/products/churn_risk", headers=api.headers("support_agent")).json()
    assert body["freshness"]["mode"] == "incremental"
    assert body["freshness"]["last_update"]
    assert body["freshness"]["lag_seconds"] == 0


# ---------------------------------------------------------------- data and consent moving


def test_in_place_updates_are_served_with_their_own_freshness(api: Api) -> None:
    key = "5"
    before = api.get("customer_360", key).json()
    row = dict(before["data"], city="Reykjavik")
    # updated_at shows whole seconds: write in a later second than the row's own
    written = dt.datetime.fromisoformat(before["updated_at"]).timestamp()
    time.sleep(max(0.0, written + 1 - time.time()) + 0.01)
    api.platform.online.upsert("customer_360", [(key, encode_row(row))])  # as the worker does
    after = api.get("customer_360", key).json()
    assert after["data"]["city"] == "Reykjavik"
    assert after["updated_at"] > before["updated_at"]
    assert after["built_at"] == before["built_at"]


def test_consent_changes_from_another_connection_show_on_the_next_read(api: Api) -> None:
    """The ledger written through a separate connection (as the CLI or another worker does)."""
    subject = "9"
    # analytics hashes customer_id: the entity is addressed by its pseudonym
    master = load_master_key(api.platform.state_dir)
    token = purpose_key(master, "analytics").hmac_hex(subject)
    other = Platform.open(api.platform.project.root)
    try:
        consent_ledger_of(other).record(
            [ConsentEvent(subject, "analytics", "grant", time.time() - 5, "t")]
        )
        assert api.get("customer_360", token, "analytics", "analyst").status_code == 200
        consent_ledger_of(other).record(
            [ConsentEvent(subject, "analytics", "revoke", time.time(), "t")]
        )
        assert api.get("customer_360", token, "analytics", "analyst").status_code == 404
        found = api.lookup("customer_360", [token], "analytics", "analyst").json()
        assert found["results"] == [{"key": token, "found": False}]
    finally:
        other.close()


def test_ttl_from_the_product_config_is_applied_on_read(api: Api) -> None:
    online = api.platform.online
    online.set_ttl("churn_risk", 0.01)
    try:
        time.sleep(0.05)
        assert api.get("churn_risk", ADA).status_code == 404
        assert api.lookup("churn_risk", [ADA]).json()["results"] == [{"key": ADA, "found": False}]
    finally:
        online.set_ttl("churn_risk", None)
    assert api.get("churn_risk", ADA).status_code == 200


def test_platform_reads_ttls_from_product_yaml(demo_copy: Path) -> None:
    path = demo_copy / "products" / "churn_risk.yml"
    path.write_text(path.read_text() + "ttl: 7d\n")
    with Platform.open(demo_copy) as platform:
        assert platform.online.ttl("churn_risk") == 7 * 86400
        assert platform.online.ttl("customer_360") is None
    path.write_text(path.read_text().replace("ttl: 7d\n", "ttl: soon\n"))
    from tidegate.errors import ConfigError

    with pytest.raises(ConfigError, match="ttl"):
        Platform.open(demo_copy)


_KEY_VALUES = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.text(max_size=4),
    st.text(min_size=255, max_size=258),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.lists(st.integers(0, 9), max_size=1),
)


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(_KEY_VALUES, min_size=1, max_size=12))
def test_lookup_keys_are_read_strictly(keys: list[Any]) -> None:
    """A lookup body's keys: strings and integers (not booleans) of 1..256 characters, as
    text, in order; otherwise a 422 naming the first key that is wrong."""
    from tidegate.egress.serve.app import _lookup_keys

    def valid(key: Any) -> bool:
        ok_type = isinstance(key, str | int) and not isinstance(key, bool)
        return ok_type and 1 <= len(str(key)) <= 256

    body = orjson.dumps({"keys": keys})
    wrong = [i for i, key in enumerate(keys) if not valid(key)]
    if not wrong:
        assert _lookup_keys(body) == [str(key) for key in keys]
        return
    with pytest.raises(TidegateError) as raised:
        _lookup_keys(body)
    assert raised.value.http_status == 422
    assert raised.value.to_error_detail()["error"]["details"]["index"] == wrong[0]
