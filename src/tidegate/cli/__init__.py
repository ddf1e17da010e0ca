"""The `tidegate` command line."""

from tidegate.cli.app import app, main

__all__ = ["app", "main"]
