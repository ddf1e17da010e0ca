"""Redis destination: one hash per entity at `key_template`, with an optional TTL.

An upsert replaces the whole hash in one MULTI/EXEC (`DEL` + `HSET` + `EXPIRE`), so a
field that became null disappears and a retried batch changes nothing twice. Null
fields are not stored. Inserts and updates check which keys exist first: an insert of
an existing entity is a row error, an update of a missing one writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    RowErrors,
    Written,
    register,
    setting,
)
from tidegate.egress.destinations.redis.codec import decode, encode
from tidegate.errors import (
    ServiceUnavailableError,
    TerminalDestinationError,
    TransientDestinationError,
)
from tidegate.extras import require
from tidegate.project.models import parse_duration


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@register
class RedisDestination(Destination):
    kind: ClassVar[str] = "redis"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True, supports_delete=True, max_batch_rows=5_000, supports_lookup=True
    )

    def __init__(
        self, url: str, key_template: str = "{sync}:{key}", ttl_seconds: int | None = None
    ) -> None:
        require("redis", "redis")  # names the extra when it is missing
        import redis

        self.url = url
        self.key_template = key_template
        self.ttl = ttl_seconds
        self.key = ""
        self.columns: dict[str, str] = {}
        self._client = redis.Redis.from_url(
            url, socket_timeout=30, socket_connect_timeout=10, decode_responses=True
        )
        try:
            self._client.ping()
        except redis.exceptions.RedisError as err:
            raise ServiceUnavailableError(
                f"cannot reach Redis at {self._safe_url()}: {err}"
            ) from None

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> RedisDestination:
        ttl = (
            None if config.ttl is None else max(1, int(parse_duration(config.ttl).total_seconds()))
        )
        return cls(
            setting(config.url, config.url_env, "Redis destination"), config.key_template, ttl
        )

    def _safe_url(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"

    def _name(self, key: Any) -> str:
        return self.key_template.replace("{sync}", self.sync_name or "tidegate").replace(
            "{key}", encode(key)
        )

    def _call(self, action: Any) -> Any:
        import redis

        try:
            return action()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
            raise TransientDestinationError(f"Redis: {err}") from None
        except redis.exceptions.RedisError as err:
            raise TerminalDestinationError(f"Redis: {err}") from None

    def open(self, columns: dict[str, str], key: str) -> None:
        self.key = key
        self.columns = dict(columns)

    def _exists(self, names: list[str]) -> list[bool]:
        def run() -> list[bool]:
            pipe = self._client.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
            return [bool(n) for n in pipe.execute()]

        result: list[bool] = self._call(run)
        return result

    def attach(self, columns: dict[str, str], key: str) -> None:
        self.open(columns, key)  # nothing to create: open only remembers the fields

    def write(self, batch: Any, mode: str) -> Written:
        rows = batch.to_pylist()
        names = [self._name(row[self.key]) for row in rows]
        rejected: dict[int, str] = {}
        chosen = list(range(len(rows)))
        exists = self._exists(names)
        if mode == "insert":
            rejected = {i: f"Redis: key {names[i]} already exists" for i in chosen if exists[i]}
            chosen = [i for i in chosen if not exists[i]]
        elif mode == "update":
            chosen = [i for i in chosen if exists[i]]

        def run() -> None:
            pipe = self._client.pipeline(transaction=True)
            for i in chosen:
                mapping = {k: encode(v) for k, v in rows[i].items() if v is not None}
                pipe.delete(names[i])
                pipe.hset(names[i], mapping=mapping)
                if self.ttl:
                    pipe.expire(names[i], self.ttl)
            pipe.execute()

        if chosen:
            self._call(run)
        if rejected:
            raise RowErrors(rejected)
        existed = frozenset(i for i in chosen if exists[i])
        missing = frozenset(range(len(rows))) - existed if mode == "update" else frozenset()
        return Written(existed, missing)

    def delete(self, keys: list[Any]) -> int:
        total = 0
        for start in range(0, len(keys), 1000):
            chunk = [self._name(k) for k in keys[start : start + 1000]]
            total += int(self._call(lambda chunk=chunk: self._client.delete(*chunk)))
        return total

    def existing_keys(self, keys: list[Any]) -> set[str]:
        exists = self._exists([self._name(k) for k in keys])
        return {str(k) for k, hit in zip(keys, exists, strict=True) if hit}

    def read_all(self) -> list[dict[str, Any]]:
        prefix, _, suffix = self.key_template.replace(
            "{sync}", self.sync_name or "tidegate"
        ).partition("{key}")
        pattern = f"{_glob_escape(prefix)}*{_glob_escape(suffix)}"
        rows = []
        for name in self._call(lambda: list(self._client.scan_iter(match=pattern, count=1000))):
            fields = self._call(lambda name=name: self._client.hgetall(name))
            if fields:
                rows.append(
                    {k: decode(v, self.columns.get(k, "VARCHAR")) for k, v in fields.items()}
                )
        return rows

    def close(self) -> None:
        self._client.close()

    def describe(self) -> str:
        return f"redis:{self._safe_url()}#{self.key_template}"
