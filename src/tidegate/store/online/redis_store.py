"""Online store on Redis: one string per entity, `{prefix}:{product}:v{N}:{key}`.

A plain string is the cheapest value Redis serves. It holds `{written_at}|{json row}`,
so every read knows how old the value is. The current version number lives at
`{prefix}:{product}:current` and is flipped with one SET.

Reads are one round trip: a small Lua script resolves the current version and MGETs
the keys in it atomically, so a reader never mixes versions while a build activates
(and never chases a pointer to a version that was just dropped). With a product TTL
values are written with `PX` (Redis forgets them) and checked on read as well.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tidegate.errors import ServiceUnavailableError
from tidegate.extras import require
from tidegate.store.online.base import Entry, OnlineStore
from tidegate.store.online.redis_async import AsyncRedis

PIPELINE_ROWS = 1_000

_READ_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
local base = ARGV[1] .. v .. ':'
local names = {}
for i = 2, #ARGV do names[#names + 1] = base .. ARGV[i] end
local values = redis.call('MGET', unpack(names))
table.insert(values, 1, v)
return values
"""


def _envelope(written_at: float, value: str) -> str:
    return f"{written_at:.6f}|{value}"


class RedisOnlineStore(OnlineStore):
    kind = "redis"
    #: a server: any number of processes, on any host that reaches it, write at once
    shared = True
    same_host = False

    def __init__(
        self, url: str, prefix: str = "tidegate", ttls: Mapping[str, float] | None = None
    ) -> None:
        require("redis", "redis")  # names the extra when it is missing
        import redis

        super().__init__(ttls)
        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            self._redis.ping()
        except redis.exceptions.ConnectionError as err:
            raise ServiceUnavailableError(f"cannot reach Redis at {url}: {err}") from None
        self._read = self._redis.register_script(_READ_SCRIPT)
        self._async: AsyncRedis | None = None
        self._url = url

    @classmethod
    def from_config(cls, config: Any, root: Path) -> RedisOnlineStore:
        return cls(config.url, config.prefix)

    def writer_config(self) -> dict[str, Any]:
        return {"url": self._url, "prefix": self.prefix}

    @classmethod
    def from_writer_config(cls, config: Mapping[str, Any]) -> RedisOnlineStore:
        return cls(str(config["url"]), str(config["prefix"]))

    def _entity(self, product: str, version: int, key: str) -> str:
        return f"{self.prefix}:{product}:v{version}:{key}"

    def _pointer(self, product: str) -> str:
        return f"{self.prefix}:{product}:current"

    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        now = time.time()
        ttl = self.ttl(product)
        px = max(1, int(ttl * 1000)) if ttl is not None else None
        count = 0
        pipe = self._redis.pipeline(transaction=False)
        for key, value in rows:
            pipe.set(self._entity(product, version, key), _envelope(now, value), px=px)
            count += 1
            if count % PIPELINE_ROWS == 0:
                pipe.execute()
        pipe.execute()
        return count

    def activate(self, product: str, version: int) -> None:
        self._redis.set(self._pointer(product), version)
        for old in self._versions(product):
            if old != version:
                self._drop_version(product, old)

    def discard(self, product: str, version: int) -> None:
        if self.current_version(product) != version:
            self._drop_version(product, version)

    def _versions(self, product: str) -> set[int]:
        found: set[int] = set()
        pattern = f"{self.prefix}:{product}:v*"
        for raw in self._redis.scan_iter(match=pattern, count=1000):
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            part = name[len(f"{self.prefix}:{product}:v") :].split(":", 1)[0]
            if part.isdigit():
                found.add(int(part))
        return found

    def _drop_version(self, product: str, version: int) -> None:
        batch: list[Any] = []
        for raw in self._redis.scan_iter(match=f"{self.prefix}:{product}:v{version}:*", count=1000):
            batch.append(raw)
            if len(batch) >= PIPELINE_ROWS:
                self._redis.unlink(*batch)
                batch = []
        if batch:
            self._redis.unlink(*batch)

    def current_version(self, product: str) -> int | None:
        value = self._redis.get(self._pointer(product))
        return int(value) if value is not None else None

    def keys(self, product: str) -> list[str]:
        version = self.current_version(product)
        if version is None:
            return []
        base = self._entity(product, version, "")
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in base) + "*"
        return [
            (name.decode() if isinstance(name, bytes) else str(name))[len(base) :]
            for name in self._redis.scan_iter(match=pattern, count=1_000)
        ]

    def read_entries(self, product: str, keys: Sequence[str]) -> dict[str, Entry]:
        if not keys:
            return {}
        reply = self._read(
            keys=[self._pointer(product)], args=[f"{self.prefix}:{product}:v", *keys]
        )
        return self._entries(product, keys, reply)

    async def aread_entries(self, product: str, keys: Sequence[str]) -> dict[str, Entry]:
        """The same read on the event loop, over a pipelined connection (redis_async.py)."""
        if not keys:
            return {}
        if self._async is None:
            self._async = AsyncRedis(self._url, timeout=5.0)
        reply = await self._async.evalsha(
            _READ_SCRIPT, [self._pointer(product)], [f"{self.prefix}:{product}:v", *keys]
        )
        return self._entries(product, keys, reply)

    def _entries(self, product: str, keys: Sequence[str], reply: Any) -> dict[str, Entry]:
        if not reply:
            return {}
        version = int(reply[0])
        fresh_after = self._fresh_after(product)
        found: dict[str, Entry] = {}
        for key, raw in zip(keys, reply[1:], strict=True):
            if raw is None:
                continue
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            stamp, _, value = text.partition("|")
            written_at = float(stamp)
            if fresh_after is not None and written_at <= fresh_after:
                continue
            found[key] = Entry(value, version, written_at)
        return found

    def upsert(self, product: str, rows: Iterable[tuple[str, str]]) -> int:
        version = self.current_version(product)
        if version is None:
            raise LookupError(f"product {product!r} has no current version to update")
        return self.write_batch(product, version, rows)

    def delete(self, product: str, keys: Sequence[str]) -> int:
        removed = 0
        for version in self._versions(product):
            names = [self._entity(product, version, k) for k in keys]
            if names:
                removed += int(self._redis.delete(*names))
        return removed

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.aclose()

    def close(self) -> None:
        if self._async is not None:
            self._async.close()
        self._redis.close()
