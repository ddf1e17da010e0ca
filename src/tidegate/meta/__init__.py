"""Metadata: runs, product versions, the consent ledger, audit, sync state, API keys."""

from pathlib import Path

from tidegate.meta.base import MetadataStore
from tidegate.meta.sqlite import SqliteMetadataStore

__all__ = ["MetadataStore", "SqliteMetadataStore", "open_metadata"]


def open_metadata(path: Path) -> MetadataStore:
    return SqliteMetadataStore(path)
