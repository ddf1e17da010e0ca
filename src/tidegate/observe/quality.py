"""Quality checks as SQL, run in DuckDB on a freshly built version before it is published.

Each check compiles (as a SQLGlot tree) to one of two shapes:

* **row checks** (not null, unique, accepted values, range, regex, length, relationship,
  custom SQL): a query returning the failing rows. Their count decides the check; up to
  `observe.failing_rows_kept` of them are copied to `quality."<product>__v<N>__<check>"`
  for inspection (`tidegate quality rows PRODUCT CHECK`), and survive the dropped build.
* **aggregate checks** (row count, freshness, distribution): a query returning one
  observed value, compared with the bounds.

A check whose SQL fails counts as failed with its error. Any failed `error` check stops
the publish (`QualityGateError`); `warn` checks only alert.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from tidegate.errors import BuildError
from tidegate.project.observe_config import (
    AcceptedValuesCheck,
    DistributionCheck,
    FreshnessCheck,
    LengthCheck,
    NotNullCheck,
    RangeCheck,
    RegexCheck,
    RelationshipCheck,
    RowCountCheck,
    SqlCheck,
    UniqueCheck,
    product_checks,
)
from tidegate.project.project import Product, Project
from tidegate.store.warehouse import BUILDS, PRODUCTS, RAW, version_table

log = logging.getLogger(__name__)
QUALITY = "quality"
DIALECT = "duckdb"


class QualityGateError(BuildError):
    """Error-severity checks failed: the version is not published."""

    code = "quality_gate_failed"


@dataclass
class CheckResult:
    name: str
    type: str
    severity: str
    column: str
    passed: bool
    expected: str
    failing_rows: int | None = None
    observed: float | None = None
    table: str | None = None
    error: str = ""

    @property
    def blocking(self) -> bool:
        return not self.passed and self.severity == "error"

    def summary(self) -> str:
        if self.error:
            return f"{self.name}: could not run ({self.error})"
        if self.failing_rows is not None:
            where = f", kept in {self.table}" if self.table else ""
            return f"{self.name}: {self.failing_rows} failing rows{where}"
        return f"{self.name}: observed {self.observed!r}, expected {self.expected}"


@dataclass
class QualityReport:
    product: str
    version: int
    results: list[CheckResult] = field(default_factory=list)

    @property
    def blocking(self) -> list[CheckResult]:
        return [r for r in self.results if r.blocking]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed and r.severity == "warn"]


def _col(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _lit(value: Any) -> exp.Expr:
    return exp.convert(value)


def quality_table(product: str, version: int, check: str) -> str:
    return f"{version_table(product, version)}__{check}"


def rewrite_tables(sql: str, project: Project, this: str, this_table: exp.Table) -> exp.Query:
    """Custom check SQL: the product itself -> the version being checked; sources -> raw;
    other products -> their live view. Unknown tables are an error."""
    tree = sqlglot.parse_one(sql, dialect=DIALECT)
    if not isinstance(tree, exp.Query):
        raise BuildError("a custom SQL check must be one SELECT query")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}

    def rewrite(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Table) or not node.name or node.name in ctes:
            return node
        alias = node.args.get("alias") or exp.TableAlias(this=exp.to_identifier(node.name))
        if node.name in (this, "this"):
            table = this_table.copy()
        elif node.name in project.sources:
            table = exp.table_(node.name, db=RAW, quoted=True)
        elif node.name in project.products:
            table = exp.table_(node.name, db=PRODUCTS, quoted=True)
        else:
            raise BuildError(f"custom check: unknown table {node.name!r}")
        table.set("alias", alias)
        return table

    result = tree.transform(rewrite)
    assert isinstance(result, exp.Query)
    return result


def failing_rows_query(
    check: Any, table: exp.Table, project: Project | None, product: str
) -> exp.Query:
    """The rows breaking a row check, as a SQLGlot query."""
    base = exp.select("*").from_(table.copy())
    if isinstance(check, NotNullCheck):
        return base.where(_col(check.column).is_(exp.null()))
    if isinstance(check, UniqueCheck):
        cols = [_col(c) for c in check.columns]
        window = exp.Window(this=exp.Count(this=exp.Star()), partition_by=cols)
        not_null = exp.and_(*[exp.Not(this=c.copy().is_(exp.null())) for c in cols])
        return base.where(not_null).qualify(exp.GT(this=window, expression=_lit(1)))
    if isinstance(check, AcceptedValuesCheck):
        column = _col(check.column)
        values = [_lit(v) for v in check.values]
        return base.where(exp.Not(this=column.copy().is_(exp.null()))).where(
            exp.Not(this=column.isin(*values))
        )
    if isinstance(check, RangeCheck):
        column = _col(check.column)
        outside: list[exp.Expr] = []
        if check.min is not None:
            outside.append(exp.LT(this=column.copy(), expression=_lit(check.min)))
        if check.max is not None:
            outside.append(exp.GT(this=column.copy(), expression=_lit(check.max)))
        return base.where(exp.or_(*outside))
    if isinstance(check, RegexCheck):
        text = exp.cast(_col(check.column), "VARCHAR")
        matches = exp.func("regexp_matches", text, _lit(check.pattern))
        return base.where(exp.Not(this=text.copy().is_(exp.null()))).where(exp.Not(this=matches))
    if isinstance(check, LengthCheck):
        length = exp.func("length", exp.cast(_col(check.column), "VARCHAR"))
        outside = []
        if check.min is not None:
            outside.append(exp.LT(this=length.copy(), expression=_lit(check.min)))
        if check.max is not None:
            outside.append(exp.GT(this=length.copy(), expression=_lit(check.max)))
        return base.where(exp.or_(*outside))
    if isinstance(check, RelationshipCheck):
        if project is not None and check.to in project.sources:
            target = exp.table_(check.to, db=RAW, quoted=True)
        elif project is None or check.to in project.products:
            target = exp.table_(check.to, db=PRODUCTS, quoted=True)
        else:
            raise BuildError(f"relationship check: unknown product or source {check.to!r}")
        target.set("alias", exp.TableAlias(this=exp.to_identifier("r")))
        own = exp.column(check.column, table="t", quoted=True)
        other = exp.column(check.target_field, table="r", quoted=True)
        exists = exp.Exists(
            this=exp.select(_lit(1)).from_(target).where(exp.EQ(this=other, expression=own))
        )
        aliased = table.copy()
        aliased.set("alias", exp.TableAlias(this=exp.to_identifier("t")))
        return (
            exp.select(exp.Column(this=exp.Star(), table=exp.to_identifier("t")))
            .from_(aliased)
            .where(exp.Not(this=own.copy().is_(exp.null())))
            .where(exp.Not(this=exists))
        )
    if isinstance(check, SqlCheck) and project is not None:
        return rewrite_tables(check.sql, project, product, table)
    raise TypeError(f"not a row check: {type(check).__name__}")


def null_percent(col: exp.Column) -> exp.Expr:
    nulls = exp.paren(exp.Sub(this=exp.Count(this=exp.Star()), expression=exp.Count(this=col)))
    total = exp.func("greatest", exp.Count(this=exp.Star()), _lit(1))
    return exp.Div(this=exp.Mul(this=_lit(100.0), expression=nulls), expression=total)


def distribution_expression(metric: str, column: str) -> exp.Expr:
    col = _col(column)
    text_length = exp.func("length", exp.cast(col.copy(), "VARCHAR"))
    expressions: dict[str, exp.Expr] = {
        "mean": exp.func("avg", col.copy()),
        "stddev": exp.func("stddev_samp", col.copy()),
        "min": exp.func("min", col.copy()),
        "max": exp.func("max", col.copy()),
        "null_percent": null_percent(col.copy()),
        "distinct_count": exp.Count(this=exp.Distinct(expressions=[col.copy()])),
        "avg_length": exp.func("avg", text_length),
    }
    return expressions[metric]


def classified_columns(product: Product) -> frozenset[str]:
    """Columns whose contract names a classification: personal data whose extremes
    (`min`, `max`) are one person's value, so never recorded as observations."""
    return frozenset(c for c, spec in product.columns.items() if spec.category)


def aggregate_query(check: Any, table: exp.Table) -> tuple[exp.Query, float | None, float | None]:
    """(query returning one observed value, lower bound, upper bound)."""
    base = exp.select().from_(table.copy())
    if isinstance(check, RowCountCheck):
        return base.select(exp.Count(this=exp.Star())), check.min, check.max
    if isinstance(check, FreshnessCheck):
        from tidegate.project.models import parse_duration

        newest = exp.func("epoch", exp.func("max", _col(check.column)))
        age = exp.Sub(this=exp.func("epoch", exp.func("now")), expression=newest)
        return base.select(age), None, parse_duration(check.max_age).total_seconds()
    if isinstance(check, DistributionCheck):
        value = exp.cast(distribution_expression(check.metric, check.column), "DOUBLE")
        return base.select(value), check.min, check.max
    raise TypeError(f"not an aggregate check: {type(check).__name__}")


AGGREGATE = (RowCountCheck, FreshnessCheck, DistributionCheck)


def _expected(check: Any) -> str:
    if isinstance(check, AGGREGATE):
        low, high = getattr(check, "min", None), getattr(check, "max", None)
        if isinstance(check, FreshnessCheck):
            return f"age <= {check.max_age}"
        return " and ".join(
            part
            for part in (
                f">= {low}" if low is not None else "",
                f"<= {high}" if high is not None else "",
            )
            if part
        )
    return "0 failing rows"


def run_checks(
    cursor: Any,
    product: Product,
    project: Project,
    version: int,
    *,
    keep_rows: int = 1000,
) -> QualityReport:
    """Run every check of `product` on `builds.<product>__v<version>` with `cursor`."""
    table = exp.table_(version_table(product.name, version), db=BUILDS, quoted=True)
    report = QualityReport(product.name, version)
    checks = product_checks(product.config)
    if checks:
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {QUALITY}")
    for check in checks:
        result = CheckResult(
            name=check.check_name,
            type=check.type,
            severity=check.severity,
            column=",".join(check.column_names),
            passed=False,
            expected=_expected(check),
        )
        try:
            if isinstance(check, AGGREGATE):
                query, low, high = aggregate_query(check, table)
                row = cursor.execute(query.sql(dialect=DIALECT)).fetchone()
                value = None if row is None or row[0] is None else float(row[0])
                # the check is decided on the value; a person's value is not recorded
                hidden = (
                    isinstance(check, DistributionCheck)
                    and check.metric in ("min", "max")
                    and check.column in classified_columns(product)
                )
                result.observed = None if hidden else value
                result.passed = (
                    value is not None
                    and (low is None or value >= low)
                    and (high is None or value <= high)
                )
            else:
                failing = failing_rows_query(check, table, project, product.name)
                sql = failing.sql(dialect=DIALECT)
                row = cursor.execute(f"SELECT count(*) FROM ({sql})").fetchone()
                result.failing_rows = int(row[0]) if row else 0
                result.passed = result.failing_rows == 0
                if not result.passed and keep_rows:
                    name = quality_table(product.name, version, check.check_name)
                    cursor.execute(
                        f'CREATE OR REPLACE TABLE {QUALITY}."{name}" AS '
                        f"SELECT * FROM ({sql}) LIMIT {int(keep_rows)}"
                    )
                    result.table = f'{QUALITY}."{name}"'
        except BuildError as err:
            result.error = err.message
        except Exception as err:  # a check's SQL that DuckDB refuses: the check failed
            result.error = str(err).split("\n")[0]
        report.results.append(result)
    return report


def prune_quality_tables(cursor: Any, product: str, keep: int) -> None:
    """Drop failing-row tables of all but the newest `keep` versions of `product`."""
    rows = cursor.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
        " AND starts_with(table_name, ?)",
        [QUALITY, f"{product}__v"],
    ).fetchall()
    by_version: dict[int, list[str]] = {}
    for (name,) in rows:
        rest = str(name)[len(product) + 3 :]
        number = rest.split("__", 1)[0]
        if number.isdigit():
            by_version.setdefault(int(number), []).append(str(name))
    for version in sorted(by_version)[:-keep] if keep else sorted(by_version):
        for name in by_version[version]:
            cursor.execute(f'DROP TABLE IF EXISTS {QUALITY}."{name}"')


def store_rows(report: QualityReport, at: float | None = None) -> list[tuple[Any, ...]]:
    """Rows for `ObserveStore.add_quality`."""
    at = time.time() if at is None else at
    return [
        (
            report.product,
            report.version,
            at,
            r.name,
            r.type,
            r.severity,
            r.column,
            int(r.passed),
            r.failing_rows,
            r.observed,
            r.expected,
            r.table,
            r.error,
        )
        for r in report.results
    ]
