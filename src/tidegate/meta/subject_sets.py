"""The large subject lists of audit records, stored compactly (`audit_subject_sets`).

A sync or export that carries a million people used to add a million rows to the
`audit_subjects` B-tree: as slow as the COPY that sent them. A record that carries at
least `SET_MIN` subjects is stored instead as a few text parts of up to `PART_SIZE`
subjects each, one line per subject between newlines (`"\\n1\\n2\\n…\\n"`), so a
search is a substring test for `"\\n" + key + "\\n"` (memchr-fast, in the database's
own `instr` / `strpos`) and an erasure a `replace` of that token by the pseudonym's.
Small records (a read of one customer: most of them) keep one indexed row per subject.

Keys are escaped (`\\` -> `\\\\`, newline -> `\\n`) so no key holds the separator: the
token of a key can only match that key's whole line. The trade: a search reads every
large set (a linear scan) instead of one index probe; records carrying that many
subjects are few (one per sync run with many rows), and searches and erasures are rare
next to syncs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidegate.meta.sql_parts import SqlDialect

SET_MIN = 256  # subjects from which a record's list is stored as a set
PART_SIZE = 100_000  # subjects per stored part: a redaction rewrites one part
SEPARATOR = "\n"


def escape(key: str) -> str:
    if "\\" in key or SEPARATOR in key:
        return key.replace("\\", "\\\\").replace(SEPARATOR, "\\n")
    return key


def token(key: str) -> str:
    """What a part holds for `key`, with both separators: what a search looks for."""
    return f"{SEPARATOR}{escape(key)}{SEPARATOR}"


def is_large(subjects: Sequence[str]) -> bool:
    return len(subjects) >= SET_MIN


class ArrowSubjects(tuple[str, ...]):
    """Subjects as a tuple that also holds them as an Arrow string array (`arrow`), and
    says whether they are distinct already (`distinct`): `parts` then takes the array as
    is instead of converting a million Python strings back to Arrow (a sync's subjects
    come from Arrow columns)."""

    arrow: Any
    distinct: bool

    def __new__(cls, array: Any, *, distinct: bool = False) -> ArrowSubjects:
        made = super().__new__(cls, array.to_pylist())
        made.arrow = array
        made.distinct = distinct
        return made


def parts(subjects: Sequence[str]) -> list[str]:
    """The distinct `subjects`, in order, as parts of at most `PART_SIZE` lines each.

    Done in Arrow (C): a million Python strings hashed by `dict.fromkeys` and escaped
    one by one cost as much as the COPY that sent them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(subjects, ArrowSubjects):
        keys = subjects.arrow if subjects.distinct else pc.unique(subjects.arrow)
    else:
        keys = pc.unique(pa.array(subjects, pa.string()))  # first occurrences, in order
    if pc.any(pc.match_substring_regex(keys, r"[\\\n]")).as_py():  # rare: escape
        keys = pc.replace_substring(keys, "\\", "\\\\")
        keys = pc.replace_substring(keys, SEPARATOR, "\\n")
    found = []
    for start in range(0, len(keys), PART_SIZE):
        chunk = keys.slice(start, PART_SIZE)
        lists = pa.ListArray.from_arrays(pa.array([0, len(chunk)], pa.int32()), chunk)
        body = pc.binary_join(lists, SEPARATOR)[0].as_py()
        found.append(f"{SEPARATOR}{body}{SEPARATOR}")
    return found


def redact(
    conn: Any, dialect: SqlDialect, key: str, subject_type: str | None, pseudonym: str
) -> int:
    """Name `key` by `pseudonym` in every stored set (of `subject_type`, None: any),
    inside the caller's transaction; the parts changed. A part naming the pseudonym
    already (a second erasure) just drops the key."""
    typed = "" if subject_type is None else " AND subject_type = ?"
    kind = () if subject_type is None else (subject_type,)
    old, new = token(key), token(pseudonym)
    find = dialect.find
    changed = 0
    for replacement, holds_pseudonym in ((SEPARATOR, ">"), (new, "=")):
        cursor = conn.execute(
            dialect.sql(
                "UPDATE audit_subject_sets SET subjects = replace(subjects, ?, ?)"
                f" WHERE {find}(subjects, ?) > 0 AND {find}(subjects, ?) {holds_pseudonym} 0"
                f"{typed}"
            ),
            (old, replacement, old, new, *kind),
        )
        changed += int(cursor.rowcount)
    return changed
