"""`parse_duration`: every integer amount of every unit, and nothing else."""

from __future__ import annotations

import string
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.project.models import parse_duration

UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
amounts = st.integers(min_value=0, max_value=10**6)
units = st.sampled_from(sorted(UNITS))
blanks = st.text(alphabet=" \t", max_size=2)


@settings(database=None)
@given(amount=amounts, unit=units)
def test_integer_amounts_round_trip(amount: int, unit: str) -> None:
    assert parse_duration(f"{amount}{unit}") == amount * UNITS[unit]
    assert parse_duration(f"{amount}{unit}").total_seconds() == pytest.approx(
        amount * UNITS[unit].total_seconds()
    )


@settings(database=None)
@given(amount=amounts, unit=units, before=blanks, between=blanks, after=blanks)
def test_whitespace_around_the_parts_is_allowed(
    amount: int, unit: str, before: str, between: str, after: str
) -> None:
    text = f"{before}{amount}{between}{unit}{after}"
    assert parse_duration(text) == amount * UNITS[unit]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("1s", timedelta(seconds=1)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(days=7)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_documented_examples(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def _rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@settings(database=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Nd"])))
def test_text_without_digits_is_rejected(text: str) -> None:
    _rejected(text)


@settings(database=None)
@given(amount=amounts, unit=st.text(alphabet=string.ascii_letters, min_size=1, max_size=4))
def test_unknown_units_are_rejected(amount: int, unit: str) -> None:
    if unit in UNITS:
        unit += "x"
    _rejected(f"{amount}{unit}")


@settings(database=None)
@given(amount=amounts, unit=units)
def test_malformed_amount_or_order_is_rejected(amount: int, unit: str) -> None:
    _rejected(str(amount))  # no unit
    _rejected(f"-{amount}{unit}")  # negative
    _rejected(f"{unit}{amount}")  # unit first
    _rejected(f"{amount}{unit}{amount}")  # trailing junk
    _rejected(f"{amount}{unit} {amount}{unit}")  # two durations
    _rejected(f"{amount}.{unit}")  # dangling decimal point


@pytest.mark.parametrize("text", ["", " ", "soon", "1 day", "1 hour", "1e3s", "PT1H", "1S"])
def test_garbage_examples_are_rejected(text: str) -> None:
    _rejected(text)
