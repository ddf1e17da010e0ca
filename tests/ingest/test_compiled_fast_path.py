"""The HTTP door's fast path (`ingest.compiled`) changes nothing but speed.

Properties, over generated batches of events (plain ones, wrong types, numeric and
ISO strings, integers beyond 64 bits, NaN, unknown fields, missing required fields,
non-objects) and each `unknown_fields` policy:

* a row the fast path gives is exactly the row the full validator builds, for an event
  the full validator accepts without unknown fields;
* a JSON body through the HTTP door (orjson, the fast path, the full validator for the
  rest) is answered, logged and dead-lettered exactly as the full validator alone
  does on the standard decoder's reading of the body: same accepted count, same
  reason per index, same dead-letter payloads, same messages (key, event, headers),
  and the same events dropped for erased subjects;
* JSON lines likewise;
* the worker's `Intake.decode` of a logged event gives the same `Change` or dead letter.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tidegate.ingest.compiled import CompiledSchema, compiled
from tidegate.ingest.deadletters import DeadLetter, DeadLetterStore
from tidegate.ingest.http import _events
from tidegate.ingest.intake import Intake
from tidegate.ingest.raw import arrow_rows
from tidegate.ingest.validate import Change, EventSchema, Invalid
from tidegate.log.base import EventLog, Message, Record
from tidegate.privacy.tombstones import ErasedFilter
from tidegate.project import load_project

SOURCE = """
name: {name}
type: stream
event_id: id
event_time: at
subject: who
unknown_fields: {policy}
max_event_bytes: 400
columns:
  id: {{type: BIGINT, nullable: false}}
  who: {{type: BIGINT, classification: user.unique_id}}
  n: {{type: INTEGER}}
  amount: {{type: DOUBLE}}
  label: {{type: VARCHAR, nullable: false}}
  at: {{type: TIMESTAMPTZ}}
  flag: {{type: BOOLEAN}}
  day: {{type: DATE}}
"""
POLICIES = ("drop", "keep", "reject")
COLUMNS = ("id", "who", "n", "amount", "label", "at", "flag", "day")


class _Log:
    """The event log, as far as `Intake.submit` uses it: what was appended."""

    def __init__(self) -> None:
        self.appended: list[tuple[str, Message]] = []

    def append(self, topic: str, messages: Sequence[Message]) -> None:
        self.appended.extend((topic, m) for m in messages)

    def close(self) -> None:
        pass


class _Dead:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def add(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)

    def close(self) -> None:
        pass


class _Erased:
    """`ErasedFilter`'s face to the intake, over a fixed set of erased subjects."""

    def __init__(self, subjects: set[int]) -> None:
        self.subjects = subjects

    def refresh(self) -> None:
        pass

    def none_erased(self) -> bool:
        return not self.subjects

    def about_erased(self, source: str, row: Any) -> bool:
        if not isinstance(row, dict):
            return False
        who = row.get("who")
        return any(str(who) == str(s) for s in self.subjects) if who is not None else False

    def __call__(self, change: Any) -> bool:
        return self.about_erased(change.source, change.row)


@pytest.fixture(scope="module")
def project_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fastpath")
    (root / "tidegate.yml").write_text("name: fastpath\n")
    (root / "sources").mkdir()
    for policy in POLICIES:
        (root / "sources" / f"ev_{policy}.yml").write_text(
            SOURCE.format(name=f"ev_{policy}", policy=policy).lstrip("\n")
        )
    return root


@pytest.fixture(scope="module")
def schemas(project_root: Path) -> dict[str, EventSchema]:
    return Intake(load_project(project_root), cast(EventLog, _Log()), _dead(), None).schemas


def _dead() -> DeadLetterStore:
    return cast(DeadLetterStore, _Dead())


def _intake(root: Path, erased: set[int], *, fast: bool) -> Intake:
    intake = Intake(load_project(root), cast(EventLog, _Log()), _dead(), None)
    intake.erased = cast(ErasedFilter, _Erased(erased))
    if not fast:
        intake._compiled = dict.fromkeys(intake._compiled)  # the full validator alone
    return intake


#: integers orjson reads as floats (beyond 64 bits), where the decoders differ
wide_ints = st.sampled_from([2**64, -(2**64) - 1, 10**30, 2**70 + 1, -(10**25)])
big_ints = st.integers(min_value=-(2**70), max_value=2**70)
values = st.one_of(
    st.none(),
    wide_ints,
    st.booleans(),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), 2**64 - 1, 2**64, 10**30]),
    big_ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1.0, -0.0, 2.5, 1e16, 1e-7, 9.3e18, 2.0**63, 1e30]),
    st.sampled_from(
        [
            "7",
            " 8 ",
            "3.5",
            "x",
            "",
            "true",
            "no",
            "2026-01-01T10:00:00Z",
            "2026-01-01T10:00:00",
            " 2026-01-01T10:00:00+02:00",
            "2026-13-01",
            "2026-02-03",
            "\u00e9t\u00e9 \u2603",
            "y" * 300,
        ]
    ),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
plain = st.fixed_dictionaries(
    {
        "id": st.integers(min_value=1, max_value=10**6),
        "who": st.integers(min_value=1, max_value=6),
        "label": st.text(max_size=10),
    },
    optional={
        "n": st.integers(min_value=-(2**31), max_value=2**31 - 1),
        "amount": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "at": st.sampled_from(["2026-11-01T00:00:00+00:00", "2026-11-01 12:30:00"]),
        "flag": st.booleans(),
        "day": st.sampled_from(["2026-11-01", None]),
    },
)
mixed = st.dictionaries(
    st.sampled_from([*COLUMNS, "coupon", "other"]), values, max_size=len(COLUMNS) + 2
)
#: a plain event with one field set to any value: the near misses that matter most
one_off = st.tuples(plain, st.sampled_from([*COLUMNS, "coupon"]), values).map(
    lambda t: {**t[0], t[1]: t[2]}
)
events = st.lists(st.one_of(plain, one_off, one_off, mixed, values), max_size=25)
policies = st.sampled_from(POLICIES)
erased_sets = st.sets(st.integers(min_value=1, max_value=6), max_size=2)


def _full(schema: EventSchema, event: Any) -> dict[str, Any] | None:
    """The full validator's row for an event it takes without unknown fields."""
    try:
        change = schema.from_object(event)
    except Invalid:
        return None
    return None if change.unknown else change.row


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=events, policy=policies)
def test_a_fast_row_is_the_full_validators_row(
    schemas: dict[str, EventSchema], batch: list[Any], policy: str
) -> None:
    schema = schemas[f"ev_{policy}"]
    fast = compiled(schema)
    assert isinstance(fast, CompiledSchema)
    for event, row in zip(batch, fast.rows(batch), strict=True):
        if row is not None:
            assert row == _full(schema, event)


def test_the_fast_path_takes_plain_events(schemas: dict[str, EventSchema]) -> None:
    """Not a vacuous property: the common event is taken (and typed) by the fast path."""
    fast = compiled(schemas["ev_drop"])
    assert fast is not None
    event = {"id": 1, "who": 2, "label": "a", "amount": 3, "at": "2026-11-01T00:00:00"}
    [row] = fast.rows([event])
    assert row is not None
    assert row["amount"] == 3.0
    assert isinstance(row["amount"], float)
    assert row["at"].tzinfo is not None
    assert row["n"] is None
    assert fast.rows([{**event, "who": " 2"}]) == [row]  # coerced as the full validator does
    # what it leaves to the full validator: unknown fields, wrong types, missing columns,
    # non-objects, and floats an integer literal beyond 64 bits may have become
    left = [
        {**event, "coupon": 1},
        {**event, "id": True},
        {**event, "amount": "lots"},
        {**event, "label": None},
        {**event, "amount": 1e30},
        [event],
    ]
    assert fast.rows(left) == [None] * len(left)


def _outcome(intake: Intake, result: Any) -> dict[str, Any]:
    log = cast(_Log, intake.log)
    dead = cast(_Dead, intake.dead)
    return {
        "answer": result.as_json(),
        "erased": result.erased,
        "logged": [
            (topic, m.key, json.loads(m.value or b"null"), m.headers) for topic, m in log.appended
        ],
        "dead": [(d.source, d.reason, d.payload, d.via) for d in dead.letters],
    }


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included (a NaN in a dead letter's event is the same NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=events, policy=policies, erased=erased_sets)
@example(batch=[{"id": 1, "who": 2, "label": 10**30}], policy="drop", erased=set())
@example(batch=[{"id": 1, "who": 2, "label": "a", "amount": 2**64}], policy="keep", erased={2})
@example(batch=[{"id": 2**64, "who": 2, "label": "a", "day": 2**31}], policy="drop", erased=set())
@example(  # keyed by subject, and by event id where the subject is null
    batch=[{"id": 1, "who": 2, "label": "a"}, {"id": 3, "who": None, "label": "b"}],
    policy="drop",
    erased=set(),
)
def test_a_json_body_is_answered_as_by_the_full_validator(
    project_root: Path, batch: list[Any], policy: str, erased: set[int]
) -> None:
    source = f"ev_{policy}"
    body = json.dumps(batch).encode()  # NaN and big integers as Python writes them
    reference = _intake(project_root, erased, fast=False)
    expected = _outcome(reference, reference.submit(source, json.loads(body), "http"))
    intake = _intake(project_root, erased, fast=True)
    decoded, exact = _events(body)
    got = _outcome(intake, intake.submit(source, decoded, "http", exact=exact))
    assert _same(got, expected), (got, expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=events, policy=policies, erased=erased_sets, junk=st.booleans())
def test_json_lines_are_answered_as_by_the_full_validator(
    project_root: Path, batch: list[Any], policy: str, erased: set[int], junk: bool
) -> None:
    source = f"ev_{policy}"
    lines = [json.dumps(e).encode() for e in batch] + ([b'{"id": 1,'] if junk else [])
    reference = _intake(project_root, erased, fast=False)
    expected = _outcome(reference, reference.submit(source, lines, "http", raw=True))
    intake = _intake(project_root, erased, fast=True)
    got = _outcome(intake, intake.submit(source, lines, "http", raw=True))
    assert _same(got, expected), (got, expected)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=events, policy=policies, junk=st.booleans())
def test_the_worker_decodes_a_batch_as_the_full_validator_does(
    project_root: Path, batch: list[Any], policy: str, junk: bool
) -> None:
    """`CompiledSchema.decode` (the worker's side) takes only what `Intake.decode` (the
    full validator) accepts without unknown fields, with its values; the rest is left."""
    source = f"ev_{policy}"
    values = [json.dumps(e).encode() for e in batch] + ([b'{"id": 1,', None] if junk else [])
    records = [Record(source, 0, offset, b"k", value) for offset, value in enumerate(values)]
    reference = _intake(project_root, set(), fast=False)
    fast = _intake(project_root, set(), fast=True).fast(source)
    assert fast is not None
    decoded = fast.decode(values)
    assert sorted(decoded.taken + decoded.rest) == list(range(len(values)))
    rows = decoded.table.to_pylist() if decoded.taken else []
    for index, row in zip(decoded.taken, rows, strict=True):
        expected = reference.decode(records[index])
        assert isinstance(expected, Change)
        assert not expected.unknown
        assert _same(row, _arrow_row(reference.schemas[source], expected.row))


def _arrow_row(schema: EventSchema, row: dict[str, Any]) -> dict[str, Any]:
    """`row` as it reads back from the Arrow types the raw table receives."""
    return arrow_rows(schema.config, [row]).to_pylist()[0]  # type: ignore[no-any-return]
