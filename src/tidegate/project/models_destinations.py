"""Sync destinations as YAML sees them: one model per `type`, one discriminated union.

Each destination's runtime half lives in `egress/destinations/<type>/`; this is only
what a `destination:` block of a sync file may hold. Re-exported by `models.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tidegate.project.model_base import FieldError, Strict, parse_duration, template_columns


class SqliteDestination(Strict):
    type: Literal["sqlite"]
    path: str
    table: str


class PostgresDestination(Strict):
    type: Literal["postgres"]
    dsn: str | None = None
    dsn_env: str | None = None
    table: str
    schema_name: str = Field(default="public", alias="schema")

    @model_validator(mode="after")
    def _one_dsn(self) -> PostgresDestination:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("give exactly one of dsn or dsn_env")
        return self


class _DsnFromConfigOrEnv(Strict):
    dsn: str | None = None
    dsn_env: str | None = Field(default=None, description="environment variable holding the DSN")

    @model_validator(mode="after")
    def _one_dsn(self) -> _DsnFromConfigOrEnv:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("give exactly one of dsn or dsn_env")
        return self


class MysqlDestination(_DsnFromConfigOrEnv):
    """A MariaDB/MySQL table (`mysql://user:password@host:3306/database`)."""

    type: Literal["mysql"]
    table: str


class RedisDestination(Strict):
    """One Redis hash per entity, at `key_template` (placeholders `{sync}` and `{key}`)."""

    type: Literal["redis"]
    url: str | None = None
    url_env: str | None = Field(default=None, description="environment variable holding the URL")
    key_template: str = "{sync}:{key}"
    ttl: str | None = Field(default=None, description="expire each hash this long after a write")

    @model_validator(mode="after")
    def _check(self) -> RedisDestination:
        if bool(self.url) == bool(self.url_env):
            raise ValueError("give exactly one of url or url_env")
        if "{key}" not in self.key_template:
            raise FieldError("key_template", "key_template must contain {key}")
        unknown = set(template_columns(self.key_template)) - {"sync", "key"}
        if unknown:
            raise FieldError(
                "key_template", f"key_template may use only {{sync}} and {{key}}, not {unknown}"
            )
        if self.ttl is not None:
            try:
                parse_duration(self.ttl)
            except ValueError as err:
                raise FieldError("ttl", str(err)) from None
        return self


class KafkaDestination(Strict):
    """Keyed change events (CloudEvents JSON) on a topic; deletes are tombstones."""

    type: Literal["kafka"]
    bootstrap: str | None = None
    bootstrap_env: str | None = None
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(default=3, gt=0, description="when tidegate creates the topic")
    source: str | None = Field(default=None, description="CloudEvents `source` attribute")

    @model_validator(mode="after")
    def _one_bootstrap(self) -> KafkaDestination:
        if bool(self.bootstrap) == bool(self.bootstrap_env):
            raise ValueError("give exactly one of bootstrap or bootstrap_env")
        return self


class HttpDestination(Strict):
    """Batched JSON POSTs to an API or webhook; the auth secret comes from the environment."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    delete_url: str | None = Field(default=None, pattern=r"^https?://")
    auth_env: str | None = Field(
        default=None, description="environment variable holding the credential"
    )
    auth_header: str = "Authorization"
    auth_scheme: str = Field(default="Bearer", description="prefix of the credential, or ''")
    headers: dict[str, str] = {}
    timeout: str = "30s"

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class FileDestination(Strict):
    """A file holding the synced rows (Parquet, CSV or JSON lines), replaced atomically."""

    type: Literal["file"]
    path: str
    format: Literal["parquet", "csv", "jsonl"] | None = None

    def resolved_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(self.path).suffix.lower().lstrip(".")
        return {"json": "jsonl", "ndjson": "jsonl"}.get(suffix, suffix)

    @model_validator(mode="after")
    def _known_format(self) -> FileDestination:
        if self.resolved_format() not in {"parquet", "csv", "jsonl"}:
            raise FieldError(
                "path", "cannot tell the format from the suffix; set format: parquet, csv or jsonl"
            )
        return self


DestinationConfig = Annotated[
    SqliteDestination
    | PostgresDestination
    | MysqlDestination
    | RedisDestination
    | KafkaDestination
    | HttpDestination
    | FileDestination,
    Field(discriminator="type"),
]
