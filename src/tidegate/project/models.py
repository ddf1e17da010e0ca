"""The typed shape of a project folder.

Every model forbids unknown keys, so a typo in YAML is an error that names the file,
line and field instead of a setting that silently does nothing.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
PURPOSE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
CLASSIFICATION_PATTERN = PURPOSE_PATTERN

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
PurposeName = Annotated[str, Field(pattern=PURPOSE_PATTERN, max_length=100)]
Classification = Annotated[str, Field(pattern=CLASSIFICATION_PATTERN, max_length=100)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`500ms`, `1s`, `15m`, `2h`, `1d`, `1w` → timedelta."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration like 500ms, 1s, 15m, 2h or 1d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


class FieldError(ValueError):
    """A model-level check about one field; the loader reports it at that field's line."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------- columns


class ColumnSpec(Strict):
    """One column of a source schema or a product contract."""

    type: str = "VARCHAR"
    description: str = ""
    classification: Classification | None = None
    nullable: bool = True

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        from sqlglot import exp
        from sqlglot.errors import ParseError

        try:
            exp.DataType.build(value, dialect="duckdb")
        except (ParseError, ValueError):
            raise ValueError(f"{value!r} is not a SQL type DuckDB knows") from None
        return value.upper()


# ---------------------------------------------------------------- tidegate.yml


class DuckDBStoreConfig(Strict):
    type: Literal["duckdb"] = "duckdb"
    path: str = ".tidegate/warehouse.duckdb"
    threads: int | None = None
    memory_limit: str | None = None


class SqliteMetadataConfig(Strict):
    type: Literal["sqlite"] = "sqlite"
    path: str = ".tidegate/metadata.db"


class SqliteOnlineConfig(Strict):
    type: Literal["sqlite"] = "sqlite"
    path: str = ".tidegate/online.db"


class RedisOnlineConfig(Strict):
    type: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "tidegate"


OnlineConfig = Annotated[SqliteOnlineConfig | RedisOnlineConfig, Field(discriminator="type")]


class BackendsConfig(Strict):
    store: DuckDBStoreConfig = DuckDBStoreConfig()
    metadata: SqliteMetadataConfig = SqliteMetadataConfig()
    online: OnlineConfig = SqliteOnlineConfig()


class DefaultsConfig(Strict):
    freshness: str = "1d"
    sync_batch_rows: int = Field(default=10_000, gt=0)

    @field_validator("freshness")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class ServeConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, gt=0, lt=65536)


class ProjectConfig(Strict):
    """`tidegate.yml`."""

    name: Name
    description: str = ""
    version: str = "1"
    backends: BackendsConfig = BackendsConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    serve: ServeConfig = ServeConfig()


# ---------------------------------------------------------------- sources


class _SourceBase(Strict):
    name: Name
    description: str = ""
    owner: str = ""
    key: str | None = None
    subject: str | None = Field(
        default=None, description="column naming the data subject (person) a row is about"
    )
    columns: dict[str, ColumnSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _key_and_subject_are_columns(self) -> _SourceBase:
        for role in ("key", "subject"):
            column = getattr(self, role)
            if column is not None and column not in self.columns:
                raise FieldError(
                    role, f"{role} column {column!r} is not among the declared columns"
                )
        return self


class FileSource(_SourceBase):
    type: Literal["file"]
    path: str
    format: Literal["parquet", "csv", "json"] | None = None

    def resolved_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(self.path).suffix.lower().lstrip(".")
        return {"jsonl": "json", "ndjson": "json"}.get(suffix, suffix)

    @field_validator("format")
    @classmethod
    def _format(cls, value: str | None) -> str | None:
        return value


class SqliteTableSource(_SourceBase):
    type: Literal["sqlite"]
    path: str
    table: str


class PostgresTableSource(_SourceBase):
    type: Literal["postgres"]
    dsn: str | None = None
    dsn_env: str | None = Field(default=None, description="environment variable holding the DSN")
    table: str
    schema_name: str = Field(default="public", alias="schema")

    @model_validator(mode="after")
    def _one_dsn(self) -> PostgresTableSource:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("give exactly one of dsn or dsn_env")
        return self


SourceConfig = Annotated[
    FileSource | SqliteTableSource | PostgresTableSource, Field(discriminator="type")
]


# ---------------------------------------------------------------- products


class ProductConfig(Strict):
    """A data product: SQL plus the contract it promises to its consumers."""

    name: Name
    description: str = ""
    owner: str
    sql: str | None = Field(default=None, description="inline SQL")
    sql_file: str | None = Field(default=None, description="SQL file beside the YAML")
    key: str
    subject: str | None = None
    freshness: str | None = None
    purposes: list[PurposeName] = Field(min_length=1)
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    tags: list[str] = []

    @field_validator("freshness")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> ProductConfig:
        if bool(self.sql) == bool(self.sql_file):
            raise ValueError("give exactly one of sql (inline) or sql_file")
        for role in ("key", "subject"):
            column = getattr(self, role)
            if column is not None and column not in self.columns:
                raise FieldError(
                    role, f"{role} column {column!r} is not among the declared columns"
                )
        return self


# ---------------------------------------------------------------- policies

LegalBasis = Literal["consent", "contract", "legitimate_interest", "legal_obligation"]
TreatmentKind = Literal["clear", "mask", "hash", "generalize", "drop"]


class PurposeConfig(Strict):
    description: str = ""
    legal_basis: LegalBasis
    data_uses: list[str] = []


class RoleConfig(Strict):
    description: str = ""
    purposes: list[PurposeName] = Field(min_length=1)
    products: list[str] = ["*"]


class TreatmentSpec(Strict):
    """How one classification is shown under one purpose; `step`/`granularity`/`keep` tune
    `generalize` and `mask`."""

    treatment: TreatmentKind
    step: float | None = Field(default=None, gt=0)
    granularity: Literal["month", "year"] | None = None
    keep: int | None = Field(default=None, ge=0)


def _treatment_shorthand(value: Any) -> Any:
    return {"treatment": value} if isinstance(value, str) else value


class PolicyFile(Strict):
    """A `policies/*.yml` file. Several files merge; a name defined twice is an error."""

    purposes: dict[PurposeName, PurposeConfig] = {}
    roles: dict[Name, RoleConfig] = {}
    treatments: dict[str, dict[Classification, TreatmentSpec]] = Field(
        default={},
        description="purpose (or '*') -> classification prefix -> treatment",
    )
    default_treatment: TreatmentKind | None = None

    @field_validator("treatments", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            purpose: (
                {cls_: _treatment_shorthand(t) for cls_, t in rules.items()}
                if isinstance(rules, dict)
                else rules
            )
            for purpose, rules in value.items()
        }


# ---------------------------------------------------------------- syncs

SyncMode = Literal["insert", "update", "upsert", "mirror"]


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


DestinationConfig = Annotated[SqliteDestination | PostgresDestination, Field(discriminator="type")]


class SyncConfig(Strict):
    """Product → destination, seen through one purpose."""

    name: Name
    product: Name
    purpose: PurposeName
    destination: DestinationConfig
    mode: SyncMode = "upsert"
    key: str | None = Field(
        default=None, description="destination key column (default: product key)"
    )
    fields: dict[str, str] = Field(
        default={}, description="destination column -> product column (default: all columns)"
    )
    trigger: Literal["manual", "on_build"] = "on_build"
    batch_rows: int | None = Field(default=None, gt=0)
    principal: str = "sync"
