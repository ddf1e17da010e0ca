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

Medium lists (a 100-key lookup: `PENDING_MIN` to `SET_MIN` subjects) take a third way,
the way an LSM tree does: written at once as one set row with `part = PENDING` (cheap,
appended), then *folded* into the `audit_subjects` index in large sorted batches (`fold`,
run by the audit appends). One random B-tree insert per subject, per audit batch, cost
about a dirtied index page each: at 400 lookups/s that was a third of a 100-key lookup's
server CPU, and it grows with the index. Sorted in batches of thousands, inserts share
pages. Until folded, a pending list is found and redacted like any set (the search and
the redaction read every set row); the fold and a redaction never interleave (they run
under the audit's write lock), so a folded key is the redacted one when a redaction
came first, and a redaction that comes after finds it in the index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tidegate.meta.sql_parts import SqlDialect

SET_MIN = 256  # subjects from which a record's list is stored as a set
PENDING_MIN = 8  # subjects from which a smaller list waits as a set to be folded
PENDING = -1  # the `part` of a list waiting to be folded into the index
FOLD_SUBJECTS = 20_000  # pending subjects that make the next append fold them
FOLD_SECONDS = 5.0  # or: the longest a list waits after the last fold
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


def is_pending(subjects: Sequence[str]) -> bool:
    """Stored as one pending set, folded into the index later (see the module's doc)."""
    return PENDING_MIN <= len(subjects) < SET_MIN


def unescape(line: str) -> str:
    if "\\" not in line:
        return line
    out, chars = [], iter(line)
    for char in chars:
        if char == "\\":
            following = next(chars, "")
            out.append(SEPARATOR if following == "n" else following)
        else:
            out.append(char)
    return "".join(out)


def keys_of(body: str) -> list[str]:
    """The keys a stored part holds, unescaped (the inverse of `parts`)."""
    return [unescape(line) for line in body.strip(SEPARATOR).split(SEPARATOR) if line]


class FoldClock:
    """When a store's appends fold the pending lists: after `FOLD_SUBJECTS` pending
    subjects, or `FOLD_SECONDS` after the last fold (the first append of a process folds
    what an earlier one left)."""

    def __init__(self) -> None:
        self._subjects = 0
        self._folded_at: float | None = None

    def added(self, records: Sequence[Any]) -> bool:
        """Count the pending subjects of `records`; whether it is time to fold."""
        import time

        self._subjects += sum(len(r.subjects) for r in records if is_pending(r.subjects))
        now = time.monotonic()
        due = (
            self._folded_at is None
            or self._subjects >= FOLD_SUBJECTS
            or (self._subjects > 0 and now - self._folded_at >= FOLD_SECONDS)
        )
        if due:
            self._subjects, self._folded_at = 0, now
        return due


def set_rows(records: Sequence[Any]) -> list[tuple[int, str, int, str]]:
    """(record_seq, subject_type, part, body) to store in `audit_subject_sets`: each
    pending list as one part (`PENDING`), each large one as its parts."""
    return [
        (r.seq, r.subject_type, PENDING, parts(r.subjects)[0])
        for r in records
        if is_pending(r.subjects)
    ] + [
        (r.seq, r.subject_type, part, body)
        for r in records
        if is_large(r.subjects)
        for part, body in enumerate(parts(r.subjects))
    ]


def insert_sets(cursor: Any, dialect: SqlDialect, records: Sequence[Any]) -> None:
    """Store the set rows of `records` (`set_rows`) with a DB-API cursor."""
    rows = set_rows(records)
    if rows:
        cursor.executemany(
            dialect.sql(
                "INSERT INTO audit_subject_sets (record_seq, subject_type, part, subjects)"
                " VALUES (?, ?, ?, ?)"
            ),
            rows,
        )


def index_rows(records: Sequence[Any]) -> list[tuple[str, str, int]]:
    """(subject_key, subject_type, record_seq) to insert in `audit_subjects` at once: the
    small lists' (one or a few subjects: most reads), each key once per record."""
    return [
        (key, r.subject_type, r.seq)
        for r in records
        if len(r.subjects) < PENDING_MIN
        for key in dict.fromkeys(r.subjects)
    ]


def fold(conn: Any, dialect: SqlDialect, insert: Any) -> int:
    """Move every pending list into the index, inside the caller's transaction (which
    holds the audit's write lock); the entries inserted. `insert(conn, rows)` adds
    (subject_key, subject_type, record_seq) rows to `audit_subjects`, ignoring
    duplicates; they come sorted, so neighbouring keys share index pages."""
    found = conn.execute(
        dialect.sql(
            "SELECT record_seq, subject_type, subjects FROM audit_subject_sets WHERE part = ?"
        ),
        (PENDING,),
    ).fetchall()
    if not found:
        return 0
    rows = sorted(
        {(key, str(kind), int(seq)) for seq, kind, body in found for key in keys_of(body)}
    )
    insert(conn, rows)
    conn.execute(dialect.sql("DELETE FROM audit_subject_sets WHERE part = ?"), (PENDING,))
    return len(rows)


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
