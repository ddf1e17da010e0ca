"""The attacks of issue 13 ("No way around the guard or the audit trail"), each replayed
against a served demo shop (or its files) and shown to fail now.

One test per attack; the unit tests beside each module cover the details.
"""

from __future__ import annotations

from tidegate.egress.serve.keys import create_key

from .conftest import Served

C360 = "/v1/products/customer_360"


def _headers(token: str, purpose: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "X-Purpose": purpose}


# ---------------------------------------------------------------- 2. roles are not pooled


def test_pooled_roles_do_not_read_customer_360_for_support(served: Served) -> None:
    """Role A: support on churn_risk; role B: analytics on customer_360. Together they
    used to read customer_360 for support, email in clear."""
    token, _ = create_key(served.platform.meta, "pooled", ["churn_desk", "c360_analyst"])
    before = served.last_seq()
    response = served.client.get(f"{C360}/entities/1", headers=_headers(token, "support"))
    assert response.status_code == 403, response.text
    assert "email" not in response.text
    lookup = served.client.post(
        f"{C360}/lookup", json={"keys": ["1"]}, headers=_headers(token, "support")
    )
    assert lookup.status_code == 403, lookup.text
    records = served.audit_since(before)
    assert [r.outcome for r in records] == ["denied", "denied"]
    # each half still works on its own terms
    churn = served.client.get(
        "/v1/products/churn_risk/entities/1", headers=_headers(token, "support")
    )
    assert churn.status_code == 200, churn.text
    described = served.client.get(C360, headers={"Authorization": f"Bearer {token}"})
    assert described.json()["allowed_purposes"] == ["analytics"]
