"""The serving path's read on the event loop: `aread_entries` answers what `read_entries`
answers on every backend, and on Redis (redis_async.py) it is pipelined, never blocks the
loop, and fails fast and clearly instead of hanging."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tidegate.errors import ServiceUnavailableError
from tidegate.store.online.base import Entry, OnlineStore
from tidegate.store.online.codec import encode_row
from tidegate.store.online.redis_async import AsyncRedis, encode
from tidegate.store.online.redis_store import RedisOnlineStore
from tidegate.store.online.sqlite_store import SqliteOnlineStore


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        backend: OnlineStore = SqliteOnlineStore(tmp_path / "online.db")
    else:
        url = request.getfixturevalue("redis_url")
        backend = RedisOnlineStore(url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    yield backend
    if isinstance(backend, RedisOnlineStore):
        for version in (1, 2):
            backend._drop_version("p", version)
        backend._redis.delete(backend._pointer("p"))
    backend.close()


def _fill(store: OnlineStore, version: int, n: int, tag: str) -> None:
    store.write_batch("p", version, [(str(i), encode_row({"id": i, "tag": tag})) for i in range(n)])
    store.activate("p", version)


def test_async_read_answers_like_the_blocking_read(store: OnlineStore) -> None:
    _fill(store, 1, 50, "a")
    keys = ["0", "7", "49", "50", "nope", "7"]
    expected = store.read_entries("p", keys)
    assert set(expected) == {"0", "7", "49"}

    async def reads() -> list[dict[str, Entry]]:
        try:
            return [
                await store.aread_entries("p", keys),
                await store.aread_entries("p", []),
                await store.aread_entries("absent_product", ["1"]),
            ]
        finally:
            await store.aclose()

    assert asyncio.run(reads()) == [expected, {}, {}]


def test_async_read_sees_a_new_version_after_activation(store: OnlineStore) -> None:
    _fill(store, 1, 5, "old")

    async def reads() -> tuple[str, str]:
        before = (await store.aread_entries("p", ["1"]))["1"].value
        _fill(store, 2, 5, "new")
        after = (await store.aread_entries("p", ["1"]))["1"].value
        await store.aclose()
        return before, after

    before, after = asyncio.run(reads())
    assert '"old"' in before
    assert '"new"' in after


@pytest.mark.services
def test_concurrent_reads_share_one_pipelined_connection(redis_url: str) -> None:
    backend = RedisOnlineStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        _fill(backend, 1, 100, "a")

        async def many() -> list[dict[str, Entry]]:
            reads = [backend.aread_entries("p", [str(i), str(99 - i)]) for i in range(100)]
            answers = list(await asyncio.gather(*reads))
            client = backend._async
            assert client is not None  # every reply arrived: nothing left pending
            assert client._connection is not None
            assert not client._connection._pending
            await backend.aclose()
            return answers

        answers = asyncio.run(many())
        for i, found in enumerate(answers):  # each request got its own reply, in order
            assert set(found) == {str(i), str(99 - i)}
            assert f'"id":{i},' in found[str(i)].value
    finally:
        backend._drop_version("p", 1)
        backend._redis.delete(backend._pointer("p"))
        backend.close()


@pytest.mark.services
def test_a_flushed_script_cache_is_refilled(redis_url: str) -> None:
    """After Redis forgets the script (restart, SCRIPT FLUSH) the read sends it again."""
    backend = RedisOnlineStore(redis_url, prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        _fill(backend, 1, 3, "a")

        async def read_twice() -> tuple[set[str], set[str]]:
            first = set(await backend.aread_entries("p", ["1", "2"]))
            redis.Redis.from_url(redis_url).script_flush()
            second = set(await backend.aread_entries("p", ["1", "2"]))
            await backend.aclose()
            return first, second

        assert asyncio.run(read_twice()) == ({"1", "2"}, {"1", "2"})
    finally:
        backend._drop_version("p", 1)
        backend._redis.delete(backend._pointer("p"))
        backend.close()


def test_unreachable_redis_is_a_clear_503() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    client = AsyncRedis(f"redis://127.0.0.1:{port}/0", timeout=2)
    with pytest.raises(ServiceUnavailableError, match="cannot reach Redis"):
        asyncio.run(client.evalsha("return 1", [], []))


def test_a_silent_redis_times_out_without_blocking_the_loop() -> None:
    """A server that accepts and never answers: the read fails after `timeout`, and the
    loop keeps running other tasks the whole time."""

    async def scenario() -> tuple[float, int]:
        accepted: list[asyncio.StreamWriter] = []
        server = await asyncio.start_server(lambda r, w: accepted.append(w), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = AsyncRedis(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        running = asyncio.create_task(ticker())
        started = time.monotonic()
        with pytest.raises(ServiceUnavailableError, match="did not answer"):
            await client.evalsha("return 1", [], [])
        waited = time.monotonic() - started
        running.cancel()
        await client.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
        return waited, ticks

    waited, ticks = asyncio.run(scenario())
    assert 0.4 < waited < 5
    assert ticks >= 10  # the loop ran other work while the read waited


def test_commands_are_encoded_as_resp() -> None:
    assert encode(["GET", "k"]) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert encode(["EVALSHA", "ab", 1, b"\xff"]) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$1\r\n\xff\r\n"
    )
    assert encode(["SET", "k", "é"]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"
