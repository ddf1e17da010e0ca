from tidegate.egress.destinations.sqlite.client import SqliteDestination

__all__ = ["SqliteDestination"]
