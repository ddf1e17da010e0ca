"""Opening the destination while the diff runs.

Connecting to a database destination and preparing its table (`open`: a connection,
`CREATE TABLE IF NOT EXISTS`, catalog reads) is a few network round trips; the diff is
DuckDB work (it releases the GIL). Neither needs the other, so for destinations that
allow it (`Capabilities.opens_concurrently`: the object made in one thread is used from
another) the destination is constructed and opened in a thread while the run diffs.

Only when no batch is in flight: an interrupted batch is reconciled against the open
destination and recorded in the sync state before the state is read for the diff.
Errors keep their place: one constructing the destination is raised as if it had been
constructed in line (before the run's audit scope), one of the mode check or of `open`
where `open` used to run (inside it).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from tidegate.egress.destinations.base import Destination, destination_class, open_destination
from tidegate.errors import DestinationError


def check_mode(destination: Destination, sync: str, mode: str, write_mode: str) -> None:
    caps = destination.capabilities
    if write_mode not in caps.modes:
        raise DestinationError(
            f"sync {sync!r}: destination {destination.kind!r} does not support mode "
            f"{mode!r} (it supports {', '.join(caps.modes)})"
        )


class Opening:
    """The destination of one run, constructed and opened in a thread when `ahead`."""

    def __init__(
        self,
        config: Any,
        root: Path,
        sync: str,
        mode: str,
        write_mode: str,
        columns: dict[str, str],
        key: str,
        *,
        inflight: bool,
    ) -> None:
        self._args = (config, root, sync, mode, write_mode, columns, key)
        self.capabilities = destination_class(config.type).capabilities
        self.ahead = not inflight and self.capabilities.opens_concurrently
        self._destination: Destination | None = None
        self._construct_error: BaseException | None = None
        self._open_error: BaseException | None = None
        self._opened = False
        self._thread: threading.Thread | None = None
        if self.ahead:
            self._thread = threading.Thread(target=self._work, name="sync-open", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        config, root, sync, mode, write_mode, columns, key = self._args
        try:
            self._destination = open_destination(config, root, sync)
        except BaseException as err:  # raised by `destination`
            self._construct_error = err
            return
        try:
            check_mode(self._destination, sync, mode, write_mode)
            self._destination.open(columns, key)
            self._opened = True
        except BaseException as err:  # raised by `open`
            self._open_error = err

    def destination(self) -> Destination:
        """The destination, constructed (raises what constructing it raised)."""
        if self._thread is None:
            config, root, sync, *_ = self._args
            self._destination = open_destination(config, root, sync)
            return self._destination
        self._thread.join()
        if self._construct_error is not None:
            raise self._construct_error
        assert self._destination is not None
        return self._destination

    def open(self) -> None:
        """The mode checked and the destination opened (raises what that raised)."""
        if self._thread is None:
            _, _, sync, mode, write_mode, columns, key = self._args
            assert self._destination is not None
            check_mode(self._destination, sync, mode, write_mode)
            self._destination.open(columns, key)
            return
        if self._open_error is not None:
            raise self._open_error

    def abandon(self) -> None:
        """The run failed before taking the destination: close it once it is made."""
        if self._thread is None:
            return
        self._thread.join()
        if self._destination is not None:
            self._destination.close()
