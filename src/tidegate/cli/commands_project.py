"""Project commands: init, validate, build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate.console import console, print_json
from tidegate.errors import ConfigError, TidegateError

ProjectDir = Annotated[
    Path, typer.Option("--project", "-p", help="The project folder.", show_default=True)
]


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("validate")(validate)
    app.command("build")(build)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create (must be new or empty).")],
    domain: Annotated[
        str | None, typer.Option(help="The domain team's name, used in names and docs.")
    ] = None,
) -> None:
    """Scaffold a working project: folders, default purposes and policies, an example."""
    from tidegate.project.scaffold import scaffold

    written = scaffold(directory, domain)
    console.print(f"Created a tidegate project in [bold]{directory}[/bold] ({len(written)} files).")
    console.print(
        f"Next: [bold]tidegate validate {directory}[/bold], then "
        f"[bold]tidegate build -p {directory}[/bold]."
    )


def validate(
    directory: Annotated[Path, typer.Argument(help="The project folder.")] = Path("."),
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Also fail when a product contract breaks against this git ref "
            "(e.g. origin/main) without a `version:` bump.",
        ),
    ] = None,
) -> None:
    """Check every file of a project; list each problem with file:line and field."""
    from tidegate.project import load_project

    try:
        project = load_project(directory)
    except ConfigError as err:
        if json_output:
            print_json({"valid": False, "problems": [p.__dict__ for p in err.problems]})
            raise typer.Exit(2) from None
        raise
    from tidegate.project.taxonomy import check_taxonomy

    warnings = check_taxonomy(project)[1]
    summary = {
        "valid": True,
        "project": project.name,
        "sources": sorted(project.sources),
        "products": project.build_order(),
        "purposes": sorted(project.policy.purposes),
        "syncs": sorted(project.syncs),
        "warnings": [w.__dict__ for w in warnings],
    }
    if against is not None:
        from tidegate.cli.commands_observe import contract_verify

        contract_verify(against=against, project_dir=directory)
    if json_output:
        print_json(summary)
        return
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", markup=True, soft_wrap=True)
    console.print(
        f"[green]✓[/green] project [bold]{project.name}[/bold] is valid: "
        f"{len(project.sources)} sources, {len(project.products)} products, "
        f"{len(project.policy.purposes)} purposes, {len(project.syncs)} syncs"
    )


def build(
    project_dir: ProjectDir = Path("."),
    product: Annotated[
        list[str] | None,
        typer.Option("--product", help="Build only these products (and what depends on them)."),
    ] = None,
    skip_sources: Annotated[
        bool, typer.Option("--skip-sources", help="Reuse the last loaded source snapshots.")
    ] = False,
    sync: Annotated[
        bool, typer.Option("--sync/--no-sync", help="Run the `on_build` syncs afterwards.")
    ] = True,
) -> None:
    """Load sources and build products in dependency order; each publishes atomically.

    Then runs the syncs with `trigger: on_build` whose products changed.
    """
    from tidegate.platform import Platform
    from tidegate.runtime.jobs import run_build, syncs_after_build

    with Platform.open(project_dir) as platform:
        results = run_build(platform, product, skip_sources)
        if sync:
            for report in syncs_after_build(platform, results):
                console.print(
                    f"sync [bold]{report.sync}[/bold]: {report.added} added, "
                    f"{report.changed} changed, {report.removed} removed, {report.failed} failed"
                )
    failed = [r for r in results if r.status != "live"]
    if failed:
        raise TidegateError(
            "some products did not publish (their previous versions stay live): "
            + "; ".join(f"{r.product}: {r.error}" for r in failed)
        )
