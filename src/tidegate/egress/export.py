"""Anonymised exports: `tidegate export PRODUCT --purpose P --k 5 --quasi-identifiers ...`.

An export is egress like any other: the guard plans it for (principal, roles, purpose,
product), DuckDB runs the plan's `select_sql` (rows of subjects without a legal basis for
the purpose never leave the warehouse; columns get the purpose's treatments), and one
`export` audit record says who exported what, why, how many rows and subjects, with the
information loss.

Then k-anonymity (`privacy/anonymize.py`): the quasi-identifiers are generalised (by
their ARX hierarchy files, or default ladders) until every combination is shared by at
least k rows (and, for declared sensitive columns, is l-diverse / t-close), and rows
that cannot be are suppressed. The rows stay an Arrow table from DuckDB to the file.
Columns that would defeat it are not exported: the product's key and subject columns,
and every other classified (personal) column that is not a quasi-identifier (names,
emails, device ids: direct identifiers). Unclassified columns (amounts, counts, times
of operational events) are exported as the guard treats them.

Without `--role`, the export runs as an operator (`check_roles=False`, as syncs do):
the purpose must still be one the product allows, and the consent filter applies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tidegate.audit.log import AuditRecord
from tidegate.errors import BadRequestError
from tidegate.privacy.anonymize import Privacy, anonymize
from tidegate.privacy.guard import SUBJECTS_RELATION, AccessContext, AccessPlan, guard_of
from tidegate.private import private_dir, private_file

if TYPE_CHECKING:
    import pyarrow as pa

    from tidegate.platform import Platform

FORMATS = ("parquet", "csv")


@dataclass
class ExportResult:
    product: str
    purpose: str
    path: Path
    format: str
    columns: list[str]
    dropped: list[str]
    subjects: int
    loss: dict[str, Any]
    audit_seq: int

    def as_json(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "purpose": self.purpose,
            "path": str(self.path),
            "format": self.format,
            "columns": self.columns,
            "dropped": self.dropped,
            "subjects": self.subjects,
            "information_loss": self.loss,
            "audit_seq": self.audit_seq,
        }


def exported_columns(plan: AccessPlan, qis: list[str]) -> tuple[list[str], list[str]]:
    """(columns exported, columns left out as identifying)."""
    visible = [c.name for c in plan.visible_columns]
    unknown = [q for q in qis if q not in visible]
    if unknown:
        raise BadRequestError(
            f"quasi-identifier(s) {', '.join(unknown)} are not columns {plan.product!r} shows "
            f"under purpose {plan.purpose!r} (visible: {', '.join(visible)})"
        )
    identifying = {plan.key_column, plan.subject_column}
    keep, dropped = [], []
    for column in plan.visible_columns:
        if column.name in qis:
            keep.append(column.name)
        elif column.name in identifying or column.classification is not None:
            dropped.append(column.name)
        else:
            keep.append(column.name)
    return keep, dropped


SUBJECT_MARKER = "__tidegate_subject"


def guarded_table(platform: Platform, plan: AccessPlan) -> pa.Table:
    """The product's rows through the plan (SQL face, in DuckDB), each with its subject id
    under SUBJECT_MARKER (for counting; never written)."""
    from tidegate.store.warehouse import PRODUCTS

    query = plan.select_sql(f'{PRODUCTS}."{plan.product}"', with_subject=SUBJECT_MARKER)
    table: pa.Table = platform.warehouse.arrow(
        query.sql(dialect="duckdb"), **{SUBJECTS_RELATION: plan.subjects_table()}
    )
    return table


def guarded_rows(platform: Platform, plan: AccessPlan) -> list[dict[str, Any]]:
    """`guarded_table` as Python rows."""
    rows: list[dict[str, Any]] = guarded_table(platform, plan).to_pylist()
    return rows


def write_table(table: pa.Table, columns: list[str], path: Path, fmt: str) -> None:
    table = table.select(columns)
    private_dir(path.parent)
    private_file(path, create=True)  # pyarrow truncates and writes into it
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)


def export(
    platform: Platform,
    product: str,
    *,
    purpose: str,
    k: int,
    quasi_identifiers: list[str],
    out: Path,
    fmt: str = "parquet",
    principal: str = "cli",
    roles: tuple[str, ...] = (),
    max_suppression: float = 0.05,
    privacy: Privacy | None = None,
) -> ExportResult:
    """Export `product` for `purpose` through the guard, k-anonymised (and l-diverse /
    t-close for `privacy.sensitive`), audited with its information loss."""
    if fmt not in FORMATS:
        raise BadRequestError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if k < 2:
        raise BadRequestError("k must be at least 2 for an anonymised export")
    if not quasi_identifiers:
        raise BadRequestError("name the quasi-identifiers (--quasi-identifiers a,b,c)")
    if not 0 <= max_suppression <= 1:
        raise BadRequestError("max suppression is a fraction between 0 and 1")
    context = AccessContext(principal=principal, roles=roles, purpose=purpose)
    plan = guard_of(platform).plan(context, product, check_roles=bool(roles))
    privacy = privacy or Privacy()
    columns, dropped = exported_columns(plan, quasi_identifiers)
    hidden = [s for s in privacy.sensitive if s not in columns]
    if hidden:
        raise BadRequestError(
            f"sensitive column(s) {', '.join(hidden)} are not exported from {product!r} under "
            f"purpose {purpose!r} (exported: {', '.join(columns)})"
        )
    started = time.perf_counter()
    table = guarded_table(platform, plan)
    result = anonymize(table, quasi_identifiers, k, max_suppression, privacy)
    carried = _everyone(result.table.column(SUBJECT_MARKER)) if result.table.num_rows else ()
    subjects = len(carried)
    write_table(result.table, columns, out, fmt)
    loss = result.loss_report(quasi_identifiers)
    treatments = {c: t for c, t in plan.treatments().items() if c in columns}
    treatments.update({q: f"{treatments[q]}+k{k}:{result.labels[q]}" for q in quasi_identifiers})
    (seq,) = platform.audit.append(
        AuditRecord(
            action="export",
            principal=principal,
            purpose=purpose,
            product=product,
            columns=treatments,
            rows=len(result.rows),
            subject_count=subjects,
            subject_type=plan.subject_type,
            carried=carried,
            detail={
                "format": fmt,
                "file": out.name,
                "roles": list(roles),
                "dropped": dropped,
                "seconds": round(time.perf_counter() - started, 3),
                "information_loss": loss,
            },
        )
    )
    return ExportResult(product, purpose, out, fmt, columns, dropped, subjects, loss, seq)


def _everyone(column: pa.ChunkedArray) -> tuple[str, ...]:
    """The distinct subjects of the exported rows, as text (for `audit_subjects`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    distinct = pc.unique(column.drop_null())
    return tuple(pc.cast(distinct, pa.string()).to_pylist())
