"""Folding pending audit subject lists (`meta/subject_sets.py`) leaves no clear key in the
SQLite file: after an erasure renamed a folded key, the file and its WAL hold only the
pseudonym, so the deleted pending row did not leave the key on a freed page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidegate.meta.base import StoredAuditRecord
from tidegate.meta.sqlite import SqliteMetadataStore

SECRET = "subject-7781-zq"


def _bytes_at_rest(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


def test_a_folded_then_erased_key_is_nowhere_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tidegate.meta import subject_sets

    path = tmp_path / "meta.db"
    store = SqliteMetadataStore(path)
    medium = (SECRET, *(f"other-{i}" for i in range(50)))

    def record(seq: int, subjects: tuple[str, ...]) -> StoredAuditRecord:
        return StoredAuditRecord(seq, f'{{"n":{seq}}}', "p", f"h{seq}", subjects, "customer")

    # Debian's SQLite zeroes deleted content by default, others do not: as they do
    store._db.execute("PRAGMA secure_delete = OFF")
    try:
        store.append_audit_chained(lambda last: [record(1, ("x",))])
        # a large list beside it (kept as a set) shares its page, so the deleted row's
        # bytes would stay in that page's free space unless they are overwritten
        large = tuple(f"l{i}" for i in range(subject_sets.SET_MIN))
        store.append_audit_chained(lambda last: [record(2, medium), record(4, large)])
        monkeypatch.setattr(subject_sets, "FOLD_SECONDS", 0.0)
        store.append_audit_chained(lambda last: [record(5, ("y",))])  # folds record 2's list
        assert store.audit_subject_seqs(SECRET) == [2]
        assert store.redact_audit_subjects(SECRET, None, "erased:one") == 1
        assert store.audit_subject_seqs("erased:one") == [2]
    finally:
        store.close()
    at_rest = _bytes_at_rest(path)
    assert b"erased:one" in at_rest
    assert SECRET.encode() not in at_rest
    assert b"other-49" in at_rest  # the scan reads what it should
    assert b"l255" in at_rest
