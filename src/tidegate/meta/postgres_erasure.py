"""Erasure on the PostgreSQL metadata store: tombstones, the subject's rows in the consent
ledger and the sync tables, audit bodies, run stats and observations rewritten.

Deleted or updated values stay in dead tuples until VACUUM reclaims them
(capabilities.secure_delete is False): operators who need them gone at once run VACUUM on
the metadata schema after an erasure (the README says so).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

_BUMP = "UPDATE meta_heads SET value = value + 1 WHERE name = 'change_token'"


class PostgresErasureMixin:
    """Erasure on PostgreSQL. Deleted or updated values stay in dead tuples until VACUUM
    reclaims them (capabilities.secure_delete is False): operators who need them gone
    at once run VACUUM on the metadata schema after an erasure."""

    _tx: Callable[[], AbstractContextManager[Any]]
    _query: Callable[..., list[tuple[Any, ...]]]

    def add_tombstone(self, subject_hash: str, at: float, request_id: str) -> bool:
        with self._tx() as conn:
            conn.execute(_BUMP)
            cursor = conn.execute(
                "INSERT INTO erased_subjects (subject_hash, erased_at, request_id)"
                " VALUES (%s, %s, %s) ON CONFLICT (subject_hash) DO NOTHING",
                (subject_hash, at, request_id),
            )
            return bool(cursor.rowcount > 0)

    def tombstones(self, after_seq: int = 0) -> list[tuple[int, str, float]]:
        rows = self._query(
            "SELECT seq, subject_hash, erased_at FROM erased_subjects WHERE seq > %s ORDER BY seq",
            (after_seq,),
        )
        return [(int(s), str(h), float(a)) for s, h, a in rows]

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
        counts: dict[str, int] = {}
        only = "" if syncs is None else " AND sync = ANY(%s)"
        with self._tx() as conn:
            conn.execute(_BUMP)
            ledger = (
                conn.execute(
                    "SELECT seq, evidence FROM consent_ledger WHERE subject = %s", (subject,)
                ).fetchall()
                if consent
                else []
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "UPDATE consent_ledger SET subject = %s, evidence = %s WHERE seq = %s",
                    [(pseudonym, digest(str(evidence)), seq) for seq, evidence in ledger],
                )
            counts["consent_ledger"] = len(ledger)
            for table in ("sync_row_errors", "sync_suppressions"):
                params = (subject,) if syncs is None else (subject, list(syncs))
                cursor = conn.execute(f"DELETE FROM {table} WHERE subject = %s{only}", params)
                counts[table] = int(cursor.rowcount)
            for value in values:  # a refused row's message quoting the person's email
                cursor = conn.execute(
                    "DELETE FROM sync_row_errors WHERE strpos(message, %s) > 0", (value,)
                )
                counts["sync_row_errors"] = counts.get("sync_row_errors", 0) + int(cursor.rowcount)
        return counts

    def redact_audit(self, bodies: Mapping[int, str]) -> int:
        if not bodies:
            return 0
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE audit_log SET body = %s WHERE seq = %s",
                [(body.encode("utf-8", "surrogateescape"), seq) for seq, body in bodies.items()],
            )
        return len(bodies)

    def redact_runs(self, stats: Mapping[int, tuple[str, str]]) -> int:
        if not stats:
            return 0
        with self._tx() as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE runs SET stats = %s, error = %s WHERE run_id = %s",
                [(s, e, run_id) for run_id, (s, e) in stats.items()],
            )
        return len(stats)

    def runs_text(self) -> Iterator[tuple[int, str, str]]:
        for run_id, stats, error in self._query("SELECT run_id, stats, error FROM runs"):
            yield int(run_id), str(stats), str(error)

    def redact_observations(self, columns: Sequence[tuple[str, str]], value: float) -> int:
        changed = 0
        with self._tx() as conn:
            for table, column in (("obs_points", "value"), ("obs_quality", "observed")):
                for product, col in columns:
                    cursor = conn.execute(
                        f"UPDATE {table} SET {column} = NULL"
                        f" WHERE product = %s AND col = %s AND {column} = %s",
                        (product, col, value),
                    )
                    changed += int(cursor.rowcount)
        return changed

    def erasing(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()
