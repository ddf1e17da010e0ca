"""Credentials: JWTs against the JWKS file, key rotation, rate limits, and secrets kept out
of logs and audit records."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from tidegate.errors import NotFoundError
from tidegate.platform.keys import create_key, key_state, rotate_key

from .conftest import AUDIENCE, ISSUER, Served

ENTITY = "/v1/products/customer_360/entities/1"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "svc-helpdesk",
        "iat": now,
        "exp": now + 300,
        "roles": ["support_agent"],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def read(served: Served, token: str, purpose: str = "support") -> Any:
    path = ENTITY
    if purpose == "analytics":  # analytics hashes the key: entity 1 is its pseudonym
        from tidegate.platform.secrets import load_master_key
        from tidegate.privacy.treatments import purpose_key

        master = load_master_key(served.platform.state_dir)
        path = ENTITY.rsplit("/", 1)[0] + "/" + purpose_key(master, purpose).hmac_hex("1")
    return served.client.get(
        path, headers={"Authorization": f"Bearer {token}", "X-Purpose": purpose}
    )


# ---------------------------------------------------------------- JWT


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_a_valid_jwt_reads_with_the_roles_of_its_claim(served: Served, kind: str) -> None:
    before = served.last_seq()
    response = read(served, served.signer.token(claims(), kind))
    assert response.status_code == 200, response.text
    (record,) = served.audit_since(before)
    assert record.principal == "jwt:svc-helpdesk"
    marketing = served.signer.token(claims(roles="marketer"), kind)  # space-separated form
    assert read(served, marketing).status_code == 403
    assert read(served, marketing, "marketing.email").status_code == 200


def _hs256_with_public_key(served: Served) -> str:
    """The classic confusion attack: HS256 keyed with the server's public key."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "kid": "r1", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    public = (served.platform.project.root / "jwks.json").read_bytes()
    signature = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def _unsigned() -> str:
    import base64
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims()).encode())}."


@pytest.mark.parametrize(
    "make",
    [
        lambda s: s.signer.token(claims(iss="https://evil.example/")),
        lambda s: s.signer.token(claims(aud="someone-else")),
        lambda s: s.signer.token(claims(exp=int(time.time()) - 3600)),
        lambda s: s.signer.token(claims(exp=None)),
        lambda s: s.signer.token(claims(sub=None)),
        lambda s: s.signer.token(claims(nbf=int(time.time()) + 3600)),
        lambda s: s.signer.token(claims(roles={"support_agent": True})),
        lambda s: s.signer.token(claims(), kid="unknown"),
        lambda s: s.signer.token(claims())[:-4] + "AAAA",
        _hs256_with_public_key,
        lambda s: _unsigned(),
        lambda s: "a.b.c",
    ],
    ids=[
        "issuer",
        "audience",
        "expired",
        "no-exp",
        "no-sub",
        "not-yet",
        "roles-not-a-list",
        "unknown-kid",
        "bad-signature",
        "hs256-confusion",
        "alg-none",
        "garbage",
    ],
)
def test_bad_jwts_are_401_and_audited(served: Served, make: Any) -> None:
    before = served.last_seq()
    response = read(served, make(served))
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthenticated"
    (record,) = served.audit_since(before)
    assert record.outcome == "denied"


# ---------------------------------------------------------------- rotation


def test_rotation_keeps_the_old_key_for_the_grace_period(served: Served) -> None:
    meta = served.platform.meta
    old, row = create_key(meta, "rotating-app", ["support_agent"])
    new, new_row, stops = rotate_key(meta, row.key_id, grace_seconds=3600)
    assert new_row.principal == "rotating-app"
    assert new_row.roles == ("support_agent",)
    assert stops == pytest.approx(time.time() + 3600, abs=5)
    assert read(served, old).status_code == 200
    assert read(served, new).status_code == 200
    stored = meta.api_key(row.key_id)
    assert stored is not None
    assert key_state(stored, time.time()) == "retiring"
    assert key_state(stored, time.time() + 3601) == "revoked"


def test_rotation_without_grace_revokes_at_once(served: Served) -> None:
    meta = served.platform.meta
    old, row = create_key(meta, "leaked-app", ["support_agent"])
    assert read(served, old).status_code == 200  # cached as valid ...
    new, _, _ = rotate_key(meta, row.key_id, grace_seconds=0)
    response = read(served, old)  # ... and still refused on the very next request
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]
    assert read(served, new).status_code == 200
    with pytest.raises(NotFoundError):
        rotate_key(meta, row.key_id)


def test_keys_rotate_command(served: Served) -> None:
    from tidegate.cli import app as cli_app

    meta = served.platform.meta
    old, row = create_key(meta, "cli-app", ["analyst"])
    root = str(served.platform.project.root)
    result = CliRunner().invoke(
        cli_app, ["keys", "rotate", row.key_id, "-p", root, "--grace", "0s"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert token.startswith("tg_")
    assert read(served, token, "analytics").status_code == 200
    assert read(served, old, "analytics").status_code == 401
    assert token not in str([r for _, r in served.platform.audit.records()])


# ---------------------------------------------------------------- rate limits


def test_rate_limit_answers_429_with_retry_after_and_audits(served: Served) -> None:
    token, _ = create_key(served.platform.meta, "batch-client", ["throttled"])
    statuses = [read(served, token).status_code for _ in range(2)]
    assert statuses == [200, 200]  # the burst
    before = served.last_seq()
    limited = read(served, token)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    (record,) = served.audit_since(before)
    assert (record.outcome, record.principal) == ("denied", "batch-client")
    # another principal with the same role has a bucket of its own
    other, _ = create_key(served.platform.meta, "other-batch-client", ["throttled"])
    assert read(served, other).status_code == 200


def test_token_bucket_refills() -> None:
    from tidegate.egress.serve.ratelimit import RateLimitedError, RateLimiter
    from tidegate.project.models import RateLimitConfig, RoleConfig
    from tidegate.project.project import Policy

    policy = Policy(
        roles={
            "slow": RoleConfig(
                purposes=["support"], rate_limit=RateLimitConfig(requests_per_second=2, burst=1)
            ),
            "free": RoleConfig(purposes=["support"]),
        }
    )
    limiter = RateLimiter(policy)
    limiter.check("a", ("slow",), now=100.0)
    with pytest.raises(RateLimitedError) as caught:
        limiter.check("a", ("slow",), now=100.1)
    assert caught.value.retry_after == pytest.approx(0.4)
    limiter.check("a", ("slow",), now=100.6)  # refilled at 2/s
    for _ in range(100):
        limiter.check("b", ("slow", "free"), now=100.0)  # a role without a limit: none


# ---------------------------------------------------------------- secrets stay secret


def test_secrets_never_reach_logs_or_audit(
    served: Served, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    token, _ = create_key(served.platform.meta, "logged-app", ["support_agent"])
    secret = token.split("_", 2)[2]
    jwt_token = served.signer.token(claims())
    before = served.last_seq()
    read(served, token)
    read(served, token + "x")  # a wrong secret
    read(served, jwt_token)
    read(served, jwt_token[:-3] + "abc")
    served.client.get("/v1/products", headers={"X-API-Key": token})

    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"backend failed while holding {token}")

    monkeypatch.setattr(served.platform.online, "read_entries", explode)
    crashed = read(served, token)
    assert crashed.status_code == 500
    assert crashed.json() == {
        "error": {"code": "internal", "message": "internal error; see the server log"}
    }
    assert "Traceback" not in crashed.text
    monkeypatch.undo()
    audit = str(served.audit_since(before))
    logs = caplog.text
    assert "<redacted credential>" in logs  # the failure was logged, without the key
    for value in (token, secret, jwt_token, jwt_token.split(".")[2]):
        assert value not in logs
        assert value not in audit
    assert secret not in crashed.text
