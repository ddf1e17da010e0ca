"""Row errors keep the destination's words and the key, never the row's personal values."""

from __future__ import annotations

import datetime as dt

from tidegate.egress.sync.report import scrub


def test_values_of_the_row_become_field_names() -> None:
    row = {"id": 7, "email": "ann@x.org", "name": "Ann Lee", "vip": True}
    message = "Duplicate entry 'ann@x.org' for key 'email' (customer Ann Lee)"
    assert scrub(message, row) == "Duplicate entry '<email>' for key 'email' (customer <name>)"


def test_postgres_failing_row_detail_goes_as_a_whole() -> None:
    born = dt.datetime(1990, 5, 1, tzinfo=dt.UTC)
    row = {"id": 7, "email": "ann@x.org", "born": born}
    message = (
        'new row for relation "people" violates check constraint "score_ok"\n'
        "DETAIL:  Failing row contains (7, ann@x.org, 1990-05-01 00:00:00+00)."
    )
    cleaned = scrub(message, row)
    assert "ann@x.org" not in cleaned
    assert "1990-05-01" not in cleaned
    assert 'violates check constraint "score_ok"' in cleaned
    assert "Failing row contains (<the row>)" in cleaned


def test_a_value_inside_a_longer_one_is_not_half_replaced() -> None:
    row = {"first": "Ann", "full": "Ann Lee"}
    assert scrub("refused: Ann Lee", row) == "refused: <full>"
