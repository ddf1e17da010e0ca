"""Platform.component: the typed memo that upper layers hang their services on."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tidegate.ingest.intake import Intake, intake_of
from tidegate.platform import Platform
from tidegate.privacy.consent import consent_ledger_of, consent_view_of
from tidegate.privacy.guard import Guard, guard_of


class _Closable:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def close(self) -> None:
        self.log.append(self.name)


def test_a_component_is_built_once_per_platform_and_factory(demo_copy: Path) -> None:
    with Platform.open(demo_copy) as first, Platform.open(demo_copy) as second:
        guard = guard_of(first)
        assert isinstance(guard, Guard)
        assert guard_of(first) is guard
        assert guard_of(second) is not guard
        assert guard.consent is consent_view_of(first)  # the guard reads the shared view
        assert consent_ledger_of(first) is consent_ledger_of(first)


def test_threads_racing_for_a_component_get_the_same_one(demo_copy: Path) -> None:
    built: list[int] = []
    start = threading.Barrier(8)

    def slow(platform: Platform) -> object:
        built.append(1)
        time.sleep(0.02)  # wide enough for the others to arrive meanwhile
        return object()

    found: list[object] = []

    def take(platform: Platform) -> None:
        start.wait()
        found.append(platform.component(slow))

    with Platform.open(demo_copy) as platform:
        threads = [threading.Thread(target=take, args=(platform,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(built) == 1
    assert len({id(f) for f in found}) == 1


def test_components_close_with_the_platform_newest_first(demo_copy: Path) -> None:
    closed: list[str] = []

    def first(platform: Platform) -> _Closable:
        return _Closable(closed, "first")

    def second(platform: Platform) -> _Closable:
        platform.component(first)
        return _Closable(closed, "second")

    platform = Platform.open(demo_copy)
    platform.component(second)
    intake = intake_of(platform)
    assert isinstance(intake, Intake)
    platform.close()
    assert closed == ["second", "first"]
    assert platform.component(first) is not None  # rebuilt after close, not a stale one
    platform.close()
    assert closed == ["second", "first", "first"]
