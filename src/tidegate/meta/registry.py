"""Metadata backends by name: `backends.metadata.type` picks one.

Each backend registers an opener and its capabilities (data, not name checks); the
config model it reads is its member of `project.models.MetadataConfig`. A third
backend registers here and adds its config model there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tidegate.errors import ConfigError, Problem
from tidegate.meta.base import MetadataCapabilities, MetadataStore


@dataclass(frozen=True)
class MetadataBackend:
    name: str
    opener: Callable[[Any, Path], MetadataStore]  # (its config model, project root)
    capabilities: MetadataCapabilities


BACKENDS: dict[str, MetadataBackend] = {}

SQLITE = MetadataCapabilities(shared_across_hosts=False, secure_delete=True)
POSTGRES = MetadataCapabilities(shared_across_hosts=True, secure_delete=False)


def register(backend: MetadataBackend) -> None:
    BACKENDS[backend.name] = backend


def backend(name: str) -> MetadataBackend:
    found = BACKENDS.get(name)
    if found is None:
        known = ", ".join(sorted(BACKENDS))
        raise ConfigError(
            [Problem("tidegate.yml", 0, "backends.metadata.type", f"{name!r}: not one of {known}")]
        )
    return found


def _open_sqlite(config: Any, root: Path) -> MetadataStore:
    from tidegate.meta.sqlite import SqliteMetadataStore

    path = Path(config.path)
    return SqliteMetadataStore(path if path.is_absolute() else root / path)


def _open_postgres(config: Any, root: Path) -> MetadataStore:
    from tidegate.meta.postgres import PostgresMetadataStore

    return PostgresMetadataStore.from_config(config)


register(MetadataBackend("sqlite", _open_sqlite, SQLITE))
register(MetadataBackend("postgres", _open_postgres, POSTGRES))
