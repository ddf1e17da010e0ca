"""Sync destinations: one folder each, one contract (`base.Destination`)."""

from tidegate.egress.destinations.base import (
    Capabilities,
    Destination,
    Written,
    destination_class,
    open_destination,
    register,
)

__all__ = [
    "Capabilities",
    "Destination",
    "Written",
    "destination_class",
    "open_destination",
    "register",
]
