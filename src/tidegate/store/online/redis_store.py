"""Online store on Redis: one string per entity, `{prefix}:{product}:v{N}:{key}`.

A plain GET of a JSON string is the cheapest read Redis offers; the current version
number lives at `{prefix}:{product}:current` and is flipped with one SET.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tidegate.errors import ServiceUnavailableError
from tidegate.store.online.base import OnlineStore

PIPELINE_ROWS = 1_000


class RedisOnlineStore(OnlineStore):
    kind = "redis"

    def __init__(self, url: str, prefix: str = "tidegate") -> None:
        import redis

        self.prefix = prefix
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        try:
            self._redis.ping()
        except redis.exceptions.ConnectionError as err:
            raise ServiceUnavailableError(f"cannot reach Redis at {url}: {err}") from None

    @classmethod
    def from_config(cls, config: Any, root: Path) -> RedisOnlineStore:
        return cls(config.url, config.prefix)

    def _entity(self, product: str, version: int, key: str) -> str:
        return f"{self.prefix}:{product}:v{version}:{key}"

    def _pointer(self, product: str) -> str:
        return f"{self.prefix}:{product}:current"

    def write_batch(self, product: str, version: int, rows: Iterable[tuple[str, str]]) -> int:
        count = 0
        pipe = self._redis.pipeline(transaction=False)
        for key, value in rows:
            pipe.set(self._entity(product, version, key), value)
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

    def read(self, product: str, key: str) -> str | None:
        version = self.current_version(product)
        if version is None:
            return None
        value = self._redis.get(self._entity(product, version, key))
        return value.decode() if isinstance(value, bytes) else None

    def read_many(self, product: str, keys: Sequence[str]) -> dict[str, str]:
        version = self.current_version(product)
        if version is None or not keys:
            return {}
        values = self._redis.mget([self._entity(product, version, k) for k in keys])
        return {k: v.decode() for k, v in zip(keys, values, strict=True) if isinstance(v, bytes)}

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

    def close(self) -> None:
        self._redis.close()
