"""Each treatment's SQL face (run by DuckDB) and value face (Python) agree exactly.

The SQL face runs in syncs and exports, the value face in serving; a difference between
them would mean the same person is shown differently depending on how data leaves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from tidegate.privacy.treatments import (
    HashKey,
    apply_sql,
    apply_value,
    purpose_key,
    sql_text,
    type_family,
)
from tidegate.project.models import TreatmentSpec

UTC = dt.UTC
ZONES = [
    UTC,
    dt.timezone(dt.timedelta(hours=5, minutes=30)),
    dt.timezone(dt.timedelta(hours=-8)),
    dt.timezone(dt.timedelta(hours=13, minutes=45)),
]

# Wide-ranging but Python-representable values: aware timestamps stay inside years 2..9998
# so converting them to UTC never leaves datetime's range.
_text = st.text(max_size=30)
_emails = st.emails()
_email_like = st.builds(lambda a, b: f"{a}@{b}", st.text(max_size=8), st.text(max_size=8))
_unicode = st.text(
    alphabet=st.characters(min_codepoint=0x80, exclude_categories=("Cs",)), max_size=12
)
STRINGS = st.one_of(_text, _emails, _email_like, _unicode, st.sampled_from(["", "@", "a@", "@b"]))

# Edge values hypothesis might not reach in a few dozen examples, mixed in explicitly.
_EDGE_INTS = [0, -1, 2**53 + 1, -(2**63), 2**63 - 1, 2**63 - 513, -(2**63) + 1]
_EDGE_FLOATS = [
    math.nan,
    -math.nan,  # sign bit set: DuckDB would print it as `-nan`
    math.inf,
    -math.inf,
    -0.0,
    5e-324,
    -5e-324,
    1.7976931348623157e308,
]
_EDGE_MOMENTS = [
    # just after midnight on the 1st, local time: still the previous month (and year) in UTC
    dt.datetime(2025, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=13, minutes=45))),
    dt.datetime(2024, 3, 1, 0, 0, 0, 1, tzinfo=ZONES[1]),
    # just before midnight at the end of a month, local time: the next month in UTC
    dt.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=ZONES[2]),
]

FAMILIES: dict[str, tuple[pa.DataType, st.SearchStrategy[Any]]] = {
    "VARCHAR": (pa.string(), STRINGS),
    "BIGINT": (
        pa.int64(),
        st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from(_EDGE_INTS)),
    ),
    "DOUBLE": (
        pa.float64(),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(_EDGE_FLOATS)),
    ),
    "DATE": (pa.date32(), st.dates()),
    "TIMESTAMP WITH TIME ZONE": (
        pa.timestamp("us", tz="UTC"),
        st.one_of(
            st.datetimes(
                min_value=dt.datetime(2, 1, 1),
                max_value=dt.datetime(9998, 12, 31),
                timezones=st.sampled_from(ZONES),
            ),
            st.sampled_from(_EDGE_MOMENTS),
        ),
    ),
    "TIMESTAMP": (pa.timestamp("us"), st.datetimes()),
    # float-family cousins: REAL widens to DOUBLE, DECIMAL arrives as Decimal (or as float
    # from the online store)
    "REAL": (pa.float32(), st.floats(width=32)),
    "DECIMAL(18,3)": (
        pa.decimal128(18, 3),
        st.decimals(min_value=-(10**14), max_value=10**14, places=3, allow_nan=False),
    ),
}

_keys = st.one_of(
    st.binary(min_size=0, max_size=100).map(HashKey),  # short, block-sized and long keys
    st.sampled_from(["support", "analytics", "marketing.email"]).map(
        lambda p: purpose_key(b"master-key-for-tests", p)
    ),
)
_keep = st.one_of(st.none(), st.integers(0, 8))
_step = st.one_of(
    st.none(),
    st.integers(1, 10_000).map(float),
    st.sampled_from([0.1, 0.25, 2.5, 7.3, 1e-3, 12345.678901234567, 1e15]),
    st.floats(min_value=1e-6, max_value=1e12),
)
SPECS: dict[str, st.SearchStrategy[TreatmentSpec]] = {
    "clear": st.just(TreatmentSpec(treatment="clear")),
    "mask": st.builds(lambda k: TreatmentSpec(treatment="mask", keep=k), _keep),
    "hash": st.just(TreatmentSpec(treatment="hash")),
    "generalize": st.builds(
        lambda step, gran, keep: TreatmentSpec(
            treatment="generalize", step=step, granularity=gran, keep=keep
        ),
        _step,
        st.sampled_from([None, "month", "year"]),
        _keep,
    ),
}


@pytest.fixture(scope="module")
def duck() -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    yield con
    con.close()


def run_sql(
    con: duckdb.DuckDBPyConnection,
    spec: TreatmentSpec,
    column_type: str,
    arrow_type: pa.DataType,
    values: list[Any],
    key: HashKey,
) -> list[Any]:
    treated = apply_sql(spec, exp.column("v", table="t", quoted=True), column_type, key)
    query = exp.select(exp.alias_(treated, "out", quoted=True)).from_("incoming AS t")
    con.register("incoming", pa.table({"v": pa.array(values, type=arrow_type)}))
    try:
        table = con.sql(sql_text(query)).to_arrow_table()
    finally:
        con.unregister("incoming")
    return list(table.column("out").to_pylist())


def exact(value: Any) -> Any:
    """A comparison key that tells apart what `==` would blur (types, -0.0, NaN)."""
    if isinstance(value, float):
        if math.isnan(value):
            return ("float", "nan")
        return ("float", value, math.copysign(1.0, value))
    if isinstance(value, dt.datetime):
        # SQL hands back aware timestamps in UTC; the instant and awareness must match
        return ("datetime", value.tzinfo is not None, value)
    return (type(value).__name__, value)


@pytest.mark.parametrize("treatment", sorted(SPECS))
@pytest.mark.parametrize("column_type", sorted(FAMILIES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sql_face_equals_value_face(
    duck: duckdb.DuckDBPyConnection, treatment: str, column_type: str, data: st.DataObject
) -> None:
    arrow_type, values_strategy = FAMILIES[column_type]
    spec = data.draw(SPECS[treatment], label="spec")
    key = data.draw(_keys, label="key")
    values = data.draw(
        st.lists(st.one_of(st.none(), values_strategy), min_size=1, max_size=8), label="values"
    )
    from_sql = run_sql(duck, spec, column_type, arrow_type, values, key)
    from_python = [apply_value(spec, v, column_type, key) for v in values]
    assert [exact(v) for v in from_sql] == [exact(v) for v in from_python]


def test_families_are_the_ones_exercised() -> None:
    assert {type_family(t) for t in FAMILIES} == {
        "string",
        "integer",
        "float",
        "date",
        "timestamp",
    }


# ------------------------------------------------------------------ named examples


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (TreatmentSpec(treatment="mask"), "jane@example.com", "j***@example.com"),
        (TreatmentSpec(treatment="mask", keep=3), "jane@example.com", "jan***@example.com"),
        (TreatmentSpec(treatment="mask", keep=0), "jane@example.com", "***@example.com"),
        (TreatmentSpec(treatment="mask"), "Jane Doe", "J***"),
        (TreatmentSpec(treatment="mask", keep=2), "Zoë", "Zo***"),
        (TreatmentSpec(treatment="generalize"), "SW1A 1AA", "SW1"),
        (TreatmentSpec(treatment="generalize", keep=1), "Ñandú", "Ñ"),
    ],
)
def test_string_examples_both_faces(
    duck: duckdb.DuckDBPyConnection, spec: TreatmentSpec, value: str, expected: str
) -> None:
    assert apply_value(spec, value, "VARCHAR", None) == expected
    assert run_sql(duck, spec, "VARCHAR", pa.string(), [value], HashKey(b"k")) == [expected]


@pytest.mark.parametrize(
    ("spec", "column_type", "value", "expected"),
    [
        (TreatmentSpec(treatment="generalize"), "BIGINT", 47, 40),
        (TreatmentSpec(treatment="generalize"), "BIGINT", -1, -10),
        (TreatmentSpec(treatment="generalize", step=1000), "BIGINT", 123_456, 123_000),
        (TreatmentSpec(treatment="generalize", step=2.5), "BIGINT", 8, 7),  # bucket 7.5 floors
        (TreatmentSpec(treatment="generalize", step=2.5), "BIGINT", -7, -8),  # bucket -7.5
        (TreatmentSpec(treatment="generalize", step=0.5), "DOUBLE", 3.7, 3.5),
        (TreatmentSpec(treatment="generalize"), "DOUBLE", -0.5, -10.0),
        (TreatmentSpec(treatment="generalize"), "DATE", dt.date(2024, 7, 19), dt.date(2024, 7, 1)),
        (
            TreatmentSpec(treatment="generalize", granularity="year"),
            "DATE",
            dt.date(2024, 7, 19),
            dt.date(2024, 1, 1),
        ),
        (
            TreatmentSpec(treatment="generalize"),
            "TIMESTAMP WITH TIME ZONE",
            # 01:30 on the 1st at +05:30 is still the previous month in UTC
            dt.datetime(2024, 8, 1, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
            dt.date(2024, 7, 1),
        ),
        (TreatmentSpec(treatment="mask"), "BIGINT", 42, None),
        (TreatmentSpec(treatment="mask"), "DATE", dt.date(2024, 1, 1), None),
    ],
)
def test_other_examples_both_faces(
    duck: duckdb.DuckDBPyConnection,
    spec: TreatmentSpec,
    column_type: str,
    value: Any,
    expected: Any,
) -> None:
    arrow_type = FAMILIES[column_type][0]
    assert exact(apply_value(spec, value, column_type, None)) == exact(expected)
    got = run_sql(duck, spec, column_type, arrow_type, [value], HashKey(b"k"))
    assert [exact(v) for v in got] == [exact(expected)]


def test_generalize_bucket_outside_bigint_is_null_not_an_error(
    duck: duckdb.DuckDBPyConnection,
) -> None:
    spec = TreatmentSpec(treatment="generalize")
    top = 2**63 - 1  # as DOUBLE this is 2**63, one past the largest BIGINT
    assert apply_value(spec, top, "BIGINT", None) is None
    assert run_sql(duck, spec, "BIGINT", pa.int64(), [top, 5], HashKey(b"k")) == [None, 0]


# ------------------------------------------------------------------ hashing


@settings(max_examples=60, deadline=None)
@given(key=st.binary(max_size=130), text=st.text(max_size=40))
def test_hash_is_plain_hmac_sha256(key: bytes, text: str) -> None:
    expected = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    assert HashKey(key).hmac_hex(text) == expected
    spec = TreatmentSpec(treatment="hash")
    assert apply_value(spec, text, "VARCHAR", HashKey(key)) == expected


@settings(max_examples=30, deadline=None)
@given(key=st.binary(max_size=130), text=st.text(max_size=40))
def test_sql_hash_is_plain_hmac_sha256(
    duck: duckdb.DuckDBPyConnection, key: bytes, text: str
) -> None:
    expected = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    spec = TreatmentSpec(treatment="hash")
    assert run_sql(duck, spec, "VARCHAR", pa.string(), [text], HashKey(key)) == [expected]


@pytest.mark.parametrize(
    ("column_type", "value", "text"),
    [
        ("BIGINT", -42, "-42"),
        ("DOUBLE", 0.1, "0.1"),
        ("DOUBLE", 1e16, "1e+16"),
        ("DATE", dt.date(2024, 2, 29), "2024-02-29"),
        ("TIMESTAMP", dt.datetime(2024, 2, 29, 8, 0, 0, 120000), "2024-02-29 08:00:00.12"),
        (
            "TIMESTAMP WITH TIME ZONE",
            dt.datetime(2024, 2, 29, 9, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))),
            "2024-02-29 08:00:00+00",
        ),
    ],
)
def test_hash_text_of_typed_values(
    duck: duckdb.DuckDBPyConnection, column_type: str, value: Any, text: str
) -> None:
    """Typed values hash as DuckDB's text of them (timestamps with time zone in UTC)."""
    key = HashKey(b"k" * 32)
    expected = hmac.new(key.key, text.encode(), hashlib.sha256).hexdigest()
    spec = TreatmentSpec(treatment="hash")
    assert apply_value(spec, value, column_type, key) == expected
    arrow_type = FAMILIES[column_type][0]
    assert run_sql(duck, spec, column_type, arrow_type, [value], key) == [expected]


@settings(max_examples=40, deadline=None)
@given(
    value=st.decimals(min_value=-(10**14), max_value=10**14, places=3, allow_nan=False),
    spec=st.one_of(SPECS["hash"], SPECS["generalize"]),
)
def test_decimal_treated_the_same_as_the_float_the_online_store_keeps(
    value: Decimal, spec: TreatmentSpec
) -> None:
    """Serving reads DECIMAL back as a float (JSON); the treated value must not change."""
    key = HashKey(b"k")
    assert exact(apply_value(spec, float(value), "DECIMAL(18,3)", key)) == exact(
        apply_value(spec, value, "DECIMAL(18,3)", key)
    )


def test_hash_without_key_is_refused() -> None:
    spec = TreatmentSpec(treatment="hash")
    with pytest.raises(ValueError, match="key"):
        apply_value(spec, "x", "VARCHAR", None)
    with pytest.raises(ValueError, match="key"):
        apply_sql(spec, exp.column("v"), "VARCHAR", None)


def test_purpose_keys_are_stable_within_and_unlinkable_across_purposes() -> None:
    master = b"m" * 32
    a1, a2 = purpose_key(master, "analytics"), purpose_key(master, "analytics")
    b = purpose_key(master, "marketing.email")
    assert a1 == a2
    assert a1.hmac_hex("42") == a2.hmac_hex("42")
    assert a1.key != b.key
    assert a1.hmac_hex("42") != b.hmac_hex("42")
    # the purpose key depends on the master key, and is not the master key itself
    assert purpose_key(b"n" * 32, "analytics").key != a1.key
    assert master not in (a1.key, b.key)
    assert len(a1.key) == 32
    # a key printed by accident (a log line, a traceback) shows nothing of itself
    for shown in (repr(a1), str(a1)):
        assert a1.key.hex() not in shown
        assert repr(a1.key) not in shown


@settings(max_examples=50)
@given(
    purposes=st.lists(
        st.from_regex(r"[a-z][a-z0-9_]{0,8}(\.[a-z][a-z0-9_]{0,8})?", fullmatch=True),
        min_size=2,
        max_size=5,
        unique=True,
    )
)
def test_distinct_purposes_give_distinct_keys(purposes: list[str]) -> None:
    keys = {purpose_key(b"master", p).key for p in purposes}
    assert len(keys) == len(purposes)


# ------------------------------------------------------------------ the Arrow face


@pytest.mark.parametrize("treatment", sorted(SPECS))
@pytest.mark.parametrize("column_type", sorted(FAMILIES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_arrow_face_equals_value_and_sql_faces(
    duck: duckdb.DuckDBPyConnection, treatment: str, column_type: str, data: st.DataObject
) -> None:
    from tidegate.privacy.treatments_arrow import apply_arrow

    arrow_type, values_strategy = FAMILIES[column_type]
    spec = data.draw(SPECS[treatment], label="spec")
    key = data.draw(_keys, label="key")
    values = data.draw(
        st.lists(st.one_of(st.none(), values_strategy), min_size=1, max_size=8), label="values"
    )
    column = pa.chunked_array([pa.array(values, type=arrow_type)])
    from_arrow = apply_arrow(spec, column, column_type, key).to_pylist()
    from_python = [apply_value(spec, v, column_type, key) for v in values]
    from_sql = run_sql(duck, spec, column_type, arrow_type, values, key)
    assert [exact(v) for v in from_arrow] == [exact(v) for v in from_python]
    assert [exact(v) for v in from_arrow] == [exact(v) for v in from_sql]


def test_arrow_face_takes_timestamps_in_utc_whatever_their_zone() -> None:
    from tidegate.privacy.treatments_arrow import apply_arrow

    moment = dt.datetime(2024, 12, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-8)))
    column = pa.array([moment], type=pa.timestamp("us", tz="America/Los_Angeles"))
    spec = TreatmentSpec(treatment="generalize", granularity="year")
    assert apply_arrow(spec, column, "TIMESTAMPTZ", None).to_pylist() == [dt.date(2025, 1, 1)]
