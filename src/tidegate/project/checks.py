"""Cross-file checks: names resolve, SQL parses and returns what the contract declares.

Each check returns `Problem`s pinned to the line a person must edit: a SQL syntax error
points into the `.sql` file, an undeclared purpose points at its entry in the product's
`purposes:` list, a missing column points at the column's entry under `columns:`.
"""

from __future__ import annotations

import graphlib

import sqlglot
from sqlglot import exp
from sqlglot.errors import OptimizeError, ParseError, SqlglotError
from sqlglot.optimizer.qualify import qualify

from tidegate.errors import Problem
from tidegate.project.models import NOT_PERSONAL
from tidegate.project.project import Product, Project
from tidegate.project.subjects import check_lookups

DIALECT = "duckdb"


def check_project(project: Project, *, require_classified: bool = True) -> list[Problem]:
    """Every cross-file check; `require_classified=False` only for `tidegate classify`,
    which must load a project whose columns it is about to classify."""
    problems: list[Problem] = []
    problems += _check_name_collisions(project)
    problems += _check_policy(project)
    parsed = {}
    for product in project.products.values():
        tree, found = _parse_product_sql(product, project)
        problems += found
        if tree is not None:
            parsed[product.name] = tree
    problems += _check_cycles(project)
    if require_classified:
        problems += check_classified(project)
    if not problems:
        for name in project.build_order():
            problems += _check_output_columns(project.products[name], parsed[name], project)
    problems += _check_syncs(project)
    problems += _check_cdc_store(project)
    problems += _check_taxonomy(project)
    problems += check_lookups(project)
    from tidegate.project.reality import check_relationships

    problems += check_relationships(project)
    return problems


def _check_cdc_store(project: Project) -> list[Problem]:
    """`cdc: logical` applies row changes to the warehouse's raw tables in place; the
    Spark store keeps immutable Parquet versions and cannot, so it is refused here, at
    validate time, rather than failing inside `tidegate run`."""
    store = project.config.backends.store.type
    if store == "duckdb":
        return []
    from tidegate.project.project import cdc_sources

    return [
        project.sources[name].doc.problem(
            ("cdc",),
            f"`cdc: logical` needs the duckdb store (this project's store is {store!r}): "
            "stream the table through Debezium into a Kafka topic instead, or build "
            "from the table with `cdc` removed",
        )
        for name in cdc_sources(project)
    ]


def _check_taxonomy(project: Project) -> list[Problem]:
    """Classifications and data uses outside the taxonomy (see project/taxonomy.py)."""
    from tidegate.project.taxonomy import check_taxonomy

    return check_taxonomy(project)[0]


def check_classified(project: Project) -> list[Problem]:
    """Fail closed (issue 13): a product column without a classification would leave in
    clear under every purpose, whatever it holds. Each must name its data category or
    say `classification: none`; the problem suggests what `tidegate classify` would (the
    column's upstream classification when the SQL passes a same-named column through,
    else a guess from its name)."""
    from tidegate.project.taxonomy import name_hint

    problems: list[Problem] = []
    for product in project.products.values():
        for column, spec in product.columns.items():
            if spec.classification is not None:
                continue
            upstream = _upstream_classification(project, product, column)
            hint = upstream[0] if upstream else name_hint(column)
            if hint == NOT_PERSONAL:
                advice = (
                    f"add `classification: none` (`tidegate classify {product.name}` suggests "
                    f"it as {upstream[1] if upstream else ''}, which holds no personal data), "
                    "or the data category of what it holds"
                )
            elif hint is not None:
                why = f"as {upstream[1]}" if upstream else "from its name"
                advice = (
                    f"add `classification: {hint}` (`tidegate classify {product.name}` "
                    f"suggests it {why}), or `classification: none` if it holds no personal "
                    "data"
                )
            else:
                advice = (
                    f"add its data category (`tidegate classify {product.name}` suggests one "
                    "from its values), or `classification: none` if it holds no personal data"
                )
            problems.append(
                product.doc.problem(
                    ("columns", column),
                    f"product column {product.name}.{column} has no classification; {advice}",
                )
            )
    return problems


def _upstream_classification(
    project: Project, product: Product, column: str
) -> tuple[str, str] | None:
    """(classification, "where") of a same-named column in a relation the SQL reads."""
    for name in sorted(product.depends_on):
        item = project.sources.get(name) or project.products.get(name)
        spec = item.columns.get(column) if item is not None else None
        if spec is not None and spec.classification is not None:
            return spec.classification, f"{name}.{column}"
    return None


def _check_name_collisions(project: Project) -> list[Problem]:
    return [
        product.doc.problem(
            ("name",),
            f"product {name!r} has the same name as a source ({project.sources[name].doc.display})"
            "; SQL could not tell them apart",
        )
        for name, product in project.products.items()
        if name in project.sources
    ]


def _check_policy(project: Project) -> list[Problem]:
    policy = project.policy
    problems: list[Problem] = []
    for product in project.products.values():
        for index, purpose in enumerate(product.config.purposes):
            if purpose not in policy.purposes:
                problems.append(
                    product.doc.problem(
                        ("purposes", index),
                        f"purpose {purpose!r} is not defined in policies/ "
                        f"(defined: {', '.join(sorted(policy.purposes)) or 'none'})",
                    )
                )
    for role_name, role in policy.roles.items():
        doc, base = policy.origins[("role", role_name)]
        for index, purpose in enumerate(role.purposes):
            if purpose not in policy.purposes:
                problems.append(
                    doc.problem(
                        (*base, "purposes", index),
                        f"role {role_name!r} names undefined purpose {purpose!r}",
                    )
                )
        for index, product_name in enumerate(role.products):
            if product_name != "*" and product_name not in project.products:
                problems.append(
                    doc.problem(
                        (*base, "products", index),
                        f"role {role_name!r} names unknown product {product_name!r}",
                    )
                )
    for purpose in policy.treatments:
        if purpose != "*" and purpose not in policy.purposes:
            doc, base = policy.origins[("treatments", purpose)]
            problems.append(
                doc.problem(base, f"treatments given for undefined purpose {purpose!r}")
            )
    return problems


def _parse_product_sql(
    product: Product, project: Project
) -> tuple[exp.Query | None, list[Problem]]:
    offset = product.sql_first_line - 1
    try:
        statements = sqlglot.parse(product.sql, dialect=DIALECT)
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        line = int(first.get("line") or 1) + offset
        description = str(first.get("description") or err).split("\n")[0]
        return None, [Problem(product.sql_path, line, "sql", f"SQL syntax error: {description}")]
    except SqlglotError as err:
        return None, [Problem(product.sql_path, product.sql_first_line, "sql", f"SQL error: {err}")]
    trees = [s for s in statements if s is not None]
    if len(trees) != 1 or not isinstance(trees[0], exp.Query):
        return None, [
            Problem(
                product.sql_path,
                product.sql_first_line,
                "sql",
                "a product's SQL must be exactly one SELECT query",
            )
        ]
    tree = trees[0]
    problems: list[Problem] = []
    known = project.relation_names()
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        name = table.name
        if not name or name in ctes:
            continue
        line = _line_of(table) + offset
        if table.args.get("db") or table.args.get("catalog"):
            problems.append(
                Problem(
                    product.sql_path,
                    line,
                    "sql",
                    f"{table.sql(dialect=DIALECT)}: refer to sources and products by bare name",
                )
            )
        elif name not in known:
            problems.append(
                Problem(
                    product.sql_path,
                    line,
                    "sql",
                    f"unknown table {name!r}: not a source or product of this project",
                )
            )
        else:
            product.depends_on.add(name)
    return tree, problems


def _line_of(node: exp.Expression) -> int:
    for candidate in (node, node.this if isinstance(node.this, exp.Expression) else None):
        if candidate is not None and candidate.meta.get("line"):
            return int(candidate.meta["line"])
    return 1


def _check_cycles(project: Project) -> list[Problem]:
    graph = {
        name: {d for d in product.depends_on if d in project.products}
        for name, product in project.products.items()
    }
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        cycle: list[str] = list(err.args[1])
        first = project.products[cycle[0]]
        return [
            first.doc.problem(
                ("sql_file",) if first.config.sql_file else ("sql",),
                "products depend on each other in a cycle: " + " -> ".join(cycle),
            )
        ]
    return []


def relation_schema(project: Project) -> dict[str, object]:
    schema: dict[str, object] = {}
    for name, source in project.sources.items():
        schema[name] = {col: spec.type for col, spec in source.columns.items()}
    for name, product in project.products.items():
        schema[name] = {col: spec.type for col, spec in product.columns.items()}
    return schema


def output_columns(tree: exp.Query, project: Project) -> list[str]:
    qualified = qualify(
        tree.copy(),
        schema=relation_schema(project),
        dialect=DIALECT,
        validate_qualify_columns=True,
        quote_identifiers=False,
    )
    assert isinstance(qualified, exp.Query)
    return list(qualified.named_selects)


def _check_output_columns(product: Product, tree: exp.Query, project: Project) -> list[Problem]:
    try:
        returned = output_columns(tree, project)
    except (OptimizeError, SqlglotError) as err:
        message = str(err).split("\n")[0]
        return [Problem(product.sql_path, product.sql_first_line, "sql", f"SQL error: {message}")]
    problems: list[Problem] = []
    declared = list(product.columns)
    for column in declared:
        if column not in returned:
            problems.append(
                product.doc.problem(
                    ("columns", column),
                    f"declared column {column!r} is not returned by the SQL "
                    f"(it returns: {', '.join(returned)})",
                )
            )
    for column in returned:
        if column not in declared:
            problems.append(
                product.doc.problem(
                    ("columns",),
                    f"the SQL returns column {column!r}, which the contract does not declare",
                )
            )
    if len(set(returned)) != len(returned):
        problems.append(
            Problem(
                product.sql_path, product.sql_first_line, "sql", "the SQL returns a column twice"
            )
        )
    return problems


def _check_syncs(project: Project) -> list[Problem]:
    problems: list[Problem] = []
    policy = project.policy
    for sync in project.syncs.values():
        cfg = sync.config
        product = project.products.get(cfg.product)
        if product is None:
            problems.append(sync.doc.problem(("product",), f"unknown product {cfg.product!r}"))
            continue
        if cfg.purpose not in policy.purposes:
            problems.append(sync.doc.problem(("purpose",), f"undefined purpose {cfg.purpose!r}"))
        elif cfg.purpose not in product.config.purposes:
            problems.append(
                sync.doc.problem(
                    ("purpose",),
                    f"product {cfg.product!r} does not allow purpose {cfg.purpose!r} "
                    f"(allowed: {', '.join(product.config.purposes)})",
                )
            )
        mapped = cfg.field_specs(list(product.columns))
        for target, spec in mapped.items():
            for column in spec.sources():
                if column not in product.columns:
                    problems.append(
                        sync.doc.problem(
                            ("fields", target),
                            f"field {target!r} maps from {column!r}, "
                            f"not a column of {cfg.product!r}",
                        )
                    )
        key = cfg.key or product.config.key
        if key not in mapped:
            problems.append(
                sync.doc.problem(
                    ("key",) if cfg.key else ("fields",),
                    f"destination key {key!r} is not among the synced fields",
                )
            )
        elif mapped[key].kind == "const":
            problems.append(
                sync.doc.problem(("fields", key), f"destination key {key!r} cannot be a constant")
            )
    return problems
