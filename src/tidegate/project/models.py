"""The typed shape of a project folder.

Every model forbids unknown keys, so a typo in YAML is an error that names the file,
line and field instead of a setting that silently does nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from tidegate.project.breakers import BreakerPolicy
from tidegate.project.model_base import (
    FieldError as FieldError,
)
from tidegate.project.model_base import (
    Strict as Strict,
)
from tidegate.project.model_base import (
    parse_duration as parse_duration,
)
from tidegate.project.model_base import (
    template_columns as template_columns,
)
from tidegate.project.model_base import (
    template_parts as template_parts,
)
from tidegate.project.models_backends import BackendsConfig as BackendsConfig
from tidegate.project.models_backends import DuckDBStoreConfig as DuckDBStoreConfig
from tidegate.project.models_backends import KafkaLogConfig as KafkaLogConfig
from tidegate.project.models_backends import LogConfig as LogConfig
from tidegate.project.models_backends import MetadataConfig as MetadataConfig
from tidegate.project.models_backends import OnlineConfig as OnlineConfig
from tidegate.project.models_backends import PostgresMetadataConfig as PostgresMetadataConfig
from tidegate.project.models_backends import RedisOnlineConfig as RedisOnlineConfig
from tidegate.project.models_backends import SparkStoreConfig as SparkStoreConfig
from tidegate.project.models_backends import SqliteLogConfig as SqliteLogConfig
from tidegate.project.models_backends import SqliteMetadataConfig as SqliteMetadataConfig
from tidegate.project.models_backends import SqliteOnlineConfig as SqliteOnlineConfig
from tidegate.project.models_backends import StoreConfig as StoreConfig
from tidegate.project.models_destinations import (
    DestinationConfig as DestinationConfig,
)
from tidegate.project.models_destinations import (
    FileDestination as FileDestination,
)
from tidegate.project.models_destinations import (
    HttpDestination as HttpDestination,
)
from tidegate.project.models_destinations import (
    KafkaDestination as KafkaDestination,
)
from tidegate.project.models_destinations import (
    MysqlDestination as MysqlDestination,
)
from tidegate.project.models_destinations import (
    PostgresDestination as PostgresDestination,
)
from tidegate.project.models_destinations import (
    RedisDestination as RedisDestination,
)
from tidegate.project.models_destinations import (
    SqliteDestination as SqliteDestination,
)
from tidegate.project.observe_config import CheckConfig, ObserveConfig
from tidegate.project.subjects import SUBJECT_SCHEMA, SubjectTypeConfig, unpack_subject

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
PURPOSE_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$"
CLASSIFICATION_PATTERN = PURPOSE_PATTERN

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
PurposeName = Annotated[str, Field(pattern=PURPOSE_PATTERN, max_length=100)]
Classification = Annotated[str, Field(pattern=CLASSIFICATION_PATTERN, max_length=100)]
#: `classification: none` declares a column non-personal, explicitly: product columns
#: must say either what personal data they hold or this (fail closed, issue 13).
NOT_PERSONAL = "none"

# ---------------------------------------------------------------- columns


class ColumnSpec(Strict):
    """One column of a source schema or a product contract."""

    type: str = "VARCHAR"
    description: str = ""
    classification: Classification | None = Field(
        default=None,
        description="data category from the taxonomy (`user.contact.email`), or `none` for a"
        " column that holds no personal data; required on product columns",
    )
    nullable: bool = True
    checks: list[Any] = Field(
        default=[],
        description="quality checks on this column, in shorthand (project/observe_config.py)",
    )

    @property
    def category(self) -> str | None:
        """The data category, or None for a column declared (or left) non-personal."""
        return None if self.classification == NOT_PERSONAL else self.classification

    @field_validator("checks")
    @classmethod
    def _column_checks(cls, value: list[Any]) -> list[Any]:
        from tidegate.project.observe_config import validate_column_checks

        return validate_column_checks(value)

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


class DefaultsConfig(Strict):
    freshness: str = "1d"
    sync_batch_rows: int = Field(default=10_000, gt=0)

    @field_validator("freshness")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class JwtConfig(Strict):
    """Bearer JWTs accepted beside API keys, checked against a JWKS file (egress/serve/auth.py)."""

    jwks_file: str = Field(description="JSON Web Key Set, relative to the project root")
    issuer: str
    audience: str
    algorithms: list[Literal["RS256", "ES256"]] = Field(default=["RS256", "ES256"], min_length=1)
    roles_claim: str = Field(default="roles", description="claim holding the list of roles")
    principal_claim: str = "sub"
    leeway_seconds: float = Field(default=30, ge=0, le=300)


class RateLimitConfig(Strict):
    """A token bucket per principal: `requests_per_second` on average, bursts up to `burst`."""

    requests_per_second: float = Field(gt=0)
    burst: int = Field(default=0, ge=0, description="bucket size; 0: one second's worth")


class ServeConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, gt=0, lt=65536)
    server: Literal["uvicorn", "granian"] = Field(
        default="uvicorn",
        description="HTTP server of `tidegate serve`: uvicorn, or granian (Rust HTTP; "
        "more requests/s under concurrency, needs the `granian` extra)",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="worker processes of `tidegate serve`, each opening the project; "
        "one per core for throughput",
    )
    max_body_bytes: int = Field(default=256 * 1024, gt=0, description="larger bodies get 413")
    cors_origins: list[str] = Field(
        default=[], description="origins allowed by CORS; empty: CORS off (the default)"
    )
    jwt: JwtConfig | None = None
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="request line + headers; larger: 431"
    )
    unauthenticated_rate_limit: RateLimitConfig | None = Field(
        default_factory=lambda: RateLimitConfig(requests_per_second=5, burst=50),
        description="per client address, for requests that fail to authenticate (401); "
        "when spent, the address gets 429 until it refills; null: off",
    )
    metrics_roles: list[str] = Field(
        default=[],
        description="roles whose keys may read /metrics; empty: /metrics is open",
    )


class ConsentConfig(Strict):
    """Consent choices arriving on a topic of the event log (requests/consent_stream.py).

    Off unless `topic` is set: whoever may write the topic records consent for anyone,
    a right the API grants only to roles with `write_consent`, so it is opted into."""

    topic: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="topic the stream worker reads consent messages from; unset: none",
    )
    clock_skew: str = Field(
        default="5m",
        description="how far ahead of the server clock a choice may be dated; later: refused",
    )

    @field_validator("clock_skew")
    @classmethod
    def _skew(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def clock_skew_seconds(self) -> float:
        return parse_duration(self.clock_skew).total_seconds()

    @field_validator("topic")
    @classmethod
    def _not_internal(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("__changes."):
            raise ValueError("`__changes.*` topics are the products' change streams")
        return value


class ProjectConfig(Strict):
    """`tidegate.yml`."""

    name: Name
    description: str = ""
    version: str = "1"
    backends: BackendsConfig = BackendsConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    serve: ServeConfig = ServeConfig()
    observe: ObserveConfig = ObserveConfig()
    consent: ConsentConfig = ConsentConfig()


# ---------------------------------------------------------------- sources


class _SourceBase(Strict):
    name: Name
    description: str = ""
    owner: str = ""
    key: str | None = None
    subject: str | None = Field(default=None, json_schema_extra=SUBJECT_SCHEMA)
    subject_type: Name | None = Field(
        default=None, description="the subject's type; or write subject: {column, type}"
    )
    columns: dict[str, ColumnSpec] = Field(min_length=1)

    _subject_long_form = model_validator(mode="before")(unpack_subject)

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
    """A PostgreSQL table: read whole by `tidegate build`, or, with `cdc: logical`,
    captured by the runtime (a consistent snapshot, then every insert, update, delete and
    truncate through a logical replication slot) onto a topic of the event log, where it
    takes the same path as a Debezium topic."""

    type: Literal["postgres"]
    dsn: str | None = None
    dsn_env: str | None = Field(default=None, description="environment variable holding the DSN")
    table: str
    schema_name: str = Field(default="public", alias="schema")
    cdc: Literal["logical"] | None = Field(
        default=None,
        description="`logical`: change data capture by logical decoding (wal2json) under"
        " `tidegate run`; the source then needs `key`, the table's primary key",
    )
    slot: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,63}$",
        description="cdc: the replication slot (default: tidegate_<project>_<source>)",
    )
    topic: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="cdc: the event-log topic changes go to (default: the source name)",
    )
    plugin: Literal["pgoutput", "wal2json"] = Field(
        default="pgoutput",
        description="cdc: the logical decoding plugin (pgoutput is built into PostgreSQL)",
    )
    publication: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,63}$",
        description="cdc with pgoutput: the publication (created for the table unless it"
        " exists; default: the slot's name)",
    )

    @model_validator(mode="after")
    def _one_dsn(self) -> PostgresTableSource:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("give exactly one of dsn or dsn_env")
        if self.cdc is None:
            for option in ("slot", "topic", "publication"):
                if getattr(self, option) is not None:
                    raise FieldError(option, f"`{option}` needs `cdc: logical`")
        elif self.key is None:
            raise FieldError("key", "a cdc source needs `key`: the table's primary key")
        return self

    def resolved_dsn(self) -> str | None:
        """The DSN, from the config or its environment variable (None when unset)."""
        import os

        return self.dsn or os.environ.get(self.dsn_env or "") or None


class StreamSource(_SourceBase):
    """Events on a topic of the event log: posted over HTTP, produced to Kafka, dropped as
    files or captured from a database (CDC). Each event is checked against `columns`."""

    type: Literal["stream"]
    topic: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,249}$", description="default: the source name"
    )
    format: Literal["json", "debezium"] = "json"
    event_id: str | None = Field(default=None, description="column that deduplicates events")
    event_time: str | None = Field(default=None, description="column holding when it happened")
    table: str | None = Field(
        default=None, description="debezium: the table (`source.table`) this source takes"
    )
    max_event_bytes: int = Field(default=1 << 20, gt=0)
    drop_folder: str | None = Field(
        default=None, description="JSON lines / CSV files put here are ingested, then moved"
    )
    unknown_fields: Literal["reject", "keep", "drop"] = Field(
        default="drop",
        description=(
            "fields an event has beyond `columns`: reject the event (dead letter, with the "
            "fields named), keep them in the event log as sent, or drop them (a JSON event "
            "is logged without them); never stored in raw tables, counted either way "
            "(ingest answer, /metrics, status)"
        ),
    )

    @model_validator(mode="after")
    def _stream_columns(self) -> StreamSource:
        for role in ("event_id", "event_time"):
            column = getattr(self, role)
            if column is not None and column not in self.columns:
                raise FieldError(
                    role, f"{role} column {column!r} is not among the declared columns"
                )
        if self.format == "debezium" and self.key is None:
            raise FieldError("key", "a debezium source needs `key`: the table's primary key")
        return self

    @property
    def topic_name(self) -> str:
        return self.topic or self.name


SourceConfig = Annotated[
    FileSource | SqliteTableSource | PostgresTableSource | StreamSource,
    Field(discriminator="type"),
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
    subject: str | None = Field(default=None, json_schema_extra=SUBJECT_SCHEMA)
    subject_type: Name | None = Field(
        default=None, description="the subject's type; or write subject: {column, type}"
    )
    freshness: str | None = None
    ttl: str | None = Field(
        default=None, description="online values older than this are not served (e.g. 7d)"
    )
    purposes: list[PurposeName] = Field(min_length=1)
    columns: dict[str, ColumnSpec] = Field(min_length=1)
    tags: list[str] = []
    version: str | None = Field(
        default=None, description="contract version; bump it with a breaking change"
    )
    checks: list[CheckConfig] = Field(default=[], description="quality checks (observe/)")
    on_anomaly: Literal["block", "warn"] = Field(
        default="warn",
        description="an anomalous new version: block (the previous stays live) or warn",
    )
    sync_breakers: BreakerPolicy | None = Field(
        default=None, description="default circuit breakers of this product's syncs"
    )

    _subject_long_form = model_validator(mode="before")(unpack_subject)

    @model_validator(mode="after")
    def _checks_name_columns(self) -> ProductConfig:
        from tidegate.project.observe_config import check_columns

        problem = check_columns(self)
        if problem:
            raise FieldError("checks", problem)
        return self

    @field_validator("freshness", "ttl")
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
    tcf_purposes: list[Annotated[int, Field(ge=1, le=24)]] = Field(
        default=[],
        description="IAB TCF purposes whose consent (all of them) grants this purpose",
    )
    sale_or_sharing: bool | None = Field(
        default=None,
        description="a Global Privacy Control signal opts out of it (default: from data_uses)",
    )


class TcfPolicy(Strict):
    """How IAB TCF strings become ledger entries (`tcf:` in policies, once per project).

    With `vendor_id` set, the string must give that vendor consent (or, for a
    legitimate-interest purpose, legitimate interest) when `require_vendor_consent` is
    on, and the publisher's restrictions naming it are honoured (see privacy/tcf.py)."""

    vendor_id: int | None = Field(
        default=None, ge=1, le=65535, description="tidegate's IAB Global Vendor List id"
    )
    require_vendor_consent: bool = Field(
        default=True, description="a purpose is granted only if the vendor has consent too"
    )
    purpose_one_waived_in: list[Annotated[str, Field(pattern=r"^[A-Z]{2}$")]] = Field(
        default=[],
        description=(
            "publisher countries where a string with PurposeOneTreatment set needs no "
            "purpose 1 consent (elsewhere purpose 1 then counts as not consented)"
        ),
    )


class RoleConfig(Strict):
    description: str = ""
    rate_limit: RateLimitConfig | None = Field(
        default=None, description="per principal on the serving API; none: unlimited"
    )
    purposes: list[PurposeName] = Field(min_length=1)
    products: list[str] = ["*"]
    ingest: list[str] = Field(
        default=[], description="stream sources this role may post events to ('*': all)"
    )
    write_consent: bool = Field(
        default=False, description="may record consent choices (POST /v1/consent) and read them"
    )
    subject_requests: bool = Field(
        default=False, description="may run access requests for data subjects (the API)"
    )


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

    subject_types: dict[Name, SubjectTypeConfig] = Field(
        default={}, description="kinds of person (customer, employee, ...): see project/subjects.py"
    )
    purposes: dict[PurposeName, PurposeConfig] = {}
    roles: dict[Name, RoleConfig] = {}
    treatments: dict[str, dict[Classification, TreatmentSpec]] = Field(
        default={},
        description="purpose (or '*') -> classification prefix -> treatment",
    )
    default_treatment: TreatmentKind | None = None
    tcf: TcfPolicy | None = Field(default=None, description="TCF string handling (once)")

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


class FieldSpec(Strict):
    """One destination field: a product `column`, a constant (`const`) or a `template`."""

    column: str | None = None
    const: str | int | float | bool | None = None
    template: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FieldSpec:
        given = self.model_fields_set & {"column", "const", "template"}
        if len(given) != 1:
            raise ValueError("give exactly one of column, const or template")
        if self.template is not None:
            template_parts(self.template)
        return self

    @property
    def kind(self) -> str:
        return next(iter(self.model_fields_set & {"column", "const", "template"}))

    def sources(self) -> list[str]:
        """The product columns this field reads."""
        if self.column is not None:
            return [self.column]
        if self.template is not None:
            return template_columns(self.template)
        return []


class RetryPolicy(Strict):
    """Transient errors (timeouts, 5xx, resets) are retried with exponential backoff + jitter."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    backoff: str = Field(default="500ms", description="wait before the first retry")
    max_backoff: str = "30s"
    multiplier: float = Field(default=2.0, ge=1.0)

    @field_validator("backoff", "max_backoff")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value


class AlertPolicy(Strict):
    """When to tell someone: a failed run, or rejected rows past a threshold."""

    on_failure: bool = True
    failed_rows: int | None = Field(default=None, ge=0, description="alert above this many")
    failed_percent: float | None = Field(default=None, ge=0, le=100)
    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_env: str | None = Field(default=None, description="env var holding the webhook URL")


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
    fields: dict[str, FieldSpec] = Field(
        default={},
        description=(
            "destination column -> product column, {const: value} or a template such as "
            "'{first_name} {last_name}' (default: all columns)"
        ),
    )
    trigger: Literal["manual", "on_build", "on_change", "schedule"] = "on_build"
    schedule: str | None = Field(
        default=None, description="cron expression (UTC), with trigger: schedule"
    )
    batch_rows: int | None = Field(default=None, gt=0)
    rate_limit: float | None = Field(default=None, gt=0, description="requests per second")
    retry: RetryPolicy = RetryPolicy()
    alerts: AlertPolicy = AlertPolicy()
    breakers: BreakerPolicy | None = Field(
        default=None, description="circuit breakers (override the product's sync_breakers)"
    )
    principal: str = "sync"

    @field_validator("fields", mode="before")
    @classmethod
    def _template_shorthand(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {
            target: (
                ({"template": spec} if "{" in spec else {"column": spec})
                if isinstance(spec, str)
                else spec
            )
            for target, spec in value.items()
        }

    @model_validator(mode="after")
    def _trigger_and_schedule(self) -> SyncConfig:
        from tidegate.project.cron import parse_cron

        if self.trigger == "schedule" and not self.schedule:
            raise FieldError("schedule", "trigger: schedule needs a cron `schedule`")
        if self.schedule is not None:
            if self.trigger != "schedule":
                raise FieldError("schedule", "schedule is only used with trigger: schedule")
            try:
                parse_cron(self.schedule)
            except ValueError as err:
                raise FieldError("schedule", str(err)) from None
        return self

    def field_specs(self, product_columns: list[str]) -> dict[str, FieldSpec]:
        """Every destination field as a FieldSpec (all product columns when none are given)."""
        if not self.fields:
            return {c: FieldSpec(column=c) for c in product_columns}
        return dict(self.fields)
