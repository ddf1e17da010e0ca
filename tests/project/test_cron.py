"""Schedules mean what they mean in classic cron (project/cron.py delegates to cronsim)."""

from __future__ import annotations

import datetime as dt

import pytest

from tidegate.project.cron import next_fire, parse_cron

FRIDAY = dt.datetime(2026, 11, 20, 17, 50, tzinfo=dt.UTC)


def test_a_step_in_a_day_field_counts_as_star_as_in_classic_cron() -> None:
    # `*/2` restricts the day of month but, starting with `*`, does not switch on the
    # "either day field" rule: odd days that are also Mondays. The hand-written parser
    # fired on Saturday the 21st here.
    assert next_fire("0 0 */2 * mon", FRIDAY) == dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    # Both fields restricted without `*`: either matches (the 1st, or any Monday).
    assert next_fire("0 0 1 * mon", FRIDAY) == dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    assert next_fire("0 0 */2 * *", FRIDAY) == dt.datetime(2026, 11, 21, tzinfo=dt.UTC)


def test_next_fire_is_strictly_after_the_minute() -> None:
    at = dt.datetime(2026, 11, 20, 10, 15, 30, tzinfo=dt.UTC)
    assert next_fire("*/15 * * * *", at) == dt.datetime(2026, 11, 20, 10, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("expression", "needle"),
    [
        ("0 9 31 4 *", "never exists"),
        ("0 9 30 2 *", "never exists"),
        ("61 * * * *", "bad minute"),
        ("@reboot", "expected 5 fields"),
        ("* * *", "expected 5 fields"),
    ],
)
def test_impossible_or_malformed_expressions_are_rejected(expression: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_cron(expression)


def test_shorthands() -> None:
    assert next_fire("@hourly", FRIDAY) == dt.datetime(2026, 11, 20, 18, tzinfo=dt.UTC)
    assert next_fire("@MONTHLY", FRIDAY) == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
