"""The audit writer: the serving path queues records, a background thread stores them in
batches (one transaction and one anchor update per batch).

Guarantees:

* `submit` never blocks on the database: it appends to an in-memory queue;
* records are stored in submission order, chained like any other append;
* `flush()` returns once everything submitted before it is stored; `close()` flushes
  and stops the thread (the Platform closes it, and an `atexit` hook covers a process
  that exits without closing), so a clean shutdown loses nothing;
* a failed write (database locked, disk full) is retried with backoff; the records stay
  queued meanwhile, in order.

What it does not guarantee: records still queued when the process is killed (`kill -9`,
power loss) are lost. The window is one batch interval (`interval`, 20 ms by default)
plus one transaction; callers that must not return before their record is durable use
`AuditLog.append`.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidegate.audit.log import AuditLog, AuditRecord

log = logging.getLogger(__name__)

MAX_BATCH = 1000
INTERVAL = 0.02
MAX_BACKOFF = 2.0


class AuditWriter:
    def __init__(
        self, audit: AuditLog, *, interval: float = INTERVAL, max_batch: int = MAX_BATCH
    ) -> None:
        self._audit = audit
        self._interval = interval
        self._max_batch = max_batch
        self._queue: deque[AuditRecord] = deque()
        self._cond = threading.Condition()
        self._submitted = 0  # records ever submitted
        self._stored = 0  # records ever stored (a prefix of the submitted ones)
        self._closing = False
        self._idle = False  # the thread waits for a first record (not gathering a batch)
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="tidegate-audit", daemon=True)
        self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    def submit(self, record: AuditRecord) -> None:
        with self._cond:
            if self._closing:
                # after close: keep the promise, store it the slow way
                self._audit.write_batch([record])
                return
            self._queue.append(record)
            self._submitted += 1
            if self._idle or len(self._queue) >= self._max_batch:
                # wake the thread only when it sleeps on an empty queue or a batch is
                # full: woken on every submit, it would store batches of one record and
                # take the GIL from the serving loop once per request
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._submitted - self._stored

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until what was submitted so far is stored; False on timeout."""
        if threading.current_thread() is self._thread:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._submitted
            self._cond.notify_all()
            while self._stored < target:
                if not self._thread.is_alive():
                    self._drain_inline()
                    break
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 0.5)
        return True

    def close(self) -> None:
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            self._drain_inline()

    # ------------------------------------------------------------ thread

    def _drain_inline(self) -> None:
        """Store whatever is still queued from the calling thread (lock held)."""
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
            self._audit.write_batch(batch)
            self._stored += len(batch)
        self._cond.notify_all()

    def _run(self) -> None:
        backoff = 0.05
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
                if not self._queue and self._closing:
                    return
                batch = list(self._queue)[: self._max_batch]
            try:
                self._audit.write_batch(batch)
            except Exception:
                self.failures += 1
                log.exception("audit batch of %s records not stored; retrying", len(batch))
                with self._cond:
                    if self._closing:
                        return  # close() drains inline and raises to its caller
                    self._cond.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 0.05
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self._stored += len(batch)
                self._cond.notify_all()
                if not self._closing and len(self._queue) < self._max_batch:
                    # let a burst gather into one batch, unless someone is waiting
                    self._cond.wait(self._interval)


def _close_at_exit(ref: weakref.ref[AuditWriter]) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.close()
        except Exception:
            log.exception("audit records still queued at exit could not be stored")
