"""Project commands: init, validate, build, schema, reload (policies, live)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from tidegate.cli.options import JsonOption
from tidegate.console import console, errors, print_json
from tidegate.errors import ConfigError, TidegateError

if TYPE_CHECKING:
    from tidegate.project import Project

ProjectDir = Annotated[
    Path, typer.Option("--project", "-p", help="The project folder.", show_default=True)
]


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("validate")(validate)
    app.command("build")(build)
    app.command("schema")(schema)
    app.command("reload")(reload_policies)


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create (must be new or empty).")],
    domain: Annotated[
        str | None, typer.Option(help="The domain team's name, used in names and docs.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Scaffold a working project: folders, default purposes and policies, an example."""
    from tidegate.project.scaffold import scaffold

    written = scaffold(directory, domain)
    if json_output:
        print_json({"project": str(directory), "files": [str(p) for p in written]})
        return
    console.print(f"Created a tidegate project in [bold]{directory}[/bold] ({len(written)} files).")
    console.print(
        f"Next: [bold]tidegate validate {directory}[/bold], then "
        f"[bold]tidegate build -p {directory}[/bold]."
    )


def schema(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write one <kind>.schema.json per file kind into this folder."),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """JSON Schema of every project file kind, for editors; generated from the models.

    Kinds: project (tidegate.yml), source, product, policy, sync. Without --out, all of
    them print as one JSON object.
    """
    from tidegate.project.reference import KINDS, all_schemas, write_schemas

    if out is None:
        print_json(all_schemas())
        return
    written = write_schemas(out)
    if json_output:
        print_json({"written": [str(p) for p in written]})
        return
    for kind, path in zip(KINDS, written, strict=True):
        console.print(f"{kind:8} {escape(str(path))}")


def load_checked(directory: Path) -> Project:
    """The project, checked against its files too: what `build` would trip over."""
    from tidegate.project import load_project
    from tidegate.project.reality import check_reality

    project = load_project(directory)
    problems = check_reality(project)
    if problems:
        raise ConfigError(problems, project.root)
    return project


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
    try:
        project = load_checked(directory)
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
        console.print(f"[yellow]warning:[/yellow] {escape(str(warning))}", soft_wrap=True)
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
        bool,
        typer.Option("--sync/--no-sync", help="Run the on_build and on_change syncs afterwards."),
    ] = True,
    accept_anomalies: Annotated[
        bool,
        typer.Option(
            "--accept-anomalies",
            help="Publish versions that `on_anomaly: block` would hold back (a real change).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Load sources and build products in dependency order; each publishes atomically.

    Then runs the syncs with `trigger: on_build` or `on_change` whose products changed.
    """
    from tidegate.platform import Platform
    from tidegate.products.builder import build_products, load_sources
    from tidegate.runtime.jobs import run_build, syncs_after_build

    if not skip_sources:
        load_checked(project_dir)  # a clear message for a missing file or column, not DuckDB's
    with Platform.open(project_dir) as platform:
        if json_output:  # no progress bars or tables on stdout: only the JSON document
            if not skip_sources:
                load_sources(platform)
            results = build_products(platform, product, None, accept_anomalies=accept_anomalies)
        else:
            results = run_build(platform, product, skip_sources, accept_anomalies)
        reports = syncs_after_build(platform, results) if sync else []
    failed = [r for r in results if r.status != "live"]
    if json_output:
        print_json(
            {
                "products": [dataclasses.asdict(r) for r in results],
                "syncs": [dataclasses.asdict(r) for r in reports],
                "ok": not failed,
            }
        )
        if failed:
            raise typer.Exit(1)
        return
    for report in reports:
        console.print(
            f"sync [bold]{report.sync}[/bold]: {report.added} inserted, "
            f"{report.changed} updated, {report.removed} deleted, {report.failed} failed"
            + (" [red](blocked by its circuit breakers)[/red]" if report.blocked else "")
        )
    if failed:
        raise TidegateError(
            "some products did not publish (their previous versions stay live): "
            + "; ".join(f"{r.product}: {r.error}" for r in failed)
        )


def reload_policies(project_dir: ProjectDir = Path("."), json_output: JsonOption = False) -> None:
    """Apply edited policies/ to the running runtime now, validated first.

    A broken edit is refused with its problems (exit 2) and the policy in force stays.
    A running `run`, `worker` or `serve` also picks edits up by itself within a second.
    """
    from tidegate.platform import Platform
    from tidegate.privacy.policy_reload import reloader_of

    with Platform.open(project_dir) as platform:
        if not platform.lent:
            # no runtime holds the project: opening it validated the policies already
            digest = platform.project.policy.digest
            if json_output:
                print_json({"runtime": False, "valid": True, "digest": digest})
                return
            console.print(
                f"no runtime holds this project: the policies are valid ({digest[:19]}…); "
                "a running serve applies them within a second"
            )
            return
        try:
            result = reloader_of(platform).reload(principal="cli", trigger="command")
        except ConfigError:
            in_force = platform.project.policy.digest
            errors.print(
                f"policies not reloaded: the policy in force ({in_force[:19]}…) stays",
                markup=False,
            )
            raise
    if json_output:
        print_json({"runtime": True, "valid": True, **result.as_json()})
        return
    if result.changed:
        console.print(
            f"policies reloaded: {result.previous[:19]}… -> {result.digest[:19]}… "
            f"({len(result.roles)} roles, {len(result.purposes)} purposes)"
        )
    else:
        console.print(f"policies unchanged: {result.digest[:19]}… is in force")
