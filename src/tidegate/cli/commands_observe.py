"""Observability commands: lineage, quality, observe, contract."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tidegate.cli.options import JsonOption
from tidegate.console import console, print_json, table
from tidegate.errors import NotFoundError, TidegateError

if TYPE_CHECKING:
    from tidegate.project.models import ProductConfig
    from tidegate.project.project import Project

ProjectDir = Annotated[Path, typer.Option("--project", "-p", help="The project folder.")]
SPARKS = "▁▂▃▄▅▆▇█"

quality_app = typer.Typer(help="Quality check results and the failing rows they kept.")
contract_app = typer.Typer(help="Contracts as Open Data Contract Standard v3; breaking changes.")


def register(app: typer.Typer) -> None:
    app.command("lineage")(lineage)
    app.command("observe")(observe)
    app.add_typer(quality_app, name="quality")
    app.add_typer(contract_app, name="contract")


def _project(directory: Path) -> Project:
    from tidegate.project import load_project

    return load_project(directory)


def _product(project: Project, name: str) -> None:
    if name not in project.products:
        known = ", ".join(sorted(project.products)) or "none"
        raise NotFoundError(f"no product named {name!r} (known: {known})")


# ---------------------------------------------------------------- lineage


def lineage(
    target: Annotated[str, typer.Argument(help="PRODUCT or PRODUCT.COLUMN (or a source).")],
    project_dir: ProjectDir = Path("."),
    output: Annotated[str, typer.Option("--format", help="text, mermaid, dot or json.")] = "text",
    json_output: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Column lineage upstream (sources, products) and downstream (products, syncs, API)."""
    from tidegate.observe.lineage import build_graph, to_dot, to_mermaid

    if json_output:
        output = "json"

    if output not in ("text", "mermaid", "dot", "json"):
        raise TidegateError(f"--format {output!r}: use text, mermaid, dot or json")
    project = _project(project_dir)
    graph = build_graph(project)
    starts = [target] if "." in target else graph.nodes_of(target)
    if not starts or starts[0] not in graph.upstream:
        raise NotFoundError(f"{target!r} is not a product, source or column of this project")
    up: dict[str, dict[str, set[str]]] = {}
    down: dict[str, dict[str, set[str]]] = {}
    for start in starts:
        for child, parents in graph.walk(start, "up").items():
            up.setdefault(child, {}).update(parents)
        for child, parents in graph.walk(start, "down").items():
            down.setdefault(child, {}).update(parents)
    edges = {child: dict(parents) for child, parents in up.items()}
    for child, parents in down.items():
        edges.setdefault(child, {}).update(parents)
    if output == "mermaid":
        typer.echo(to_mermaid(edges, graph.labels), nl=False)
    elif output == "dot":
        typer.echo(to_dot(edges, graph.labels), nl=False)
    elif output == "json":
        nodes = {n for child, parents in edges.items() for n in (child, *parents)}
        print_json(
            {
                "target": target,
                "upstream": _edge_list(up),
                "downstream": _edge_list(down),
                # where a sync field really goes (file path, table, server) and how it is
                # treated under the sync's purpose, e.g. "file:out/c360.csv.email (hashed)"
                "labels": {n: graph.labels[n] for n in sorted(nodes) if n in graph.labels},
            }
        )
    else:
        for start in starts:
            console.print(f"[bold]{start}[/bold]")
            _print_tree(graph.upstream, start, "↑ ", set(), graph.labels)
            _print_tree(graph.downstream, start, "↓ ", set(), graph.labels)


def _edge_list(edges: dict[str, dict[str, set[str]]]) -> list[dict[str, Any]]:
    return [
        {"from": parent, "to": child, "kinds": sorted(kinds)}
        for child, parents in sorted(edges.items())
        for parent, kinds in sorted(parents.items())
    ]


def _print_tree(
    graph: dict[str, dict[str, set[str]]],
    node: str,
    prefix: str,
    seen: set[str],
    labels: dict[str, str],
    depth: int = 1,
) -> None:
    for other, kinds in sorted(graph.get(node, {}).items()):
        label = labels.get(other, other)
        console.print(f"{'  ' * depth}{prefix}{label}  [dim]({', '.join(sorted(kinds))})[/dim]")
        if other not in seen:
            seen.add(other)
            _print_tree(graph, other, prefix, seen, labels, depth + 1)


# ---------------------------------------------------------------- quality


@quality_app.command("show")
def quality_show(
    product: Annotated[str, typer.Argument(help="The product.")],
    check: Annotated[str | None, typer.Argument(help="Show this check's failing rows.")] = None,
    project_dir: ProjectDir = Path("."),
    version: Annotated[int | None, typer.Option(help="Default: the latest checked.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Failing rows to show (a page).")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="Failing rows to skip first.")] = 0,
    json_output: JsonOption = False,
) -> None:
    """The check results of a product's latest build, or one check's failing rows, a page
    at a time (`--limit`, `--offset`); always says which rows of how many it shows."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        _product(platform.project, product)
        with platform.meta.observations as store:
            results = store.quality(product, version)
        if not results:
            raise NotFoundError(f"no quality checks have run on {product!r} yet")
        if check is None:
            if json_output:
                print_json(results)
                return
            console.print(
                table(
                    f"{product} v{results[0]['version']}: quality checks",
                    ["check", "severity", "result", "failing rows", "observed", "expected"],
                    [
                        [
                            r["check_name"],
                            r["severity"],
                            "pass" if r["passed"] else ("error" if r["error"] else "FAIL"),
                            "" if r["failing_rows"] is None else r["failing_rows"],
                            r["error"] or ("" if r["observed"] is None else f"{r['observed']:.4g}"),
                            r["expected"],
                        ]
                        for r in results
                    ],
                )
            )
            return
        found = next((r for r in results if r["check_name"] == check), None)
        if found is None:
            names = ", ".join(r["check_name"] for r in results)
            raise NotFoundError(f"no check {check!r} on {product!r} (checks: {names})")
        if not found["table_name"]:
            raise NotFoundError(f"check {check!r} kept no failing rows (it passed or is aggregate)")
        table_name = found["table_name"]
        try:
            counted = platform.warehouse.arrow(f"SELECT count(*) AS n FROM {table_name}")
            kept = int(counted.to_pylist()[0]["n"])
            rows = platform.warehouse.arrow(
                f"SELECT * FROM {table_name} ORDER BY rowid LIMIT {int(limit)} OFFSET {int(offset)}"
            ).to_pylist()
        except Exception as err:
            raise TidegateError(f"cannot read {table_name}: {err}") from None
    page = FailingPage(found["failing_rows"] or 0, kept, offset, rows)
    if json_output:
        print_json(page.as_json(check, found["version"], limit))
        return
    columns = list(rows[0]) if rows else []
    console.print(
        table(
            f"{product} v{found['version']}: {check}, {page.failing:,} failing rows",
            columns,
            [[row[c] for c in columns] for row in rows],
        )
    )
    for line in page.notes(limit):
        console.print(line, markup=False)


class FailingPage:
    """One page of a check's kept failing rows, and how to say where it is."""

    def __init__(self, failing: int, kept: int, offset: int, rows: list[dict[str, Any]]) -> None:
        self.failing, self.kept, self.offset, self.rows = failing, kept, offset, rows

    def as_json(self, check: str, version: int, limit: int) -> dict[str, Any]:
        return {
            "check": check,
            "version": version,
            "failing_rows": self.failing,
            "kept": self.kept,
            "offset": self.offset,
            "limit": limit,
            "rows": self.rows,
            "next_offset": self.offset + len(self.rows) if self._more() else None,
        }

    def _more(self) -> bool:
        return self.offset + len(self.rows) < self.kept

    def notes(self, limit: int) -> list[str]:
        if self.rows:
            first, last = self.offset + 1, self.offset + len(self.rows)
            lines = [f"showing rows {first:,}-{last:,} of {self.kept:,} kept"]
        else:
            lines = [f"showing 0 of {self.kept:,} kept (--offset {self.offset:,} is past the end)"]
        if self.failing > self.kept:
            lines.append(
                f"only the first {self.kept:,} of {self.failing:,} failing rows were kept "
                "(observe.failing_rows_kept in tidegate.yml)"
            )
        if self._more():
            lines.append(f"next page: --offset {self.offset + len(self.rows)} --limit {limit}")
        return lines


# ---------------------------------------------------------------- observe


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[min(7, int((v - low) / span * 7.999))] for v in values)


def observe(
    product: Annotated[str, typer.Argument(help="The product.")],
    project_dir: ProjectDir = Path("."),
    plot: Annotated[
        str | None, typer.Option(help="Plot this metric (e.g. volume.rows, null_percent).")
    ] = None,
    column: Annotated[str, typer.Option(help="The column of a per-column metric.")] = "",
    out: Annotated[Path | None, typer.Option(help="Write the plot here (.png or .svg).")] = None,
    last: Annotated[int, typer.Option(help="Points per sparkline.")] = 40,
    json_output: JsonOption = False,
) -> None:
    """The five pillars of a product over its builds, as small charts; or plot one metric."""
    from tidegate.platform import Platform

    with Platform.open(project_dir) as platform:
        _product(platform.project, product)
        with platform.meta.observations as store:
            names = store.series_names(product)
            series = {(m, c): store.series(product, m, c, status=None) for m, c in names}
            schema = store.last_schema(product)
        graph_lines = _lineage_summary(platform.project, product)
    if not names:
        raise NotFoundError(f"no observations of {product!r} yet: build it first")
    if plot is not None:
        points = series.get((plot, column))
        if not points:
            known = ", ".join(sorted({m for m, _ in names}))
            raise NotFoundError(f"no series {plot!r} for column {column!r} (metrics: {known})")
        target = out or Path(f"{product}-{plot}{'-' + column if column else ''}.png")
        write_plot(points, f"{product} {column + '.' if column else ''}{plot}", target)
        console.print(f"wrote {target}")
        return
    if json_output:
        print_json(
            {
                f"{c + '.' if c else ''}{m}": [[p.at, p.value] for p in pts]
                for (m, c), pts in series.items()
            }
        )
        return
    pillars: dict[str, Callable[[str, str], bool]] = {
        "freshness": lambda m, c: m.startswith("freshness."),
        "volume": lambda m, c: m.startswith("volume."),
        "schema": lambda m, c: m.startswith("schema."),
        "distribution": lambda m, c: bool(c),
    }
    for pillar, wanted in pillars.items():
        rows = []
        for (metric, col), points in sorted(series.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            if not wanted(metric, col) or not points:
                continue
            values = [p.value for p in points[-last:]]
            rows.append(
                [f"{col + '.' if col else ''}{metric}", f"{values[-1]:.4g}", sparkline(values)]
            )
        if rows:
            console.print(table(f"{product}: {pillar}", ["metric", "last", "history"], rows))
    if schema is not None:
        console.print(f"schema fingerprint {schema.fingerprint}: {len(schema.columns)} columns")
    console.print("lineage: " + "; ".join(graph_lines))


def _lineage_summary(project: Project, product: str) -> list[str]:
    from tidegate.observe.lineage import build_graph

    graph = build_graph(project)
    ups = set()
    downs = set()
    for node in graph.nodes_of(product):
        ups |= {p.rsplit(".", 1)[0] for p in graph.upstream.get(node, {})}
        downs |= {c.rsplit(".", 1)[0] for c in graph.downstream.get(node, {})}
    return [
        f"reads {', '.join(sorted(ups)) or 'nothing'}",
        f"feeds {', '.join(sorted(downs)) or 'nothing'}",
    ]


def write_plot(points: list[Any], title: str, target: Path) -> None:
    from tidegate.extras import require

    matplotlib = require("plot", "matplotlib")
    if target.suffix.lower() not in (".png", ".svg"):
        raise TidegateError(f"--out {target}: write a .png or an .svg")
    matplotlib.use("Agg")  # no display needed
    from datetime import UTC, datetime

    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 3))
    moments: Any = [datetime.fromtimestamp(p.at, UTC) for p in points]
    axes.plot(moments, [p.value for p in points])
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    plt.close(figure)


# ---------------------------------------------------------------- contracts


def _load_contract(path: Path) -> ProductConfig:
    """A product YAML file or an ODCS document -> ProductConfig."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise TidegateError(f"cannot read {path}: {err}") from None
    return _contract_from_data(data, str(path))


def _contract_from_data(data: Any, where: str) -> ProductConfig:
    from pydantic import ValidationError

    from tidegate.observe.contracts import import_contract
    from tidegate.project.models import ProductConfig

    if not isinstance(data, dict):
        raise TidegateError(f"{where}: not a product contract")
    try:
        if data.get("kind") == "DataContract":
            data = import_contract(data)
        config = ProductConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        place = ".".join(str(p) for p in first["loc"])
        raise TidegateError(f"{where}: {place}: {first['msg']}") from None
    return config


@contract_app.command("export")
def contract_export(
    product: Annotated[str, typer.Argument(help="The product.")],
    project_dir: ProjectDir = Path("."),
    out: Annotated[Path | None, typer.Option(help="Write here (default: stdout).")] = None,
) -> None:
    """Write a product's contract as an ODCS v3 YAML document."""
    import yaml

    from tidegate.observe.contracts import export_contract

    project = _project(project_dir)
    _product(project, product)
    entry = project.products[product]
    text = yaml.safe_dump(
        export_contract(entry.config, project.name, entry.sql), sort_keys=False, allow_unicode=True
    )
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


@contract_app.command("import")
def contract_import(
    path: Annotated[Path, typer.Argument(help="An ODCS v3 YAML document.")],
    out: Annotated[
        Path | None, typer.Option(help="Product YAML to write (default: stdout).")
    ] = None,
) -> None:
    """Turn an ODCS v3 contract into a tidegate product YAML file."""
    import yaml

    from tidegate.observe.contracts import import_contract

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise TidegateError(f"cannot read {path}: {err}") from None
    if not isinstance(document, dict) or document.get("kind") != "DataContract":
        raise TidegateError(f"{path}: not an ODCS data contract (kind: DataContract)")
    try:
        data = import_contract(document)
    except ValueError as err:
        raise TidegateError(f"{path}: {str(err).splitlines()[0]}") from None
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


@contract_app.command("diff")
def contract_diff(
    old: Annotated[Path, typer.Argument(help="Old contract: product YAML or ODCS.")],
    new: Annotated[Path, typer.Argument(help="New contract: product YAML or ODCS.")],
    project_dir: Annotated[
        Path | None, typer.Option("--project", "-p", help="Judge classifications by its policy.")
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Classify every change between two contracts as breaking or not (exit 1 if breaking)."""
    from tidegate.observe.contracts import diff

    policy = _project(project_dir).policy if project_dir else None
    changes = diff(_load_contract(old), _load_contract(new), policy)
    if json_output:
        print_json([c.__dict__ for c in changes])
    else:
        for change in changes:
            style = "red" if change.breaking else "green"
            console.print(f"[{style}]{change}[/{style}]", soft_wrap=True)
        if not changes:
            console.print("no changes")
    if any(c.breaking for c in changes):
        raise typer.Exit(1)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )


@contract_app.command("verify")
def contract_verify(
    against: Annotated[str, typer.Option("--against", help="Git ref of the old contracts.")],
    project_dir: ProjectDir = Path("."),
    json_output: JsonOption = False,
) -> None:
    """Fail when a product's contract breaks against REF without a `version:` bump."""
    import yaml

    from tidegate.observe.contracts import diff, needs_version_bump

    project = _project(project_dir)
    top = _git(project.root, "rev-parse", "--show-toplevel")
    if top.returncode != 0:
        raise TidegateError(f"{project.root} is not in a git repository: {top.stderr.strip()}")
    root = Path(top.stdout.strip())
    folder = (project.root / "products").resolve().relative_to(root.resolve())
    listing = _git(root, "ls-tree", "-r", "--name-only", against, "--", str(folder))
    if listing.returncode != 0:
        raise TidegateError(f"cannot read {against!r}: {listing.stderr.strip()}")
    old: dict[str, ProductConfig] = {}  # by product name
    for name in listing.stdout.split():
        if not name.endswith((".yml", ".yaml")):
            continue
        shown = _git(root, "show", f"{against}:{name}")
        data = yaml.safe_load(shown.stdout) if shown.returncode == 0 else None
        config = _contract_from_data(data, f"{against}:{name}")
        old[config.name] = config
    failures: list[str] = []
    for name, previous in sorted(old.items()):
        current = project.products.get(name)
        if current is None:
            failures.append(f"{name}: product removed (consumers break)")
            continue
        changes = diff(previous, current.config, project.policy)
        if needs_version_bump(previous, current.config, changes):
            breaking = "; ".join(f"{c.kind} {c.subject}" for c in changes if c.breaking)
            failures.append(
                f"{name}: breaking changes without a version bump "
                f"(version {previous.version or 'unset'}): {breaking}"
            )
    if json_output:
        print_json({"against": against, "checked": len(old), "failures": failures})
        if failures:
            raise typer.Exit(1)
        return
    if failures:
        raise TidegateError(
            f"contracts break against {against}:\n" + "\n".join(f"  {f}" for f in failures)
        )
    console.print(
        f"[green]✓[/green] {len(old)} contracts checked against {against}: none breaks without "
        "a version bump"
    )
