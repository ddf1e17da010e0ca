from tidegate.egress.destinations.files.client import FileDestination

__all__ = ["FileDestination"]
