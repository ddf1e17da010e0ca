"""Governance commands: classify columns, subject requests (access, erasure), exports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.cli.console import console, print_json

request_app = typer.Typer(
    help="Data subject requests: access and erasure (GDPR Art. 15 and 17).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_command)
    app.add_typer(request_app, name="request")


def classify_command(
    name: Annotated[str, typer.Argument(help="A source or product.")],
    project_dir: ProjectDir = Path("."),
    sample: Annotated[int, typer.Option(help="Rows to sample.")] = 1000,
    write: Annotated[
        bool, typer.Option("--write", help="Add the suggestions to columns that have none.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Suggest classifications from column names and sampled values, as YAML to accept."""
    from tidegate.privacy.classify import as_yaml, classify, write_classifications
    from tidegate.runtime.platform import Platform

    with Platform.open(project_dir) as platform:
        found = classify(platform, name, sample)
    if json_output:
        print_json(
            {
                "name": found.name,
                "kind": found.kind,
                "sampled_rows": found.sampled_rows,
                "suggestions": [s.__dict__ for s in found.suggestions],
                "existing": found.existing,
            }
        )
    else:
        console.print(as_yaml(found.suggestions, found.existing, found.header()), markup=False)
    if write:
        added = write_classifications(found.path, found.suggestions, found.existing)
        for line in added:
            console.print(f"added to {found.path}: {line}", markup=False)
        if not added:
            console.print("nothing to add: every suggested column is already classified")
