"""`Checkpoints`: a batch's checkpoint runs while the next batch is sent, in order, one
at a time, its error raised to the run; synchronous when overlap is off (insert mode)."""

from __future__ import annotations

import threading

import pytest

from tidegate.egress.sync.overlap import Checkpoints


def test_checkpoints_run_in_order_one_at_a_time_in_the_background() -> None:
    done: list[int] = []
    release = threading.Event()
    caller = threading.get_ident()
    threads: set[int] = set()

    def checkpoint(n: int) -> None:
        threads.add(threading.get_ident())
        if n == 0:
            assert release.wait(5)
        done.append(n)

    with Checkpoints(overlap=True) as checkpoints:
        checkpoints.submit(checkpoint, 0)
        assert done == []  # the caller goes on (sends the next batch) meanwhile
        release.set()
        checkpoints.submit(checkpoint, 1)  # waits for 0 first: never two outstanding
        assert done[0] == 0
    assert done == [0, 1]  # closing waits for the last one
    assert caller not in threads


def test_a_failed_checkpoint_fails_the_run() -> None:
    def fails() -> None:
        raise RuntimeError("metadata store gone")

    checkpoints = Checkpoints(overlap=True)
    checkpoints.submit(fails)
    with pytest.raises(RuntimeError, match="metadata store gone"):
        checkpoints.submit(lambda: None)
    checkpoints.submit(fails)
    with pytest.raises(RuntimeError, match="metadata store gone"):
        checkpoints.close()


def test_without_overlap_each_checkpoint_is_committed_before_submit_returns() -> None:
    done: list[int] = []
    caller = threading.get_ident()

    def checkpoint(n: int) -> None:
        assert threading.get_ident() == caller
        done.append(n)

    with Checkpoints(overlap=False) as checkpoints:
        checkpoints.submit(checkpoint, 0)
        assert done == [0]
