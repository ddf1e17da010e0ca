"""An anchor outside the audit log, so that cutting off its tail shows.

The hash chain proves every stored record is the one written after its predecessor,
but a log whose last records were deleted is still a valid chain. The anchor is a
small file beside the project state (`.tidegate/audit-anchor.json`) holding the last
(seq, hash) written, signed with an HMAC key derived from the project's master key, so
someone who can edit the metadata database cannot simply rewrite the anchor to match.

Rules:

* it only moves forward, and only when the record it points at is still in the log
  with the same hash; otherwise it stays where it is as evidence (and a warning is
  logged);
* it is created only together with the first record of a log: a missing anchor next to
  a non-empty log is reported by `verify`, never silently re-created. After a review,
  `tidegate audit anchor --reset` re-anchors at the current head (itself audited);
* it is replaced atomically (write, fsync, rename) under a file lock, so two processes
  writing the same log never move it backwards.

Where it is kept: a file for a single host (SQLite metadata), or, when the metadata is
shared by several hosts (PostgreSQL), a compare-and-set slot of the metadata store
(`MetadataStore.move_audit_anchor`), so every host advances one anchor. The signature
still stops a database writer from forging an anchor; what a slot beside the log cannot
stop is someone who can write the database replacing it with an *older* signed anchor
and cutting the log back to it. An anchor kept on the same disk (or in the same
database) guards against edits of the log, not against that, nor against an attacker
who also holds the master key; ship it off-host (WORM storage, a transparency log).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tidegate.audit.log import ChainIssue
from tidegate.meta.base import MetadataStore
from tidegate.private import private_dir, private_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Head:
    seq: int
    hash: str
    at: float


class AuditAnchor:
    """The anchor in a file at `path`, or in `shared`'s anchor slot when given (several
    hosts on one metadata store); `path` then only names it in messages."""

    def __init__(self, path: Path, master_key: bytes, shared: MetadataStore | None = None) -> None:
        self.path = Path(path)
        self._shared = shared
        self._key = hmac.new(master_key, b"tidegate/audit/anchor", hashlib.sha256).digest()
        self._seen: str | None = None  # the slot's text as last read (compare-and-set)

    @property
    def where(self) -> str:
        return "the metadata store's anchor slot" if self._shared else self.path.name

    # ------------------------------------------------------------ file

    def _mac(self, seq: int, digest: str, at: float) -> str:
        message = f"{seq}\n{digest}\n{at!r}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _text(self) -> str | None:
        if self._shared is not None:
            self._seen = self._shared.audit_anchor()
            return self._seen
        try:
            return self.path.read_text()
        except FileNotFoundError:
            return None

    def read(self) -> Head | None:
        """The anchored head; raises ValueError when the file is damaged or forged."""
        try:
            text = self._text()
            if text is None:
                return None
            data = json.loads(text)
        except (OSError, ValueError) as err:
            raise ValueError(f"the anchor file cannot be read: {err}") from None
        try:
            head = Head(int(data["seq"]), str(data["hash"]), float(data["at"]))
            mac = str(data["mac"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("the anchor file is malformed") from None
        if not hmac.compare_digest(mac, self._mac(head.seq, head.hash, head.at)):
            raise ValueError("the anchor file's signature does not match: it was edited")
        return head

    def write(self, seq: int, digest: str) -> None:
        at = time.time()
        body = {"seq": seq, "hash": digest, "at": at, "mac": self._mac(seq, digest, at)}
        if self._shared is not None:
            if not self._shared.move_audit_anchor(json.dumps(body), self._seen):
                raise _Moved  # another host moved it since we read it: read and decide again
            return
        private_dir(self.path.parent)
        tmp = self.path.with_suffix(".tmp")
        private_file(tmp, create=True)
        with tmp.open("w") as handle:
            json.dump(body, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        if self._shared is not None:
            return contextlib.nullcontext()  # the slot is compare-and-set instead
        return _file_lock(self.path.with_suffix(".lock"))

    # ------------------------------------------------------------ moves

    def advance(self, first_seq: int, seq: int, digest: str, store: MetadataStore) -> None:
        """Move the anchor to (seq, digest): the last record of a batch just written to
        `store` whose first record was `first_seq`."""
        for _ in range(20):  # a shared slot that another host keeps moving: try again
            try:
                return self._advance(first_seq, seq, digest, store)
            except _Moved:
                continue
        log.warning("audit anchor not advanced: other writers kept moving it")

    def _advance(self, first_seq: int, seq: int, digest: str, store: MetadataStore) -> None:
        with self._locked():
            try:
                head = self.read()
            except ValueError as err:
                log.warning("audit anchor not advanced: %s", err)
                return
            if head is None:
                if first_seq == 1:
                    self.write(seq, digest)
                else:
                    log.warning(
                        "audit anchor %s is missing beside a non-empty log; not re-created "
                        "(review with `tidegate audit verify`, then `tidegate audit anchor "
                        "--reset`)",
                        self.where,
                    )
                return
            if seq <= head.seq:
                return
            if _hash_at(store, head.seq) != head.hash:
                log.warning("audit anchor not advanced: record %s no longer matches it", head.seq)
                return
            self.write(seq, digest)

    def reset(self, store: MetadataStore) -> Head | None:
        """Anchor at the current head of the log (after a human review)."""
        with self._locked():
            last = store.last_audit()
            if last is None:
                if self._shared is None:
                    self.path.unlink(missing_ok=True)
                return None
            self._text()  # the slot as it is (even forged), for the compare-and-set
            self.write(last.seq, last.hash)
            return self.read()

    # ------------------------------------------------------------ checks

    def check(self, store: MetadataStore, last_seq: int) -> list[ChainIssue]:
        try:
            head = self.read()
        except ValueError as err:
            return [ChainIssue(last_seq, f"audit anchor: {err}")]
        if head is None:
            if last_seq > 0:
                return [
                    ChainIssue(
                        last_seq,
                        f"the audit anchor ({self.where}) is missing: the log's tail "
                        "cannot be checked (deleted anchor?)",
                    )
                ]
            return []
        if last_seq < head.seq:
            return [
                ChainIssue(
                    head.seq,
                    f"the log ends at record {last_seq} but the anchor says record {head.seq} "
                    f"was written: records {last_seq + 1}..{head.seq} were removed",
                )
            ]
        if _hash_at(store, head.seq) != head.hash:
            return [
                ChainIssue(
                    head.seq,
                    "does not match the anchor's hash: the log was cut and rewritten from here",
                )
            ]
        return []


class _Moved(Exception):
    """The shared anchor slot changed between our read and our write."""


def _hash_at(store: MetadataStore, seq: int) -> str | None:
    found = store.audit_records(seq - 1, limit=1)
    return found[0].hash if found and found[0].seq == seq else None


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    private_dir(path.parent)
    private_file(path, create=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
