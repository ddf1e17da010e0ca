"""Processes and the wiring between stores: the `Platform` every command opens."""

from tidegate.runtime.platform import Platform

__all__ = ["Platform"]
