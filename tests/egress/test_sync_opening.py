"""Opening the destination in a thread while the diff runs (`egress/sync/opening.py`):
errors keep their place, and a batch in flight keeps the in-line order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from tidegate.egress.destinations.base import Capabilities, Destination, register
from tidegate.egress.sync.opening import Opening
from tidegate.errors import DestinationError, ServiceUnavailableError


class Recorder(Destination):
    kind: ClassVar[str] = "test_opening_recorder"
    capabilities: ClassVar[Capabilities] = Capabilities(
        supports_upsert=True,
        supports_delete=True,
        max_batch_rows=10,
        modes=("upsert",),
        opens_concurrently=True,
    )
    fail_construct = False
    fail_open = False
    made: ClassVar[list[Recorder]] = []

    def __init__(self) -> None:
        if Recorder.fail_construct:
            raise ServiceUnavailableError("cannot reach it")
        self.threads: list[str] = [threading.current_thread().name]
        self.opened: tuple[dict[str, str], str] | None = None
        self.closed = False
        Recorder.made.append(self)

    @classmethod
    def from_config(cls, config: Any, root: Path, sync: str = "") -> Recorder:
        return cls()

    def open(self, columns: dict[str, str], key: str) -> None:
        self.threads.append(threading.current_thread().name)
        if Recorder.fail_open:
            raise DestinationError("the table cannot be made")
        self.opened = (columns, key)

    def write(self, batch: Any, mode: str) -> int:
        return 0

    def delete(self, keys: list[Any]) -> int:
        return 0

    def read_all(self) -> list[dict[str, Any]]:
        return []

    def close(self) -> None:
        self.closed = True


CONFIG = SimpleNamespace(type=Recorder.kind)


def _opening(mode: str = "upsert", *, inflight: bool = False) -> Opening:
    return Opening(CONFIG, Path("."), "s", mode, mode, {"id": "BIGINT"}, "id", inflight=inflight)


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    """Registered only while a test here runs (the conformance suite checks the registry)."""
    from tidegate.egress.destinations.base import _REGISTRY

    Recorder.fail_construct = Recorder.fail_open = False
    Recorder.made.clear()
    register(Recorder)
    yield
    _REGISTRY.pop(Recorder.kind, None)


def test_without_a_batch_in_flight_it_is_made_and_opened_in_a_thread() -> None:
    opening = _opening()
    assert opening.ahead
    destination = opening.destination()
    opening.open()
    assert isinstance(destination, Recorder)
    assert destination.opened == ({"id": "BIGINT"}, "id")
    assert destination.threads == ["sync-open", "sync-open"]


def test_a_batch_in_flight_opens_in_line_when_asked() -> None:
    opening = _opening(inflight=True)
    assert not opening.ahead
    destination = opening.destination()
    assert isinstance(destination, Recorder)
    assert destination.opened is None
    opening.open()
    assert destination.opened is not None
    assert destination.threads == [threading.current_thread().name] * 2


def test_a_construction_error_is_raised_by_destination() -> None:
    Recorder.fail_construct = True
    opening = _opening()
    with pytest.raises(ServiceUnavailableError):
        opening.destination()


def test_an_open_error_and_an_unsupported_mode_are_raised_by_open() -> None:
    Recorder.fail_open = True
    opening = _opening()
    destination = opening.destination()  # made: the run can audit and close it
    with pytest.raises(DestinationError, match="cannot be made"):
        opening.open()
    Recorder.fail_open = False
    unsupported = _opening("insert")
    assert isinstance(unsupported.destination(), Recorder)
    with pytest.raises(DestinationError, match="does not support mode 'insert'"):
        unsupported.open()
    assert Recorder.made[-1].opened is None  # checked before anything is created
    assert not destination.closed


def test_abandon_closes_what_the_thread_made() -> None:
    opening = _opening()
    opening.abandon()
    assert Recorder.made
    assert Recorder.made[0].closed
