"""Column treatments, each defined once with two faces: a SQL rewrite and a value function.

The SQL face (a SQLGlot expression) runs inside DuckDB for syncs and exports; the value
face runs on rows read from the online store for serving. Both must agree exactly;
`tests/privacy/test_treatment_equivalence.py` proves it on generated data.

* clear: the value as it is.
* mask: strings keep the first `keep` (default 1) characters then `***`; an email keeps
  its `@domain`. Numbers and dates become NULL.
* hash: HMAC-SHA256 (hex) of the value as text, with a key per purpose. The text is
  DuckDB's `CAST(x AS VARCHAR)`; numbers of the float family (REAL and DECIMAL too) are
  first made a DOUBLE, in shortest round-trip form (Python's `repr`; every NaN `nan`);
  timestamps are `YYYY-MM-DD HH:MM:SS[.ffffff without trailing zeros]`, those with a
  time zone converted to UTC with a `+00` suffix.
* generalize: strings keep their first `keep` (default 3) characters; numbers become
  floor(x / step) * step computed in double precision (infinities and NaN stay as they
  are); for integer columns that bucket is floored to an integer, and a bucket outside
  BIGINT's range becomes NULL rather than failing the whole query; dates and timestamps
  become the first day of their month (or year, with `granularity: year`), timestamps
  with time zone taken in UTC.
* drop: the column is removed.

The SQL face assumes the DuckDB session time zone is UTC (the warehouse sets it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from tidegate.project.models import TreatmentSpec
from tidegate.type_families import type_family

BLOCK = 64
DEFAULT_MASK_KEEP = 1
DEFAULT_GENERALIZE_KEEP = 3
DEFAULT_STEP = 10.0
BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class HashKey:
    """The per-purpose HMAC key, pre-padded into the inner and outer pads SQL needs."""

    key: bytes = field(repr=False)  # never in a log line or traceback

    @property
    def inner_pad(self) -> bytes:
        return bytes(b ^ 0x36 for b in self._block())

    @property
    def outer_pad(self) -> bytes:
        return bytes(b ^ 0x5C for b in self._block())

    def _block(self) -> bytes:
        key = self.key if len(self.key) <= BLOCK else hashlib.sha256(self.key).digest()
        return key.ljust(BLOCK, b"\0")

    def hmac_hex(self, text: str) -> str:
        return hmac.new(self.key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def purpose_key(master: bytes, purpose: str) -> HashKey:
    """Stable within a purpose (analysts can join), unlinkable across purposes."""
    return HashKey(hmac.new(master, f"tidegate/purpose/{purpose}".encode(), "sha256").digest())


# ------------------------------------------------------------------ value face


def _utc(value: dt.datetime) -> dt.datetime:
    """Aware timestamps in UTC, as DuckDB sees TIMESTAMPTZ in a UTC session."""
    return value.astimezone(dt.UTC) if value.utcoffset() is not None else value


def as_text(value: Any) -> str:
    """The text DuckDB's CAST(x AS VARCHAR) gives for the types we hash."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        aware = value.utcoffset() is not None
        moment = _utc(value)
        text = moment.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
        if moment.microsecond:
            text += "." + f"{moment.microsecond:06d}".rstrip("0")
        return text + ("+00" if aware else "")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


#: one column's value face with its treatment, type and key bound: value -> treated value
ValueTreatment = Callable[[Any], Any]


def apply_value(spec: TreatmentSpec, value: Any, column_type: str, key: HashKey | None) -> Any:
    """The treated value; callers drop `drop` columns before calling."""
    if value is None or spec.treatment == "clear":
        return value
    return value_treatment(spec, column_type, key)(value)


def value_treatment(spec: TreatmentSpec, column_type: str, key: HashKey | None) -> ValueTreatment:
    """`apply_value` for one column, decided once: the function its non-null values go
    through (None stays None; `apply_value` is this, called per value).

    Why: serving treats a column's values row after row; deciding the treatment, the
    type family and the treatment's settings once per column, not once per value, took
    a third of a 100-key lookup's treating time."""
    kind = spec.treatment
    if kind == "clear":
        return _same
    family = type_family(column_type)
    if kind == "mask":
        if family != "string":
            return _null
        keep = DEFAULT_MASK_KEEP if spec.keep is None else spec.keep

        def mask(value: Any) -> Any:
            if value is None:
                return None
            text = str(value)
            at = text.find("@")
            return text[:keep] + "***" + (text[at:] if at >= 0 else "")

        return mask
    if kind == "hash":
        as_float = family == "float"

        def hash_(value: Any) -> Any:
            if value is None:
                return None
            if key is None:
                raise ValueError("hash treatment needs a key")
            return key.hmac_hex(as_text(float(value) if as_float else value))

        return hash_
    if kind == "generalize":
        return _generalize(spec, family)

    def unknown(value: Any) -> Any:
        if value is None:
            return None
        raise ValueError(f"unknown treatment {kind!r}")

    return unknown


def _generalize(spec: TreatmentSpec, family: str) -> ValueTreatment:
    if family == "string":
        keep = DEFAULT_GENERALIZE_KEEP if spec.keep is None else spec.keep
        return lambda value: None if value is None else str(value)[:keep]
    if family in {"integer", "float"}:
        step = spec.step or DEFAULT_STEP
        as_float = family == "float"

        def bucket_of(value: Any) -> Any:
            if value is None:
                return None
            bucket = _floor(float(value) / step) * step
            if as_float:
                return bucket
            if not math.isfinite(bucket):
                return None
            whole = math.floor(bucket)
            return whole if BIGINT_MIN <= whole <= BIGINT_MAX else None

        return bucket_of
    if family in {"date", "timestamp"}:
        by_year = spec.granularity == "year"

        def first_day(value: Any) -> Any:
            if value is None:
                return None
            day = _utc(value).date() if isinstance(value, dt.datetime) else value
            return dt.date(day.year, 1, 1) if by_year else dt.date(day.year, day.month, 1)

        return first_day
    return _null


def _same(value: Any) -> Any:
    return value


def _null(value: Any) -> Any:
    return None


def _floor(x: float) -> float:
    """C's (and DuckDB's) floor on a double: infinities, NaN and -0.0 stay as they are."""
    if not math.isfinite(x) or x == 0:
        return x
    return float(math.floor(x))


# ------------------------------------------------------------------ SQL face


def _call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def _blob(data: bytes) -> exp.Expression:
    return _call("unhex", exp.Literal.string(data.hex()))


def apply_sql(
    spec: TreatmentSpec, column: exp.Expression, column_type: str, key: HashKey | None
) -> exp.Expression:
    """The treated column as a SQLGlot expression (DuckDB dialect)."""
    kind = spec.treatment
    if kind == "clear":
        return column
    family = type_family(column_type)
    null = exp.Null()
    if kind == "mask":
        if family != "string":
            return exp.cast(null, "VARCHAR")
        keep = DEFAULT_MASK_KEEP if spec.keep is None else spec.keep
        at = _call("strpos", column.copy(), exp.Literal.string("@"))
        head = _call("substring", column.copy(), exp.Literal.number(1), exp.Literal.number(keep))
        tail = _call("substring", column.copy(), at.copy())
        masked_email = exp.DPipe(
            this=exp.DPipe(this=head.copy(), expression=exp.Literal.string("***")),
            expression=tail,
        )
        masked = exp.DPipe(this=head, expression=exp.Literal.string("***"))
        return exp.Case(
            ifs=[exp.If(this=exp.GT(this=at, expression=exp.Literal.number(0)), true=masked_email)],
            default=masked,
        )
    if kind == "hash":
        if key is None:
            raise ValueError("hash treatment needs a key")
        text: exp.Expression = exp.cast(column.copy(), "VARCHAR")
        if family == "float":
            # as a DOUBLE (REAL and DECIMAL too, as the online store holds them), and every
            # NaN as `nan`: DuckDB would print a NaN with its sign bit set as `-nan`
            number = exp.cast(column.copy(), "DOUBLE")
            text = exp.Case(
                ifs=[exp.If(this=_call("isnan", number), true=exp.Literal.string("nan"))],
                default=exp.cast(number.copy(), "VARCHAR"),
            )
        inner = _call(
            "sha256", exp.DPipe(this=_blob(key.inner_pad), expression=_call("encode", text))
        )
        outer = _call(
            "sha256", exp.DPipe(this=_blob(key.outer_pad), expression=_call("unhex", inner))
        )
        return outer
    if kind == "generalize":
        if family == "string":
            keep = DEFAULT_GENERALIZE_KEEP if spec.keep is None else spec.keep
            return _call(
                "substring", column.copy(), exp.Literal.number(1), exp.Literal.number(keep)
            )
        if family in {"integer", "float"}:
            step = exp.Literal.number(repr(float(spec.step or DEFAULT_STEP)))
            scaled = _call(
                "floor", exp.Div(this=exp.cast(column.copy(), "DOUBLE"), expression=step)
            )
            bucket: exp.Expression = exp.Mul(this=scaled, expression=step.copy())
            if family == "float":
                return exp.cast(bucket, "DOUBLE")
            # CAST(double AS BIGINT) rounds to nearest and fails out of range: floor first,
            # and let a bucket beyond BIGINT become NULL
            return exp.TryCast(this=_call("floor", bucket), to=exp.DataType.build("BIGINT"))
        if family in {"date", "timestamp"}:
            unit = "year" if spec.granularity == "year" else "month"
            truncated = _call(
                "date_trunc", exp.Literal.string(unit), exp.cast(column.copy(), "DATE")
            )
            return exp.cast(truncated, "DATE")
        return null
    raise ValueError(f"unknown treatment {kind!r}")


def sql_text(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")
