"""Governance commands: classify columns, anonymised exports (requests: commands_requests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tidegate.cli.commands_project import ProjectDir
from tidegate.console import console, print_json


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


def export_command(
    product: Annotated[str, typer.Argument(help="The product to export.")],
    purpose: Annotated[str, typer.Option(help="Why: a purpose the product allows.")],
    quasi_identifiers: Annotated[
        str, typer.Option(help="Comma-separated columns to generalise (e.g. zip,birth_date).")
    ],
    out: Annotated[Path, typer.Option(help="The file to write.")],
    k: Annotated[int, typer.Option("--k", help="Each combination of QIs has ≥ k rows.")] = 5,
    format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    max_suppression: Annotated[
        float, typer.Option(help="Share of rows that may be suppressed before generalising more.")
    ] = 0.05,
    principal: Annotated[str, typer.Option(help="Who exports (audited).")] = "cli",
    role: Annotated[
        list[str] | None, typer.Option(help="Check the purpose against these roles.")
    ] = None,
    hierarchy: Annotated[
        list[str] | None,
        typer.Option(help="COLUMN=FILE: an ARX hierarchy CSV for a quasi-identifier (repeat)."),
    ] = None,
    algorithm: Annotated[
        str, typer.Option(help="lattice (optimal full-domain) or mondrian (local recoding).")
    ] = "lattice",
    metric: Annotated[
        str,
        typer.Option(help="What the lattice search minimises: loss, discernibility, intensity."),
    ] = "loss",
    sensitive: Annotated[
        str, typer.Option(help="Comma-separated sensitive columns (for --l and --t).")
    ] = "",
    l_value: Annotated[
        int, typer.Option("--l", help="Each class holds ≥ l values of each sensitive column.")
    ] = 1,
    l_diversity: Annotated[str, typer.Option(help="distinct or entropy l-diversity.")] = "distinct",
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
    from tidegate.privacy.anonymize import Privacy
    from tidegate.privacy.anonymize_hierarchies import load_hierarchies, parse_declarations

    qis = [q.strip() for q in quasi_identifiers.split(",") if q.strip()]
    try:  # a bad option or hierarchy file is a usage error (exit 2), before any data moves
        files = parse_declarations(hierarchy or [])
        load_hierarchies(files)
        privacy = Privacy(
            algorithm=algorithm,
            metric=metric,
            sensitive=tuple(s.strip() for s in sensitive.split(",") if s.strip()),
            l=l_value,
            l_kind=l_diversity,
            t=t_value,
            hierarchies=files,
        )
        privacy.check(qis)
    except BadRequestError as err:
        raise typer.BadParameter(err.message) from err
    with Platform.open(project_dir) as platform:
        result = export(
            platform,
            product,
            purpose=purpose,
            k=k,
            quasi_identifiers=qis,
            out=out,
            fmt=format,
            principal=principal,
            roles=tuple(role or ()),
            max_suppression=max_suppression,
            privacy=privacy,
        )
    if json_output:
        print_json(result.as_json())
        return
    loss = result.loss
    console.print(
        f"exported {loss['rows_out']} of {loss['rows_in']} rows ({result.subjects} subjects) "
        f"of {product} for {purpose} to {out} ({format}); k={k}: {loss['classes']} classes, "
        f"average size {loss['average_class_size']}, suppressed {loss['suppressed']} "
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
