"""From the guarded product to the destination's rows, as one SQLGlot tree run by DuckDB.

The guard's rewrite (row filter + column treatments) is the inner query; around it, each
destination field is a column (renamed), a constant, or a template compiled to string
concatenation (`{first_name} {last_name}` → `coalesce(first_name, '') || ' ' || …`; no
eval, only bare column names). Beside the fields the query returns the bookkeeping
columns, never sent: `__key` (destination key as text), `__hash` (DuckDB's hash of the
mapped, treated row: only mapped fields count), `__subject` and `__source_key` (product key).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from tidegate.errors import DestinationError
from tidegate.privacy.guard import AccessPlan
from tidegate.project.models import FieldSpec, SyncConfig, template_parts
from tidegate.type_families import type_family

KEY, HASH, SUBJECT, SOURCE_KEY = "__key", "__hash", "__subject", "__source_key"
BOOKKEEPING = (KEY, HASH, SUBJECT, SOURCE_KEY)
CHANGED_RELATION = "__tidegate_changed_keys"


@dataclass
class Mapping:
    key: str  # destination key field
    fields: dict[str, FieldSpec]
    columns: dict[str, str]  # destination field -> SQL type
    omitted: list[str] = field(default_factory=list)  # why fields were left out


def _dest_type(column_type: str, treatment: str) -> str:
    if treatment in {"hash", "mask"}:
        return "VARCHAR"
    if treatment == "generalize" and type_family(column_type) == "timestamp":
        return "DATE"
    return column_type


def _const_type(value: Any) -> str:
    if isinstance(value, bool):
        return "BOOLEAN"
    if isinstance(value, int):
        return "BIGINT"
    if isinstance(value, float):
        return "DOUBLE"
    return "VARCHAR"


def resolve(cfg: SyncConfig, plan: AccessPlan) -> Mapping:
    """The fields this sync sends under its purpose; fields reading a column the purpose
    drops are left out (and said so); a dropped key is an error."""
    visible = {c.name: c for c in plan.visible_columns}
    all_columns = [c.name for c in plan.columns]
    key = cfg.key or plan.key_column
    fields: dict[str, FieldSpec] = {}
    columns: dict[str, str] = {}
    omitted: list[str] = []
    for target, spec in cfg.field_specs(all_columns).items():
        hidden = [c for c in spec.sources() if c not in visible]
        if hidden:
            if not cfg.fields:  # the default "all columns" mapping: a dropped column just goes
                continue
            omitted.append(
                f"field {target!r} left out: column {hidden[0]!r} is dropped under "
                f"purpose {plan.purpose!r}"
            )
            continue
        fields[target] = spec
        if spec.column is not None:
            col = visible[spec.column]
            columns[target] = _dest_type(col.type, col.treatment.treatment)
        elif spec.template is not None:
            columns[target] = "VARCHAR"
        else:
            columns[target] = _const_type(spec.const)
    if key not in fields:
        raise DestinationError(
            f"sync {cfg.name!r}: the key {key!r} is dropped under purpose {cfg.purpose!r}; "
            "a destination cannot be keyed by a column the purpose may not see"
        )
    return Mapping(key=key, fields=fields, columns=columns, omitted=omitted)


def _field_sql(spec: FieldSpec) -> exp.Expr:
    if spec.column is not None:
        return exp.column(spec.column, table="g", quoted=True)
    if spec.template is not None:
        pieces: list[exp.Expr] = []
        for literal, name in template_parts(spec.template):
            if literal:
                pieces.append(exp.Literal.string(literal))
            if name is not None:
                value = exp.cast(exp.column(name, table="g", quoted=True), "VARCHAR")
                pieces.append(exp.func("coalesce", value, exp.Literal.string("")))
        if not pieces:
            return exp.Literal.string("")
        return exp.Concat(expressions=pieces, safe=True) if len(pieces) > 1 else pieces[0]
    return exp.convert(spec.const)


def rows_query(plan: AccessPlan, mapping: Mapping, relation: str, *, partial: bool) -> exp.Select:
    """The mapped rows with their bookkeeping columns, as a tree (DuckDB dialect).

    `partial` restricts the product to keys listed in CHANGED_RELATION(k VARCHAR)
    (filtered on the raw product key, before treatments).
    """
    inner = plan.select_sql(relation, with_subject=SUBJECT)
    raw_key = exp.cast(exp.column(plan.key_column, table="t", quoted=True), "VARCHAR")
    inner = inner.select(exp.alias_(raw_key, SOURCE_KEY, quoted=True), copy=False)
    if not plan.subject_column:
        inner = inner.select(exp.alias_(exp.Null(), SUBJECT, quoted=True), copy=False)
    if partial:
        changed = exp.select("k").from_(CHANGED_RELATION)
        inner = inner.where(
            exp.In(this=raw_key.copy(), query=exp.Subquery(this=changed)), copy=False
        )
    projections: list[exp.Expr] = [
        exp.alias_(_field_sql(spec), target, quoted=True) for target, spec in mapping.fields.items()
    ]
    # DuckDB's 64-bit hash of the struct of mapped fields: a tenth of the cost of an md5
    # over its JSON text. It compares one key's row with the same key's previous row, so
    # 64 bits leave a missed change at 2**-64. A DuckDB release that changed `hash` would
    # make every row look changed: resent once (idempotent) in upsert, update and mirror
    # modes; insert mode would report them as changed-but-not-updated on every run.
    digest = exp.func(
        "to_hex",
        exp.func(
            "hash",
            exp.Struct(
                expressions=[
                    exp.PropertyEQ(
                        this=exp.to_identifier(target, quoted=True), expression=_field_sql(spec)
                    )
                    for target, spec in mapping.fields.items()
                ]
            ),
        ),
    )
    key_sql = exp.cast(_field_sql(mapping.fields[mapping.key]), "VARCHAR")
    projections += [
        exp.alias_(key_sql, KEY, quoted=True),
        exp.alias_(digest, HASH, quoted=True),
        exp.alias_(exp.column(SUBJECT, table="g", quoted=True), SUBJECT, quoted=True),
        exp.alias_(exp.column(SOURCE_KEY, table="g", quoted=True), SOURCE_KEY, quoted=True),
    ]
    return exp.select(*projections).from_(exp.Subquery(this=inner, alias="g"))


def key_is_unique(plan: AccessPlan, mapping: Mapping) -> bool:
    """Whether the destination key is the product's own key, sent in clear as an integer
    or a string: then it is non-null and unique in every row (a build checks this before
    a version goes live, and the guard only drops rows), and its text too, so the diff
    need not count distinct keys to know it."""
    spec = mapping.fields[mapping.key]
    if spec.column is None or spec.column != plan.key_column:
        return False
    column = next((c for c in plan.visible_columns if c.name == spec.column), None)
    return (
        column is not None
        and column.treatment.treatment == "clear"
        and type_family(column.type) in {"integer", "string"}
    )


def typed_key(key: str, mapping: Mapping) -> Any:
    """A stored (text) key back as the value the destination's key column holds."""
    if type_family(mapping.columns[mapping.key]) == "integer":
        try:
            return int(key)
        except ValueError:
            return key
    return key
