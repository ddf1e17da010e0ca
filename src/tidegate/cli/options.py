"""Options shared by many commands, declared once so they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

#: every command that prints a result takes it: the same data, as JSON on stdout
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
