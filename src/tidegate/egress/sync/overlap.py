"""Checkpoints written while the next batch is sent.

A batch's checkpoint (its state segment encoded and committed to the metadata store)
does not need to hold up the next batch in modes where sending a row twice changes
nothing (upsert, update, mirror): if the process dies before the checkpoint commits, the
next run finds those rows unrecorded and sends them again, to the same effect. So the
checkpoint of batch n runs in a thread while batch n+1 is written; at most one is ever
outstanding, and each is in order and waited for before the run goes on past its
batches (removals, compaction, the audit record). The first checkpoint of a run is
written in place and the thread started only for the second: most runs send one batch,
and starting a thread costs more than it saves there (on a loaded machine, far more).

Insert mode keeps every checkpoint synchronous: its in-flight marker for batch n+1 must
be committed after batch n's checkpoint and before batch n+1 leaves, or a crash could
insert rows twice.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Checkpoints:
    """Run checkpoint calls in order, one at a time; in the background when `overlap`."""

    def __init__(self, *, overlap: bool, several: bool = False) -> None:
        """`several`: the run knows it sends more than one batch (a first sync bigger than
        its first batch), so the first checkpoint goes to the thread as well."""
        self._overlap = overlap
        self._several = several
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[Any] | None = None
        self._submitted = 0

    def submit(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run `call` after the one before it finished (raising that one's error here)."""
        self.wait()
        self._submitted += 1
        if self._overlap and (self._submitted > 1 or self._several) and self._pool is None:
            self._pool = ThreadPoolExecutor(1, "sync-checkpoint")
        if self._pool is None:
            call(*args, **kwargs)
        else:
            self._pending = self._pool.submit(call, *args, **kwargs)

    def wait(self) -> None:
        """Until the outstanding checkpoint is committed; raises its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
