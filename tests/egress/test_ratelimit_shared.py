"""Rate limits shared through Redis: two limiters (two replicas) on one Redis hold a
role's limit in total; the same semantics as the in-memory limiter (a full bucket to
start, refilled at the rate, a role without a limit unlimited), on the event loop too."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tidegate.egress.serve.ratelimit import RateLimitedError, RateLimiter, RedisRateLimiter
from tidegate.project.models import RateLimitConfig, RoleConfig
from tidegate.project.project import Policy

pytestmark = pytest.mark.services

POLICY = Policy(
    roles={
        "slow": RoleConfig(
            purposes=["support"], rate_limit=RateLimitConfig(requests_per_second=5, burst=5)
        ),
        "free": RoleConfig(purposes=["support"]),
    }
)


def _taken(limiters: list[RateLimiter], principal: str, tries: int) -> int:
    ok = 0
    waits = []
    for index in range(tries):
        try:
            limiters[index % len(limiters)].check(principal, ("slow",))
            ok += 1
        except RateLimitedError as err:
            waits.append(err.retry_after)
    assert all(0 < wait <= 0.2 + 1e-6 for wait in waits)  # at most one token at 5/s
    return ok


def test_two_replicas_share_one_bucket(redis_url: str) -> None:
    prefix = f"tgtest{uuid.uuid4().hex[:8]}"
    replicas: list[RateLimiter] = [
        RedisRateLimiter(POLICY, redis_url, prefix),
        RedisRateLimiter(POLICY, redis_url, prefix),
    ]
    try:
        assert _taken(replicas, "desk", 40) == 5  # one burst in total, not one each
        time.sleep(1.0)
        assert 4 <= _taken(replicas, "desk", 40) <= 6  # refilled at 5/s, shared
        assert _taken(replicas, "other-desk", 40) == 5  # buckets are per principal
        for _ in range(50):
            replicas[0].check("desk", ("slow", "free"))  # a role without a limit: none
    finally:
        for replica in replicas:
            replica.close()


def test_in_memory_limiters_do_not_share(redis_url: str) -> None:
    """Why Redis: two in-memory replicas allow the burst twice."""
    assert _taken([RateLimiter(POLICY), RateLimiter(POLICY)], "desk", 40) == 10


def test_the_event_loop_path_takes_from_the_same_bucket(redis_url: str) -> None:
    prefix = f"tgtest{uuid.uuid4().hex[:8]}"
    shared = RedisRateLimiter(POLICY, redis_url, prefix)
    other = RedisRateLimiter(POLICY, redis_url, prefix)

    async def take(tries: int) -> int:
        async def one() -> bool:
            try:
                await shared.acheck("desk", ("slow",))
                return True
            except RateLimitedError:
                return False

        try:
            return sum(await asyncio.gather(*(one() for _ in range(tries))))
        finally:
            await shared.aclose()

    try:
        assert asyncio.run(take(20)) == 5
        with pytest.raises(RateLimitedError):
            other.check("desk", ("slow",))  # the synchronous path sees it empty too
    finally:
        shared.close()
        other.close()


def test_an_unreachable_redis_is_a_clear_503() -> None:
    from tidegate.errors import ServiceUnavailableError

    limiter = RedisRateLimiter(POLICY, "redis://127.0.0.1:1/0", "tg")
    try:
        with pytest.raises(ServiceUnavailableError, match="rate limits: Redis"):
            limiter.check("desk", ("slow",))
        limiter.check("desk", ("free",))  # no limit: Redis is not asked
    finally:
        limiter.close()
