"""Metadata: runs, product versions, the consent ledger, audit, sync state, API keys,
and the parts it owns (freshness, dead letters, observations, CDC positions).

Every module reaches metadata through a `MetadataStore` opened here (usually the one
`Platform.meta` holds); none opens the database itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tidegate.meta.base import MetadataStore

if TYPE_CHECKING:
    from tidegate.project.models import PostgresMetadataConfig, SqliteMetadataConfig

__all__ = ["MetadataStore", "open_metadata"]


def open_metadata(
    config: SqliteMetadataConfig | PostgresMetadataConfig, root: Path
) -> MetadataStore:
    """The store `config` (`backends.metadata`) describes; relative paths from `root`."""
    from tidegate.meta.registry import backend

    return backend(config.type).opener(config, Path(root))
