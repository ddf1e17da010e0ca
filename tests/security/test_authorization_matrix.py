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
from tidegate.platform.secrets import load_master_key
from tidegate.privacy.treatments import purpose_key

from .conftest import Served

ADA = "1"  # consented to every purpose, so an allowed cell is a 200
PURPOSES = ("support", "marketing.email", "analytics")
PRODUCTS = ("customer_360", "churn_risk", "marketing_audience")
ROLE_PURPOSES = {
    "support_agent": {"support"},
    "marketer": {"marketing.email"},
    "analyst": {"analytics"},
    "desk_360": {"support"},
    "churn_desk": {"support"},
    "c360_analyst": {"analytics"},
    "ghost": set(),  # wrong scope: a role the policies do not know
}
ROLE_PRODUCTS = {
    "desk_360": {"customer_360"},
    "churn_desk": {"churn_risk"},
    "c360_analyst": {"customer_360"},
}
#: keys holding several roles: a cell is allowed only when ONE role allows it (not pooled)
KEYS: dict[str, tuple[str, ...]] = {role: (role,) for role in ROLE_PURPOSES} | {
    "churn_desk+c360_analyst": ("churn_desk", "c360_analyst"),
    "desk_360+analyst": ("desk_360", "analyst"),
    "marketer+churn_desk": ("marketer", "churn_desk"),
    "ghost+c360_analyst": ("ghost", "c360_analyst"),
}
PRODUCT_PURPOSES = {
    "customer_360": set(PURPOSES),
    "churn_risk": set(PURPOSES),
    "marketing_audience": {"marketing.email"},
}
STATES = ("valid", "expired", "revoked")


def ada_under(served: Served, purpose: str) -> str:
    """How a caller addresses Ada under `purpose`: analytics hashes customer_id (the key
    of every product), so there she is known by her pseudonym only."""
    if purpose != "analytics":
        return ADA
    master = load_master_key(served.platform.state_dir)
    return purpose_key(master, purpose).hmac_hex(ADA)


def one_role_allows(role: str, purpose: str, product: str) -> bool:
    return purpose in ROLE_PURPOSES[role] and product in ROLE_PRODUCTS.get(role, set(PRODUCTS))


def expected(key: str, purpose: str, product: str, state: str) -> int:
    if state != "valid":
        return 401
    if not any(one_role_allows(role, purpose, product) for role in KEYS[key]):
        return 403
    if purpose not in PRODUCT_PURPOSES[product]:
        return 403
    return 200


@pytest.fixture(scope="module")
def tokens(served: Served) -> dict[tuple[str, str], str]:
    meta = served.platform.meta
    out: dict[tuple[str, str], str] = {}
    for name, roles in KEYS.items():
        out[(name, "valid")] = create_key(meta, f"m-{name}", list(roles))[0]
        out[(name, "expired")] = create_key(meta, f"m-{name}-old", list(roles), ttl_seconds=0.01)[0]
        revoked, row = create_key(meta, f"m-{name}-gone", list(roles))
        meta.revoke_api_key(row.key_id, time.time())
        out[(name, "revoked")] = revoked
    time.sleep(0.05)
    return out


@pytest.mark.parametrize("endpoint", ["entity", "lookup"])
def test_every_cell_of_the_matrix(
    served: Served, tokens: dict[tuple[str, str], str], endpoint: str
) -> None:
    wrong: list[str] = []
    cells = 0
    for role, purpose, product, state in itertools.product(KEYS, PURPOSES, PRODUCTS, STATES):
        cells += 1
        want = expected(role, purpose, product, state)
        headers = {"Authorization": f"Bearer {tokens[(role, state)]}", "X-Purpose": purpose}
        key = ada_under(served, purpose)
        before = served.last_seq()
        if endpoint == "entity":
            response = served.client.get(f"/v1/products/{product}/entities/{key}", headers=headers)
        else:
            response = served.client.post(
                f"/v1/products/{product}/lookup", json={"keys": [key]}, headers=headers
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
    assert cells == len(KEYS) * 3 * 3 * 3
    assert not wrong, "\n".join(wrong)
    assert served.platform.audit.verify() == []


def test_catalogue_shows_only_products_the_roles_may_read(
    served: Served, tokens: dict[tuple[str, str], str]
) -> None:
    for key, roles in KEYS.items():
        headers = {"Authorization": f"Bearer {tokens[(key, 'valid')]}"}
        listed = served.client.get("/v1/products", headers=headers).json()["products"]
        names = {p["name"] for p in listed}
        readable = set().union(
            *(ROLE_PRODUCTS.get(r, set(PRODUCTS)) for r in roles if r != "ghost")
        )
        assert names == readable, key
        for entry in listed:
            # allowed purposes: only pairs that one single role grants
            want = [
                p
                for p in PURPOSES
                if p in PRODUCT_PURPOSES[entry["name"]]
                and any(one_role_allows(r, p, entry["name"]) for r in roles)
            ]
            assert sorted(entry["allowed_purposes"]) == sorted(want), (key, entry["name"])
        for product in PRODUCTS:
            status = served.client.get(f"/v1/products/{product}", headers=headers).status_code
            assert status == (200 if product in names else 403), (key, product)
        for state in ("expired", "revoked"):
            bad = {"Authorization": f"Bearer {tokens[(key, state)]}"}
            assert served.client.get("/v1/products", headers=bad).status_code == 401
