"""Analytical stores by name: `backends.store.type` picks the opener registered here.

The embedded default is DuckDB (`store/warehouse.py`); `spark` (store/spark/) builds on
Apache Spark. Both hand back a `Warehouse`: the Spark one keeps a DuckDB catalog of
views on its Parquet tables, so every reader above (guard, exports, syncs, quality)
works on either. A plugin registers its opener with `register_warehouse`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tidegate.errors import TidegateError
from tidegate.project.models import DuckDBStoreConfig, SparkStoreConfig
from tidegate.store.warehouse import Warehouse

#: (config, project root, lock wait in seconds, who hears about the wait) -> Warehouse
Opener = Callable[[Any, Path, "float | None", "Callable[[str], None] | None"], Warehouse]

WAREHOUSES: dict[str, Opener] = {}


def register_warehouse(kind: str, opener: Opener) -> None:
    WAREHOUSES[kind] = opener


def resolve(root: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else root / candidate


def _open_duckdb(
    config: DuckDBStoreConfig,
    root: Path,
    wait: float | None,
    notice: Callable[[str], None] | None,
) -> Warehouse:
    return Warehouse(
        resolve(root, config.path),
        threads=config.threads,
        memory_limit=config.memory_limit,
        wait=wait,
        notice=notice,
    )


def _open_spark(
    config: SparkStoreConfig,
    root: Path,
    wait: float | None,
    notice: Callable[[str], None] | None,
) -> Warehouse:
    from tidegate.store.spark.warehouse import SparkWarehouse

    return SparkWarehouse(config, root, wait=wait, notice=notice)


register_warehouse("duckdb", _open_duckdb)
register_warehouse("spark", _open_spark)


def open_warehouse(
    config: DuckDBStoreConfig | SparkStoreConfig,
    root: Path,
    wait: float | None = 0.0,
    notice: Callable[[str], None] | None = None,
) -> Warehouse:
    opener = WAREHOUSES.get(config.type)
    if opener is None:
        known = ", ".join(sorted(WAREHOUSES))
        raise TidegateError(f"backends.store: unknown type {config.type!r} (known: {known})")
    return opener(config, root, wait, notice)
