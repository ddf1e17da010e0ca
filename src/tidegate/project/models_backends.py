"""The `backends:` section of tidegate.yml: which store, metadata store, online store and
event log a project runs on. Each backend's config model lives here, as data the
registries (`store/registry.py`, `meta/registry.py`, ...) open by `type`; split from
`models.py`, which re-exports every name."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tidegate.project.model_base import Strict, parse_duration


class DuckDBStoreConfig(Strict):
    type: Literal["duckdb"] = "duckdb"
    #: the store recomputes changed keys in place (products/incremental.py)
    incremental: ClassVar[bool] = True
    path: str = ".tidegate/warehouse.duckdb"
    threads: int | None = None
    memory_limit: str | None = None

    @property
    def local_file(self) -> str:
        """The DuckDB file this machine opens (what health checks look for)."""
        return self.path


class SparkStoreConfig(Strict):
    """Apache Spark builds the products (store/spark/): sources and product versions are
    Parquet directories under `warehouse`, which a Spark cluster and DuckDB both read.

    `master` is any Spark master URL: `local[2]` (in-process, for tests and laptops),
    `spark://host:7077`, `yarn`, `k8s://...`, or a Spark Connect `sc://host:15002`. On a
    real cluster `warehouse` must be a path every executor reaches (a shared filesystem
    or an object store URL the cluster's Hadoop config knows, e.g. `s3a://bucket/tg`).
    The local DuckDB file `catalog` holds views on those Parquet tables, so guarded
    reads, exports and syncs see exactly what Spark built."""

    type: Literal["spark"]
    #: product versions are immutable Parquet: stream-fed products are rebuilt (batch)
    incremental: ClassVar[bool] = False
    master: str = Field(default="local[2]", description="Spark master URL or sc:// for Connect")
    warehouse: str = Field(
        default=".tidegate/spark-warehouse",
        description="where Spark writes the Parquet tables (relative: to the project root)",
    )
    catalog: str = Field(
        default=".tidegate/spark-catalog.duckdb",
        description="the local DuckDB file with views on the Parquet tables",
    )
    app_name: str = "tidegate"
    java_home: str | None = Field(
        default=None, description="JDK (17 or 21) for local mode; default: JAVA_HOME, then PATH"
    )
    conf: dict[str, str] = Field(default={}, description="extra Spark settings (spark.*)")

    @property
    def local_file(self) -> str:
        """The DuckDB catalog file this machine opens (what health checks look for)."""
        return self.catalog


StoreConfig = Annotated[DuckDBStoreConfig | SparkStoreConfig, Field(discriminator="type")]


class SqliteMetadataConfig(Strict):
    """Metadata in one SQLite file (WAL): the embedded default, one machine."""

    type: Literal["sqlite"] = "sqlite"
    path: str = ".tidegate/metadata.db"


class PostgresMetadataConfig(Strict):
    """Metadata in PostgreSQL: many processes (and machines) writing one project.

    The DSN is a secret: give it by environment variable (`dsn_env`) in a shared
    project; `dsn` is for local setups. It is never logged or written to audit records.
    """

    type: Literal["postgres"]
    dsn: str | None = None
    dsn_env: str | None = Field(default=None, description="environment variable holding the DSN")
    schema_name: str = Field(
        default="tidegate",
        alias="schema",
        pattern=r"^[a-z_][a-z0-9_]*$",
        max_length=63,
        description="PostgreSQL schema holding the metadata tables (created if missing)",
    )
    pool_size: int = Field(default=4, gt=0, le=64, description="connections per process")

    @model_validator(mode="after")
    def _one_dsn(self) -> PostgresMetadataConfig:
        if bool(self.dsn) == bool(self.dsn_env):
            raise ValueError("give exactly one of dsn or dsn_env")
        return self


MetadataConfig = Annotated[
    SqliteMetadataConfig | PostgresMetadataConfig, Field(discriminator="type")
]


class SqliteOnlineConfig(Strict):
    type: Literal["sqlite"] = "sqlite"
    path: str = ".tidegate/online.db"


class RedisOnlineConfig(Strict):
    type: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "tidegate"


OnlineConfig = Annotated[SqliteOnlineConfig | RedisOnlineConfig, Field(discriminator="type")]


class SqliteLogConfig(Strict):
    """The embedded event log: a SQLite file in WAL mode."""

    type: Literal["sqlite"] = "sqlite"
    path: str = ".tidegate/log.db"
    partitions: int = Field(default=4, gt=0, le=256, description="per topic, when created")
    retention: str | None = Field(default="7d", description="drop records older than this")
    retention_bytes: int | None = Field(default=None, gt=0, description="per partition")

    @field_validator("retention")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


class KafkaLogConfig(Strict):
    """Apache Kafka as the event log: topics, partitions, consumer groups."""

    type: Literal["kafka"]
    bootstrap: str = "127.0.0.1:9092"
    partitions: int = Field(default=3, gt=0, description="per topic, when tidegate creates it")
    retention: str | None = None
    client: dict[str, str] = Field(default={}, description="extra librdkafka settings")
    namespace: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9._-]{0,100}$",
        description="prefix of tidegate's own topics (`<namespace>.__changes.<product>`) and"
        " consumer groups, so several projects or environments share one cluster",
    )

    @field_validator("retention")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


LogConfig = Annotated[SqliteLogConfig | KafkaLogConfig, Field(discriminator="type")]


class BackendsConfig(Strict):
    store: StoreConfig = DuckDBStoreConfig()
    metadata: MetadataConfig = SqliteMetadataConfig()
    online: OnlineConfig = SqliteOnlineConfig()
    log: LogConfig = SqliteLogConfig()
