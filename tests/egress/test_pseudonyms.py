"""Entities addressed by pseudonym where the purpose hashes the key column (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from tidegate.api import create_app
from tidegate.egress.serve.pseudonyms import PseudonymIndex
from tidegate.platform import Platform
from tidegate.platform.keys import create_key
from tidegate.privacy.guard import AccessContext, guard_of
from tidegate.store.online.codec import encode_row

C360 = "/v1/products/customer_360"
RESEARCH = """
purposes:
  research: {legal_basis: legitimate_interest}
roles:
  researcher: {purposes: [research, analytics]}
treatments:
  research:
    user.unique_id: drop
"""


@pytest.fixture
def platform(demo_copy: Path) -> Iterator[Platform]:
    (demo_copy / "policies" / "research.yml").write_text(RESEARCH)
    product = demo_copy / "products" / "customer_360.yml"
    product.write_text(
        product.read_text().replace(
            "purposes: [support, marketing.email, analytics]",
            "purposes: [support, marketing.email, analytics, research]",
        )
    )
    with Platform.open(demo_copy) as opened:
        yield opened


def test_a_purpose_that_hides_the_key_cannot_address_entities(platform: Platform) -> None:
    token, _ = create_key(platform.meta, "lab", ["researcher"])
    headers = {"Authorization": f"Bearer {token}", "X-Purpose": "research"}
    with TestClient(create_app(platform)) as api:
        response = api.get(f"{C360}/entities/1", headers=headers)
        assert response.status_code == 403
        assert "cannot be addressed by key" in response.json()["error"]["message"]
        lookup = api.post(f"{C360}/lookup", json={"keys": ["1"]}, headers=headers)
        assert lookup.status_code == 403


def test_new_keys_become_addressable_and_the_row_must_carry_the_token(
    platform: Platform,
) -> None:
    plan = guard_of(platform).plan(AccessContext("x", ("analyst",), "analytics"), "customer_360")
    index = PseudonymIndex(platform.online, refresh_seconds=0.0)
    hash_key = plan.hash_key
    assert index.resolve(plan, [hash_key.hmac_hex("1")]) == {hash_key.hmac_hex("1"): "1"}
    assert index.resolve(plan, [hash_key.hmac_hex("999999")]) == {}
    row = orjson.loads(platform.online.read("customer_360", "1") or "{}")
    row["customer_id"] = 999999
    platform.online.upsert("customer_360", [("999999", encode_row(row))])  # as the worker does
    new = hash_key.hmac_hex("999999")
    assert index.resolve(plan, [new]) == {new: "999999"}
    # a clear id is never a token
    assert index.resolve(plan, ["1", "999999"]) == {}
