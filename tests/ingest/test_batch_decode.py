"""`CompiledSchema.decode` (the stream worker's whole-batch decode) takes an event
only when the per-event `parse` accepts it, with the very values `parse` gives; every
other event is left to `parse`, so rejections and their reasons stay the per-event ones."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.ingest.compiled import CompiledSchema
from tidegate.ingest.raw import arrow_rows
from tidegate.ingest.validate import EventSchema, Invalid
from tidegate.project.models import StreamSource

CONFIG = StreamSource.model_validate(
    {
        "type": "stream",
        "name": "events",
        "event_id": "event_id",
        "event_time": "occurred_at",
        "subject": "customer_id",
        "max_event_bytes": 300,
        "columns": {
            "event_id": {"type": "BIGINT", "nullable": False},
            "customer_id": {"type": "INTEGER", "nullable": False},
            "amount": {"type": "DOUBLE"},
            "label": {"type": "VARCHAR"},
            "paid": {"type": "BOOLEAN"},
            "day": {"type": "DATE"},
            "occurred_at": {"type": "TIMESTAMPTZ"},
        },
    }
)

# values that are of the right type, coercible, out of range, or of the wrong kind
ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "12",
            " 7 ",
            "1.5",
            "x",
            "",
            "true",
            "0",
            "2026-11-01",
            "2026-11-01T10:00:00",
            "2026-11-01T10:00:00+02:00",
            " 2026-11-01T10:00:00Z ",
            "nan",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=400),
)
FIELDS = st.sampled_from([*CONFIG.columns, "unknown"])
EVENT = st.dictionaries(FIELDS, ANY_VALUE, max_size=8)
RAW = st.one_of(
    EVENT.map(lambda e: json.dumps(e).encode()),
    st.sampled_from([b'{"event_id": 1', b"[1]", b"null", b"\xff", b"", None]),
)


def _parsed(schema: EventSchema, value: bytes | None) -> dict[str, Any] | None:
    try:
        change = schema.parse(value)
    except Invalid:
        return None
    return change.row if not change.unknown else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(RAW, max_size=30))
def test_the_batch_decode_takes_only_what_parse_accepts_with_its_values(
    values: list[bytes | None],
) -> None:
    schema = EventSchema(CONFIG)
    batch = CompiledSchema(schema).decode(values)
    assert sorted(batch.taken + batch.rest) == list(range(len(values)))
    assert batch.table.num_rows == len(batch.taken)
    expected = []
    for index in batch.taken:
        row = _parsed(schema, values[index])
        assert row is not None, f"taken, but parse rejects {values[index]!r}"
        expected.append(row)
    # the same Arrow values the per-event path would hand to the raw table
    assert batch.table.equals(arrow_rows(CONFIG, expected))


def test_plain_events_take_the_batch_path_and_the_rest_keep_their_reasons() -> None:
    schema = EventSchema(CONFIG)
    at = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    good = {"event_id": 1, "customer_id": 7, "amount": 2.5, "occurred_at": at.isoformat()}
    values = [
        json.dumps(good).encode(),
        json.dumps({**good, "customer_id": "seven"}).encode(),
        json.dumps({**good, "unknown": 1}).encode(),
        b'{"event_id": 1',
        json.dumps({**good, "event_id": 2, "customer_id": "8"}).encode(),  # coerced: taken
    ]
    batch = CompiledSchema(schema).decode(values)
    assert batch.taken == [0, 4]
    assert batch.rest == [1, 2, 3]
    assert batch.table.column("customer_id").to_pylist() == [7, 8]
    assert batch.table.column("occurred_at").to_pylist() == [at, at]
    with pytest.raises(Invalid, match="column 'customer_id': 'seven' is not an integer"):
        schema.parse(values[1])
    assert schema.parse(values[2]).unknown == ("unknown",)  # counted by the per-event path
