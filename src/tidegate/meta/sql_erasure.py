"""Erasure on a SQL metadata store: tombstones, the pseudonymised consent ledger, the
sync-state rows of one subject, and the redaction of audit bodies, run stats and
observations, written once for SQLite and PostgreSQL.

A mixin of both stores (it uses their `_tx`, `_query` and `_dialect`), kept apart so the
erasure code reads in one place. The domain rules (what a tombstone hashes, which
ledger evidence is kept, which audit records are redacted and how the chain still
verifies) live in `requests/subject_requests.py`, `privacy/tombstones.py` and
`audit/redact.py`; this layer stores and deletes, atomically.

Every write runs inside `erasing()`: on SQLite a block in which deletes overwrite their
data (`sqlite_erasure`); on PostgreSQL nothing can, so deleted or updated values stay in
dead tuples until VACUUM reclaims them (capabilities.secure_delete is False): operators
who need them gone at once run VACUUM on the metadata schema after an erasure (the README
says so).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tidegate.meta.sql_parts import SqlStore

#: tables holding one sync's rows by subject; those of an older SQLite version
#: (`sync_rows`, `sync_inflight`) only while they exist
SYNC_SUBJECT_TABLES = ("sync_rows", "sync_row_errors", "sync_inflight", "sync_suppressions")

_BUMP = "UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'"


class SqlErasureMixin(SqlStore):
    def erasing(self) -> AbstractContextManager[None]:
        """A block in which deletes overwrite their data where the backend can."""
        return contextlib.nullcontext()

    def _tables(self, conn: Any) -> set[str]:
        return {str(r[0]) for r in conn.execute(self._dialect.tables).fetchall()}

    # --- tombstones
    def add_tombstone(self, subject_hash: str, at: float, request_id: str) -> bool:
        """Record an erased subject by its keyed hash; False when it was already there."""
        with self._tx() as conn:
            conn.execute(_BUMP)
            cursor = conn.execute(
                self._sql(
                    "INSERT INTO erased_subjects (subject_hash, erased_at, request_id)"
                    " VALUES (?, ?, ?) ON CONFLICT (subject_hash) DO NOTHING"
                ),
                (subject_hash, at, request_id),
            )
            return bool(cursor.rowcount > 0)

    def tombstones(self, after_seq: int = 0) -> list[tuple[int, str, float]]:
        """(seq, subject hash, erased at) of tombstones after `after_seq`, in order."""
        rows = self._query(
            self._sql(
                "SELECT seq, subject_hash, erased_at FROM erased_subjects"
                " WHERE seq > ? ORDER BY seq"
            ),
            (after_seq,),
        )
        return [(int(s), str(h), float(a)) for s, h, a in rows]

    # --- one subject's rows
    def erase_subject_rows(
        self,
        subject: str,
        pseudonym: str,
        digest: Callable[[str], str],
        values: Sequence[str] = (),
        *,
        syncs: Sequence[str] | None = None,
        consent: bool = True,
    ) -> dict[str, int]:
        """In one transaction: the subject's consent ledger entries keep their purpose,
        action and times under `pseudonym`, their evidence replaced by `digest(evidence)`;
        the subject's rows in the sync-state tables are deleted, and so are row errors
        whose message quotes one of `values` (the person's email, phone). Returns counts
        by table.

        `syncs`: only the state of these syncs (those sending the subject's type; None:
        all); `consent`: False leaves the ledger alone (it keys another subject type)."""
        sql = self._sql
        counts: dict[str, int] = {}
        only = "" if syncs is None else f" AND sync IN ({', '.join('?' * len(syncs))})"
        with self.erasing(), self._tx() as conn:
            conn.execute(_BUMP)  # first: serialises with the ledger's other writers
            ledger = (
                conn.execute(
                    sql("SELECT seq, evidence FROM consent_ledger WHERE subject = ?"), (subject,)
                ).fetchall()
                if consent
                else []
            )
            self._many(
                conn,
                "UPDATE consent_ledger SET subject = ?, evidence = ? WHERE seq = ?",
                [(pseudonym, digest(str(evidence)), seq) for seq, evidence in ledger],
            )
            counts["consent_ledger"] = len(ledger)
            present = self._tables(conn)
            for table in SYNC_SUBJECT_TABLES:
                if table in present and (syncs is None or syncs):
                    cursor = conn.execute(
                        sql(f"DELETE FROM {table} WHERE subject = ?{only}"),
                        (subject, *(syncs or ())),
                    )
                    counts[table] = int(cursor.rowcount)
            if "sync_row_errors" in present:
                quoting = f"DELETE FROM sync_row_errors WHERE {self._dialect.find}(message, ?) > 0"
                for value in values:  # a refused row's message quoting the person's email
                    cursor = conn.execute(sql(quoting), (value,))
                    counts["sync_row_errors"] = counts.get("sync_row_errors", 0) + int(
                        cursor.rowcount
                    )
        return counts

    # --- redaction
    def redact_audit(self, bodies: Mapping[int, str]) -> int:
        """Replace the bodies of these audit records (hashes and links stay as stored)."""
        if not bodies:
            return 0
        as_bytes = self._dialect.body_bytes
        with self.erasing(), self._tx() as conn:
            self._many(
                conn,
                "UPDATE audit_log SET body = ? WHERE seq = ?",
                [
                    (body.encode("utf-8", "surrogateescape") if as_bytes else body, seq)
                    for seq, body in bodies.items()
                ],
            )
        return len(bodies)

    def redact_runs(self, stats: Mapping[int, tuple[str, str]]) -> int:
        """Replace (stats JSON, error) of these runs."""
        if not stats:
            return 0
        with self.erasing(), self._tx() as conn:
            self._many(
                conn,
                "UPDATE runs SET stats = ?, error = ? WHERE run_id = ?",
                [(s, e, run_id) for run_id, (s, e) in stats.items()],
            )
        return len(stats)

    def runs_text(self) -> Iterator[tuple[int, str, str]]:
        """(run id, stats JSON, error) of every run: what a redaction scan reads."""
        for run_id, stats, error in self._query("SELECT run_id, stats, error FROM runs"):
            yield int(run_id), str(stats), str(error)

    def redact_observations(self, columns: Sequence[tuple[str, str]], value: float) -> int:
        """Null the observed statistics (min, max, quantiles...) of these (product,
        column) pairs that equal `value`: a maximum that *is* an erased person's id."""
        changed = 0
        with self.erasing(), self._tx() as conn:
            present = self._tables(conn)
            for table, column in (("obs_points", "value"), ("obs_quality", "observed")):
                if table not in present:
                    continue
                for product, col in columns:
                    cursor = conn.execute(
                        self._sql(
                            f"UPDATE {table} SET {column} = NULL"
                            f" WHERE product = ? AND col = ? AND {column} = ?"
                        ),
                        (product, col, value),
                    )
                    changed += int(cursor.rowcount)
        return changed
