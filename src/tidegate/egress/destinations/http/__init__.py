from tidegate.egress.destinations.http.client import HttpDestination

__all__ = ["HttpDestination"]
