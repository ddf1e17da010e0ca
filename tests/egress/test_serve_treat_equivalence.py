"""The serving path treats rows with its own loop (clear columns copied, no call per
value); it must give exactly what the guard's `AccessPlan.apply_row` gives, for every
product, purpose and stored row of the demo shop: treatments, dropped columns, and
subjects filtered out for want of consent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from tidegate.egress.serve.service import Serving
from tidegate.errors import TidegateError
from tidegate.platform import Platform
from tidegate.privacy.guard import AccessContext, AccessPlan, guard_of
from tidegate.type_families import type_family


def typed(plan: AccessPlan, row: dict[str, Any]) -> dict[str, Any]:
    """The stored row's date and timestamp text as the warehouse types it, for the
    columns a treatment changes (what the guard's `apply_row` is given elsewhere)."""
    for column in plan.visible_columns:
        family = type_family(column.type)
        value = row.get(column.name)
        treated = column.treatment.treatment != "clear"
        if treated and isinstance(value, str) and family in ("date", "timestamp"):
            parse = dt.date if family == "date" else dt.datetime
            row[column.name] = parse.fromisoformat(value)
    return row


def test_served_rows_equal_the_guards_apply_row(demo_dir: Path) -> None:
    with Platform.open(demo_dir) as platform:
        serving = Serving(platform)
        guard = guard_of(platform)
        treatments: set[str] = set()
        compared = filtered = 0
        for product in platform.project.products:
            entries = platform.online.read_entries(product, platform.online.keys(product))
            assert entries, product
            for purpose in platform.project.policy.purposes:
                try:
                    plan = guard.plan(AccessContext("t", ("privacy_officer",), purpose), product)
                except TidegateError:
                    continue  # this purpose may not read this product
                shape = serving._shape(plan)
                treatments.update(c.treatment.treatment for c in plan.columns)
                for entry in entries.values():
                    expected = plan.apply_row(typed(plan, orjson.loads(entry.value)))
                    served, _ = serving._treat(shape, entry)
                    assert served == expected, (product, purpose, entry.value)
                    if expected is not None:
                        assert list(served or {}) == list(expected)  # column order too
                    compared += 1
                    filtered += expected is None
        serving.close()
    assert compared > 100
    assert filtered > 0  # some subjects lack consent for some purpose
    assert {"clear", "hash", "drop"} <= treatments, treatments


def test_rows_stored_in_another_shape_are_treated_like_apply_row(demo_dir: Path) -> None:
    """A stored row whose columns are not the plan's in order (an extra column, another
    order: a row written under an older contract) takes the copying branch, and still
    gives `apply_row`'s answer, in the plan's column order."""
    from tidegate.store.online.base import Entry

    with Platform.open(demo_dir) as platform:
        serving = Serving(platform)
        guard = guard_of(platform)
        compared = 0
        for purpose in ("support", "analytics"):
            plan = guard.plan(AccessContext("t", ("privacy_officer",), purpose), "customer_360")
            shape = serving._shape(plan)
            keys = platform.online.keys("customer_360")[:50]
            for entry in platform.online.read_entries("customer_360", keys).values():
                row = orjson.loads(entry.value)
                odd = {"not_in_the_contract": "x", **dict(reversed(list(row.items())))}
                served, _ = serving._treat(shape, Entry(orjson.dumps(odd).decode(), 1, 0.0))
                expected = plan.apply_row(typed(plan, row))
                assert served == expected
                if expected is not None:
                    assert list(served or {}) == list(expected)
                    assert "not_in_the_contract" not in (served or {})
                    compared += 1
        serving.close()
    assert compared > 20
