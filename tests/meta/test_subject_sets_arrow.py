"""A sync hands its subjects to the audit store as Arrow (`ArrowSubjects`): the stored
parts must be exactly those of the same subjects as Python strings."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from tidegate.meta.subject_sets import ArrowSubjects, parts

subjects = st.lists(st.text(alphabet="ab\\\n1", min_size=0, max_size=4), max_size=40)


@settings(max_examples=100, deadline=None)
@given(values=subjects)
def test_arrow_subjects_store_the_same_parts_as_python_strings(values: list[str]) -> None:
    as_arrow = ArrowSubjects(pa.array(values, pa.string()))
    assert tuple(as_arrow) == tuple(values)
    assert parts(as_arrow) == parts(tuple(values))


@settings(max_examples=100, deadline=None)
@given(values=subjects.map(lambda v: list(dict.fromkeys(v))))
def test_distinct_arrow_subjects_skip_the_unique_pass_and_store_the_same(
    values: list[str],
) -> None:
    as_arrow = ArrowSubjects(pa.array(values, pa.string()), distinct=True)
    assert parts(as_arrow) == parts(tuple(values))
