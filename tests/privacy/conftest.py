"""A demo shop extended for privacy tests (the demo's own `dpo` role answers subject
requests): a consent-writing role, TCF and GPC mappings,
and syncs of the marketing audience into real PostgreSQL, Redis and MariaDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

EXTRA_POLICY = """
purposes:
  ads.partners:
    description: Sharing the audience with advertising partners.
    legal_basis: consent
    data_uses: [marketing.advertising.third_party]
    tcf_purposes: [1, 4]
roles:
  cmp:
    description: The consent management platform's backend.
    purposes: [support]
    write_consent: true
"""


def extend_shop(shop: Path) -> None:
    """Policies for the privacy tests; marketing.email rests on TCF purposes 1 and 3."""
    (shop / "policies" / "privacy_tests.yml").write_text(EXTRA_POLICY)
    purposes = shop / "policies" / "purposes.yml"
    text = purposes.read_text()
    old = "    data_uses: [marketing.communications.email]\n"
    assert text.count(old) == 1
    purposes.write_text(text.replace(old, old + "    tcf_purposes: [1, 3]\n"))


def add_sync(shop: Path, name: str, destination: str, product: str = "marketing_audience") -> None:
    (shop / "syncs" / f"{name}.yml").write_text(
        f"name: {name}\nproduct: {product}\npurpose: marketing.email\n"
        f"destination: {destination}\nmode: upsert\ntrigger: manual\n"
    )


@pytest.fixture
def shop(demo_copy: Path) -> Path:
    extend_shop(demo_copy)
    return demo_copy


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"tgtest:{uuid.uuid4().hex[:8]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.fixture
def mysql_table(mysql_dsn: str) -> Iterator[str]:
    import pymysql

    from tidegate.egress.destinations.mysql.client import connect_args

    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    with pymysql.connect(**connect_args(mysql_dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS `{name}`")
