"""A served copy of the demo shop with the extra roles, limits and JWT settings that the
security tests need. Policies and `tidegate.yml` are edited the way a user would."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tidegate.api import create_app
from tidegate.audit.log import AuditRecord
from tidegate.demo.runner import BackgroundServer, _free_port
from tidegate.platform import Platform

ISSUER = "https://idp.example.test/"
AUDIENCE = "tidegate-api"

EXTRA_POLICY = """
roles:
  desk_360:
    description: A support desk that may read the customer 360 only.
    purposes: [support]
    products: [customer_360]
  throttled:
    description: A batch client held to a slow rate.
    purposes: [support]
    rate_limit: {requests_per_second: 0.2, burst: 2}
  churn_desk:
    description: Support, on the churn scores only (half of a pooled key, issue 13).
    purposes: [support]
    products: [churn_risk]
  c360_analyst:
    description: Analytics, on the customer 360 only (the other half).
    purposes: [analytics]
    products: [customer_360]
"""

SERVE_SETTINGS = """serve:
  host: 127.0.0.1
  port: 8787
  max_body_bytes: 65536
  # the matrix and JWT tests send hundreds of bad credentials from one address
  unauthenticated_rate_limit: {requests_per_second: 1000, burst: 5000}
  jwt:
    jwks_file: jwks.json
    issuer: "https://idp.example.test/"
    audience: tidegate-api
    roles_claim: roles
"""


@dataclass
class Signer:
    """Private keys matching the project's JWKS file: `rsa` (kid r1) and `ec` (kid e1)."""

    keys: dict[str, Any] = field(default_factory=dict)

    def token(self, claims: dict[str, Any], kind: str = "rsa", **headers: Any) -> str:
        import jwt

        algorithm = "RS256" if kind == "rsa" else "ES256"
        kid = "r1" if kind == "rsa" else "e1"
        return jwt.encode(
            claims, self.keys[kind], algorithm=algorithm, headers={"kid": kid, **headers}
        )


def make_jwks(directory: Path) -> Signer:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, public, algorithm in (
        ("r1", rsa_key.public_key(), jwt.algorithms.RSAAlgorithm),
        ("e1", ec_key.public_key(), jwt.algorithms.ECAlgorithm),
    ):
        jwk = json.loads(algorithm.to_jwk(public))
        jwk.update(kid=kid, use="sig")
        keys.append(jwk)
    (directory / "jwks.json").write_text(json.dumps({"keys": keys}))
    return Signer({"rsa": rsa_key, "ec": ec_key})


def secure_shop(demo_dir: Path, target: Path) -> Signer:
    shutil.copytree(demo_dir, target)
    (target / "policies" / "security_roles.yml").write_text(EXTRA_POLICY)
    config = target / "tidegate.yml"
    text = config.read_text()
    old = "serve:\n  host: 127.0.0.1\n  port: 8787\n"
    assert old in text
    config.write_text(text.replace(old, SERVE_SETTINGS))
    return make_jwks(target)


@dataclass
class Served:
    platform: Platform
    client: httpx.Client
    base: str
    signer: Signer

    def audit_since(self, seq: int) -> list[AuditRecord]:
        return [r for _, r in self.platform.audit.records(after_seq=seq)]

    def last_seq(self) -> int:
        return self.platform.audit.last_seq()


@pytest.fixture(scope="module")
def served(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp("secure") / "shop"
    signer = secure_shop(demo_dir, directory)
    platform = Platform.open(directory)
    server = BackgroundServer(create_app(platform), _free_port(0))
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield Served(platform, client, base, signer)
    finally:
        server.stop()
        platform.close()
