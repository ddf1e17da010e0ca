"""Role x purpose x product x key state, on both read endpoints: every cell asserted, every
denial audited (one record, outcome `denied`, the right principal, no columns).

The expected answer of each cell is written out from the policies here, not asked of
the code under test.
"""

from __future__ import annotations

import itertools
import time

import pytest

from tidegate.platform.keys import create_key

from .conftest import Served

ADA = "1"  # consented to every purpose, so an allowed cell is a 200
PURPOSES = ("support", "marketing.email", "analytics")
PRODUCTS = ("customer_360", "churn_risk", "marketing_audience")
ROLE_PURPOSES = {
    "support_agent": {"support"},
    "marketer": {"marketing.email"},
    "analyst": {"analytics"},
    "desk_360": {"support"},
    "ghost": set(),  # wrong scope: a role the policies do not know
}
ROLE_PRODUCTS = {"desk_360": {"customer_360"}}
PRODUCT_PURPOSES = {
    "customer_360": set(PURPOSES),
    "churn_risk": set(PURPOSES),
    "marketing_audience": {"marketing.email"},
}
STATES = ("valid", "expired", "revoked")


def expected(role: str, purpose: str, product: str, state: str) -> int:
    if state != "valid":
        return 401
    if purpose not in ROLE_PURPOSES[role]:
        return 403
    if product not in ROLE_PRODUCTS.get(role, set(PRODUCTS)):
        return 403
    if purpose not in PRODUCT_PURPOSES[product]:
        return 403
    return 200


@pytest.fixture(scope="module")
def tokens(served: Served) -> dict[tuple[str, str], str]:
    meta = served.platform.meta
    out: dict[tuple[str, str], str] = {}
    for role in ROLE_PURPOSES:
        out[(role, "valid")] = create_key(meta, f"m-{role}", [role])[0]
        out[(role, "expired")] = create_key(meta, f"m-{role}-old", [role], ttl_seconds=0.01)[0]
        revoked, row = create_key(meta, f"m-{role}-gone", [role])
        meta.revoke_api_key(row.key_id, time.time())
        out[(role, "revoked")] = revoked
    time.sleep(0.05)
    return out


@pytest.mark.parametrize("endpoint", ["entity", "lookup"])
def test_every_cell_of_the_matrix(
    served: Served, tokens: dict[tuple[str, str], str], endpoint: str
) -> None:
    wrong: list[str] = []
    cells = 0
    for role, purpose, product, state in itertools.product(
        ROLE_PURPOSES, PURPOSES, PRODUCTS, STATES
    ):
        cells += 1
        want = expected(role, purpose, product, state)
        headers = {"Authorization": f"Bearer {tokens[(role, state)]}", "X-Purpose": purpose}
        before = served.last_seq()
        if endpoint == "entity":
            response = served.client.get(f"/v1/products/{product}/entities/{ADA}", headers=headers)
        else:
            response = served.client.post(
                f"/v1/products/{product}/lookup", json={"keys": [ADA]}, headers=headers
            )
        cell = f"{role} x {purpose} x {product} x {state}"
        if response.status_code != want:
            wrong.append(f"{cell}: {response.status_code} (expected {want}) {response.text[:120]}")
            continue
        if want == 200 and endpoint == "lookup":
            assert response.json()["results"][0]["found"] is True, cell
        records = served.audit_since(before)
        if len(records) != 1:
            wrong.append(f"{cell}: {len(records)} audit records")
            continue
        (record,) = records
        if want == 200:
            ok = record.outcome == "allowed" and record.subjects == (ADA,)
        else:
            code = "unauthenticated" if want == 401 else "forbidden"
            principal = "anonymous" if want == 401 else f"m-{role}"
            ok = (
                record.outcome == "denied"
                and record.principal == principal
                and record.columns == {}
                and record.detail.get("code") == code
                and record.product == product
                and record.purpose == purpose
            )
        if not ok:
            wrong.append(f"{cell}: audit record {record}")
    assert cells == 5 * 3 * 3 * 3
    assert not wrong, "\n".join(wrong)
    assert served.platform.audit.verify() == []


def test_catalogue_shows_only_products_the_roles_may_read(
    served: Served, tokens: dict[tuple[str, str], str]
) -> None:
    for role in ROLE_PURPOSES:
        headers = {"Authorization": f"Bearer {tokens[(role, 'valid')]}"}
        listed = served.client.get("/v1/products", headers=headers).json()["products"]
        names = {p["name"] for p in listed}
        if role == "ghost":
            assert names == set(), role
        else:
            assert names == ROLE_PRODUCTS.get(role, set(PRODUCTS)), role
        for product in PRODUCTS:
            status = served.client.get(f"/v1/products/{product}", headers=headers).status_code
            assert status == (200 if product in names else 403), (role, product)
        for state in ("expired", "revoked"):
            bad = {"Authorization": f"Bearer {tokens[(role, state)]}"}
            assert served.client.get("/v1/products", headers=bad).status_code == 401
