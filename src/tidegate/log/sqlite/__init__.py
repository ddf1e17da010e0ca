"""The embedded event log backend: a SQLite file in WAL mode."""

from tidegate.log.sqlite.client import SqliteEventLog

__all__ = ["SqliteEventLog"]
