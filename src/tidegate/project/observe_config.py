"""The YAML shape of quality checks (`checks:` in a product) and of `observe:` in tidegate.yml.

Imported by `project/models.py`, so it imports nothing of tidegate at module level
(durations are parsed through a lazy import) and nothing heavy at all.

A check is a dict with a `type`::

    checks:
      - {type: unique, columns: [customer_id, day]}
      - {type: row_count, min: 1000}
      - {type: sql, name: no_refund_above_price, sql: "SELECT * FROM orders_clean WHERE ..."}

and a column can carry its own checks in shorthand::

    columns:
      email: {type: VARCHAR, checks: [not_null, {regex: '^[^@]+@[^@]+$'}]}
      risk_band: {type: VARCHAR, checks: [{accepted_values: [low, medium, high]}]}
      churn_score: {type: INTEGER, checks: [{range: {min: 0, max: 100}, severity: warn}]}
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

Severity = Literal["error", "warn"]
Scalar = str | int | float | bool
DISTRIBUTION_METRICS = (
    "mean",
    "stddev",
    "min",
    "max",
    "null_percent",
    "distinct_count",
    "avg_length",
)


def _duration(value: str) -> str:
    from tidegate.project.models import parse_duration

    parse_duration(value)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _Check(_Strict):
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$", max_length=40)
    severity: Severity = "error"
    description: str = ""

    @property
    def column_names(self) -> list[str]:
        column = getattr(self, "column", None)
        return [column] if column else []

    @property
    def check_name(self) -> str:
        """Unique within the product: `name`, or the type and the columns."""
        if self.name:
            return self.name
        kind = str(getattr(self, "type", "check"))
        metric = getattr(self, "metric", None)
        parts = [*self.column_names, kind, *([metric] if metric else [])]
        return "__".join(parts)


class NotNullCheck(_Check):
    type: Literal["not_null"]
    column: str


class UniqueCheck(_Check):
    """Unique (compound when several columns): no two rows share the values."""

    type: Literal["unique"]
    columns: list[str] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _one_column(cls, data: Any) -> Any:
        if isinstance(data, dict) and "column" in data and "columns" not in data:
            data = {**data, "columns": [data["column"]]}
            del data["column"]
        return data

    @property
    def column_names(self) -> list[str]:
        return list(self.columns)


class AcceptedValuesCheck(_Check):
    type: Literal["accepted_values"]
    column: str
    values: list[Scalar] = Field(min_length=1)


class RangeCheck(_Check):
    """`min <= column <= max` (numbers, or ISO dates/timestamps as strings)."""

    type: Literal["range"]
    column: str
    min: float | str | None = None
    max: float | str | None = None

    @model_validator(mode="after")
    def _bound(self) -> RangeCheck:
        if self.min is None and self.max is None:
            raise ValueError("a range check needs min, max or both")
        return self


class RegexCheck(_Check):
    type: Literal["regex"]
    column: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"pattern {value!r} is not a regular expression: {err}") from None
        return value


class LengthCheck(_Check):
    type: Literal["length"]
    column: str
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bound(self) -> LengthCheck:
        if self.min is None and self.max is None:
            raise ValueError("a length check needs min, max or both")
        return self


class RowCountCheck(_Check):
    type: Literal["row_count"]
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _bound(self) -> RowCountCheck:
        if self.min is None and self.max is None:
            raise ValueError("a row_count check needs min, max or both")
        return self


class FreshnessCheck(_Check):
    """The newest value of a timestamp column is at most `max_age` old at build time."""

    type: Literal["freshness"]
    column: str
    max_age: str

    @field_validator("max_age")
    @classmethod
    def _age(cls, value: str) -> str:
        return _duration(value)


class RelationshipCheck(_Check):
    """Referential integrity: every non-null `column` value exists in `to`.`field`."""

    type: Literal["relationship"]
    column: str
    to: str = Field(description="another product (or a source)")
    field: str | None = Field(default=None, description="default: the same name as column")

    @property
    def target_field(self) -> str:
        return self.field or self.column


class DistributionCheck(_Check):
    """A statistic of a column stays within bounds (e.g. mean, null %)."""

    type: Literal["distribution"]
    column: str
    metric: Literal["mean", "stddev", "min", "max", "null_percent", "distinct_count", "avg_length"]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> DistributionCheck:
        if self.min is None and self.max is None:
            raise ValueError("a distribution check needs min, max or both")
        return self


class SqlCheck(_Check):
    """Custom SQL returning the failing rows; the product is named by its own name."""

    type: Literal["sql"]
    sql: str = Field(min_length=1)


CheckConfig = Annotated[
    NotNullCheck
    | UniqueCheck
    | AcceptedValuesCheck
    | RangeCheck
    | RegexCheck
    | LengthCheck
    | RowCountCheck
    | FreshnessCheck
    | RelationshipCheck
    | DistributionCheck
    | SqlCheck,
    Field(discriminator="type"),
]
CHECK_ADAPTER: TypeAdapter[Any] = TypeAdapter(CheckConfig)
COLUMN_CHECK_TYPES = (
    "not_null",
    "unique",
    "accepted_values",
    "range",
    "regex",
    "length",
    "freshness",
    "relationship",
    "distribution",
)
_SHORTHAND_ARGUMENT = {
    "accepted_values": "values",
    "regex": "pattern",
    "freshness": "max_age",
    "relationship": "to",
}


def expand_column_check(column: str, item: Any) -> dict[str, Any]:
    """`not_null` / `{accepted_values: [a, b], severity: warn}` -> a full check dict."""
    if isinstance(item, str):
        item = {item: None}
    if not isinstance(item, dict):
        raise ValueError(f"a column check is a name or a mapping, not {item!r}")
    kinds = [k for k in item if k in COLUMN_CHECK_TYPES]
    if len(kinds) != 1:
        known = ", ".join(COLUMN_CHECK_TYPES)
        raise ValueError(f"a column check names exactly one of: {known} (got {sorted(item)})")
    kind = kinds[0]
    argument = item[kind]
    full: dict[str, Any] = {k: v for k, v in item.items() if k != kind}
    full["type"] = kind
    full["column"] = column
    if isinstance(argument, dict):
        full.update(argument)
    elif argument is not None:
        if kind not in _SHORTHAND_ARGUMENT:
            raise ValueError(f"{kind}: give its settings as a mapping, e.g. {{min: 0, max: 100}}")
        full[_SHORTHAND_ARGUMENT[kind]] = argument
    if kind == "relationship" and isinstance(full.get("to"), str) and "." in full["to"]:
        full["to"], full["field"] = full["to"].split(".", 1)
    return full


def validate_column_checks(items: list[Any]) -> list[Any]:
    """Validate shorthand column checks (kept as written; expanded by `product_checks`)."""
    for item in items:
        CHECK_ADAPTER.validate_python(expand_column_check("column", item))
    return items


def product_checks(config: Any) -> list[Any]:
    """Every check of a ProductConfig: the `checks:` list and the columns' shorthand."""
    found: list[Any] = list(getattr(config, "checks", []) or [])
    for name, spec in config.columns.items():
        for item in getattr(spec, "checks", []) or []:
            found.append(CHECK_ADAPTER.validate_python(expand_column_check(name, item)))
    return found


def check_columns(config: Any) -> str | None:
    """A message when a check names a column the contract lacks, or two share a name."""
    seen: set[str] = set()
    for check in product_checks(config):
        for column in check.column_names:
            if column not in config.columns:
                return f"check {check.check_name!r} names {column!r}, not a declared column"
        if check.check_name in seen:
            return f"two checks are named {check.check_name!r}; give one a `name:`"
        seen.add(check.check_name)
    return None


# ---------------------------------------------------------------- observe: in tidegate.yml


class AlertsConfig(_Strict):
    """Where alerts go: a default webhook and one per product owner (Slack-compatible JSON)."""

    webhook_url: str | None = Field(default=None, pattern=r"^https?://")
    webhook_env: str | None = Field(default=None, description="env var holding the default URL")
    owners: dict[str, str] = Field(
        default={}, description="product owner -> webhook URL (or env:VARIABLE)"
    )
    dedupe: str = Field(default="1h", description="the same alert is sent once per this window")

    @field_validator("dedupe")
    @classmethod
    def _window(cls, value: str) -> str:
        return _duration(value)

    def target(self, owner: str) -> str | None:
        """The webhook URL for an owner's alerts (its own, else the default), or None."""
        import os

        target = self.owners.get(owner)
        if target is None:
            target = self.webhook_url or (
                os.environ.get(self.webhook_env) if self.webhook_env else None
            )
        if target and target.startswith("env:"):
            target = os.environ.get(target[4:])
        return target or None


class MonitorThresholds(_Strict):
    """Access-monitor thresholds for one role (unset: the project-wide value)."""

    factor: float | None = Field(default=None, gt=0)
    floor: int | None = Field(default=None, ge=0)
    denied_threshold: int | None = Field(default=None, ge=1)


class AccessMonitorsConfig(_Strict):
    """Real-time access monitors on the audit stream (privacy/monitors.py): on by default,
    alerting through `observe.alerts` under `owner`."""

    enabled: bool = True
    owner: str = Field(default="privacy", description="alert owner (observe.alerts.owners)")
    window: str = Field(default="1m", description="the volume and denied rules' window")
    factor: float = Field(default=5.0, gt=0, description="x baseline distinct subjects")
    floor: int = Field(default=20, ge=0, description="baseline never below this")
    denied_threshold: int = Field(default=5, ge=1, description="denied calls per window")
    dedupe: str = Field(default="10m", description="the same alert once per this window")
    roles: dict[str, MonitorThresholds] = Field(
        default={}, description="role -> thresholds for principals holding it"
    )

    @field_validator("window", "dedupe")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _duration(value)


class OpenLineageConfig(_Strict):
    """Where OpenLineage RunEvents go (openlineage-python transports)."""

    transport: Literal["none", "console", "file", "http", "kafka"] = "none"
    namespace: str | None = Field(default=None, description="job namespace (default: project)")
    path: str = Field(default=".tidegate/openlineage.jsonl", description="file transport")
    url: str | None = Field(default=None, pattern=r"^https?://", description="http transport")
    endpoint: str = "api/v1/lineage"
    api_key_env: str | None = None
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "openlineage"
    batch_updates: int = Field(
        default=50, gt=0, description="incremental updates per batched event"
    )


class AnomalyConfig(_Strict):
    """z-score anomaly detection on the pillars' time series."""

    z_threshold: float = Field(default=3.0, gt=0)
    training_window: str = "14d"
    min_training: int = Field(default=7, ge=2)
    seasonality: Literal["none", "day_of_week", "hour_of_day"] = "none"
    relative_floor: float = Field(
        default=0.05, ge=0, description="ignore changes smaller than this share of the mean"
    )
    absolute_floor: float = Field(default=0.0, ge=0, description="ignore changes smaller than this")
    directions: dict[str, Literal["spike", "drop", "both"]] = Field(
        default={}, description="metric -> which way alerts (default: per metric, see anomaly.py)"
    )
    floors: dict[str, float] = Field(
        default={}, description="metric -> absolute floor, overriding absolute_floor"
    )

    @field_validator("training_window")
    @classmethod
    def _window(cls, value: str) -> str:
        return _duration(value)


class ObserveConfig(_Strict):
    alerts: AlertsConfig = AlertsConfig()
    access_monitors: AccessMonitorsConfig = AccessMonitorsConfig()
    openlineage: OpenLineageConfig = OpenLineageConfig()
    anomaly: AnomalyConfig = AnomalyConfig()
    failing_rows_kept: int = Field(
        default=1000, ge=0, description="failing rows kept per check for inspection"
    )
    quality_tables_kept: int = Field(
        default=20, ge=1, description="failing-row tables kept per product (oldest dropped)"
    )
