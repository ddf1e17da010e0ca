"""The third face of each treatment: Arrow compute on whole columns.

Streaming and serving batch paths hold Arrow record batches; this face treats a column
at once instead of row by row. It gives exactly what the value face (`apply_value`)
and the SQL face (`apply_sql`) give, as `tests/privacy/test_treatment_equivalence.py`
checks on generated data. Vectorised with `pyarrow.compute` where Arrow has the
operation (slices, regex, floor, casts, temporal floors); keyed hashing has no Arrow
kernel, so it runs HMAC per value over the column's text, exactly as the value face.
"""

from __future__ import annotations

from typing import Any

from tidegate.privacy.treatments import (
    BIGINT_MAX,
    BIGINT_MIN,
    DEFAULT_GENERALIZE_KEEP,
    DEFAULT_MASK_KEEP,
    DEFAULT_STEP,
    HashKey,
    as_text,
)
from tidegate.project.models import TreatmentSpec
from tidegate.type_families import type_family


def _as_double(column: Any) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_decimal(column.type):  # correctly rounded, like Python's float(Decimal)
        return pa.array([None if v is None else float(v) for v in column.to_pylist()], pa.float64())
    return pc.cast(column, pa.float64(), safe=False)


def apply_arrow(spec: TreatmentSpec, column: Any, column_type: str, key: HashKey | None) -> Any:
    """The treated column (a pyarrow Array or ChunkedArray); callers drop `drop` columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    kind = spec.treatment
    if kind == "clear":
        return column
    family = type_family(column_type)
    if kind == "mask":
        if family != "string":
            return pa.nulls(len(column), pa.string())
        keep = DEFAULT_MASK_KEEP if spec.keep is None else spec.keep
        text = pc.cast(column, pa.string())
        head = pc.utf8_slice_codeunits(text, 0, keep)
        tail = pc.replace_substring_regex(text, r"^[^@]*", "", max_replacements=1)
        return pc.binary_join_element_wise(head, pa.scalar("***"), tail, "")
    if kind == "hash":
        if key is None:
            raise ValueError("hash treatment needs a key")
        values = column.to_pylist()
        texts = [
            None if v is None else as_text(float(v) if family == "float" else v) for v in values
        ]
        return pa.array([None if t is None else key.hmac_hex(t) for t in texts], pa.string())
    if kind == "generalize":
        if family == "string":
            keep = DEFAULT_GENERALIZE_KEEP if spec.keep is None else spec.keep
            return pc.utf8_slice_codeunits(pc.cast(column, pa.string()), 0, keep)
        if family in {"integer", "float"}:
            step = float(spec.step or DEFAULT_STEP)
            bucket = pc.multiply(pc.floor(pc.divide(_as_double(column), step)), step)
            if family == "float":
                return bucket
            whole = pc.floor(bucket)
            fits = pc.and_(
                pc.is_finite(whole),
                pc.and_(
                    pc.greater_equal(whole, float(BIGINT_MIN)),
                    pc.less(whole, float(BIGINT_MAX) + 1.0),  # 2**63 itself is out of range
                ),
            )
            safe = pc.if_else(fits, whole, 0.0)
            return pc.if_else(
                fits, pc.cast(safe, pa.int64(), safe=False), pa.scalar(None, pa.int64())
            )
        if family in {"date", "timestamp"}:
            days = column
            if pa.types.is_timestamp(column.type):
                days = column.cast(pa.timestamp(column.type.unit)).cast(pa.date32())  # UTC day
            unit = "year" if spec.granularity == "year" else "month"
            return pc.floor_temporal(days, unit=unit)
        return pa.nulls(len(column), pa.null())
    raise ValueError(f"unknown treatment {kind!r}")
