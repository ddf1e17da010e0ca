from tidegate.egress.destinations.postgres.client import PostgresDestination

__all__ = ["PostgresDestination"]
