"""Governance commands: classify columns, anonymised exports (requests: commands_requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.console import console, print_json
from tidegate.errors import ConfigError


def register(app: typer.Typer) -> None:
    app.command("classify")(classify_command)
    app.command("export")(export_command)


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
    from tidegate.platform import Platform
    from tidegate.privacy.classify import as_yaml, classify, write_classifications
    from tidegate.project.loader import load_project

    try:
        platform = Platform.open(project_dir)  # the runtime's own, when forwarded to one
    except ConfigError:
        # the one command that loads a project whose product columns are not all
        # classified yet: it exists to fill them in (other problems still raise)
        platform = Platform(load_project(project_dir, require_classified=False))
    with platform:
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


def export_command(
    product: Annotated[str, typer.Argument(help="The product to export.")],
    purpose: Annotated[str, typer.Option(help="Why: a purpose the product allows.")],
    out: Annotated[Path, typer.Option(help="The file to write.")],
    quasi_identifiers: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns to generalise (e.g. zip,birth_date)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML: k, quasi-identifiers with ARX hierarchies, sensitive, l, t."),
    ] = None,
    k: Annotated[
        int | None, typer.Option("--k", help="Each combination of QIs has ≥ k rows [5].")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    max_suppression: Annotated[
        float | None, typer.Option(help="Share of rows that may be suppressed [0.05].")
    ] = None,
    principal: Annotated[str, typer.Option(help="Who exports (audited).")] = "cli",
    role: Annotated[
        list[str] | None, typer.Option(help="Check the purpose against these roles.")
    ] = None,
    hierarchy: Annotated[
        list[str] | None,
        typer.Option(help="COLUMN=FILE: an ARX hierarchy CSV for a quasi-identifier (repeat)."),
    ] = None,
    algorithm: Annotated[
        str | None,
        typer.Option(help="lattice (optimal full-domain) [default] or mondrian (local)."),
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option(help="What the lattice minimises: loss [default], discernibility, intensity."),
    ] = None,
    sensitive: Annotated[
        str | None, typer.Option(help="Comma-separated sensitive columns (for --l and --t).")
    ] = None,
    l_value: Annotated[
        int | None,
        typer.Option("--l", help="Each class holds ≥ l values of each sensitive column."),
    ] = None,
    l_diversity: Annotated[
        str | None, typer.Option(help="distinct [default] or entropy l-diversity.")
    ] = None,
    t_value: Annotated[
        float | None,
        typer.Option("--t", help="Each class's sensitive distribution is within t (EMD)."),
    ] = None,
    project_dir: ProjectDir = Path("."),
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export a product k-anonymised, through the guard, audited; reports information loss."""
    from tidegate.egress.export import export
    from tidegate.errors import BadRequestError
    from tidegate.platform import Platform
    from tidegate.privacy.anonymize_config import Overrides, resolve
    from tidegate.privacy.anonymize_hierarchies import parse_declarations

    def split(text: str | None) -> list[str] | None:
        return None if text is None else [p.strip() for p in text.split(",") if p.strip()]

    try:  # a bad option, config or hierarchy file is a usage error (exit 2), before any data
        given = Overrides(
            quasi_identifiers=split(quasi_identifiers),
            k=k,
            max_suppression=max_suppression,
            algorithm=algorithm,
            metric=metric,
            sensitive=split(sensitive),
            l=l_value,
            l_diversity=l_diversity,
            t=t_value,
            hierarchies=parse_declarations(hierarchy or []),
        )
        settings = resolve(config, given)
    except BadRequestError as err:
        raise typer.BadParameter(err.message) from err
    with Platform.open(project_dir) as platform:
        result = export(
            platform,
            product,
            purpose=purpose,
            k=settings.k,
            quasi_identifiers=settings.quasi_identifiers,
            out=out,
            fmt=format,
            principal=principal,
            roles=tuple(role or ()),
            max_suppression=settings.max_suppression,
            privacy=settings.privacy,
        )
    if json_output:
        print_json(result.as_json())
        return
    loss = result.loss
    console.print(
        f"exported {loss['rows_out']} of {loss['rows_in']} rows ({result.subjects} subjects) "
        f"of {product} for {purpose} to {out} ({format}); k={loss['k']}: "
        f"{loss['classes']} classes, average size {loss['average_class_size']}, "
        f"suppressed {loss['suppressed']} "
        f"({loss['suppression_rate']:.1%}), discernibility {loss['discernibility']}, "
        f"precision {loss['precision']:.3f} ({loss['algorithm']})",
        markup=False,
    )
    for model in ("l", "t"):
        if model in loss:
            console.print(f"  {model}: {loss[model]}", markup=False)
    for name, level in loss["levels"].items():
        console.print(f"  {name}: {level['as']} (level {level['level']})", markup=False)
    if result.dropped:
        console.print(f"  left out as identifying: {', '.join(result.dropped)}", markup=False)
