"""`Checkpoints`: a batch's checkpoint runs while the next batch is sent, in order, one
at a time, its error raised to the run; the first of a run in place (no thread for a
one-batch run); synchronous when overlap is off (insert mode)."""

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
        if n == 1:
            assert release.wait(5)
        done.append(n)

    with Checkpoints(overlap=True) as checkpoints:
        checkpoints.submit(checkpoint, 0)
        assert done == [0]  # the first in place: a one-batch run starts no thread
        assert threads == {caller}
        checkpoints.submit(checkpoint, 1)
        assert done == [0]  # the caller goes on (sends the next batch) meanwhile
        release.set()
        checkpoints.submit(checkpoint, 2)  # waits for 1 first: never two outstanding
        assert done[:2] == [0, 1]
    assert done == [0, 1, 2]  # closing waits for the last one
    assert len(threads - {caller}) == 1


def test_a_failed_checkpoint_fails_the_run() -> None:
    def fails() -> None:
        raise RuntimeError("metadata store gone")

    checkpoints = Checkpoints(overlap=True)
    checkpoints.submit(lambda: None)
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


def test_a_run_known_to_send_several_batches_checkpoints_the_first_in_the_background() -> None:
    release = threading.Event()
    done: list[int] = []
    caller = threading.get_ident()

    def checkpoint(n: int) -> None:
        assert threading.get_ident() != caller
        assert release.wait(5)
        done.append(n)

    with Checkpoints(overlap=True, several=True) as checkpoints:
        checkpoints.submit(checkpoint, 0)
        assert done == []  # the caller sends the second batch meanwhile
        release.set()
        checkpoints.submit(checkpoint, 1)
    assert done == [0, 1]
