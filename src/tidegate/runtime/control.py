"""The control plane: a runtime answers CLI commands on a local admin socket.

A DuckDB file has one writer process. A runtime (`tidegate run`, `tidegate worker`) holds
the project's warehouse for as long as it runs, so a second process cannot build, sync,
export or answer a data-subject request. Instead of failing, the CLI hands the command to
the runtime: `AdminServer` listens on a Unix socket in the project's state dir
(`.tidegate/control/admin.sock`); the CLI (`cli/forward.py`) sends the command line, and
the runtime runs the very same command code in-process, with its own Platform (lent to
the command, `Platform.lend`) under the Platform's `writer_lock`, so the command, the
worker's micro-batches and the scheduler's rebuilds take turns on the warehouse. What the
command prints streams back; its exit code ends the answer.

Who may use it: the socket is 0600 in a 0700 directory, so only the OS user that owns
the runtime reaches it, and each connection's peer credentials (SO_PEERCRED) are checked
against the runtime's user (root is let in too). Nothing else authenticates: this is
the same trust as reading the project's state files, which that user can anyway.

The wire format is JSON lines: the client sends one `Invocation`; the server answers
`{"out": text}` / `{"err": text}` frames while the command runs, then `{"exit": code}`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

from tidegate.errors import TidegateError

log = logging.getLogger(__name__)

CONTROL_DIR = "control"
SOCKET_NAME = "admin.sock"
MAX_REQUEST = 1 << 20
PROTOCOL = 1


def socket_path(state_dir: Path) -> Path:
    return state_dir / CONTROL_DIR / SOCKET_NAME


@dataclass
class Terminal:
    """How the client's stream looks, so Rich renders for it and not for the runtime's."""

    width: int = 80
    is_terminal: bool = False
    color_system: str | None = None


@dataclass
class Invocation:
    argv: list[str]
    cwd: str
    out: Terminal = field(default_factory=Terminal)
    err: Terminal = field(default_factory=Terminal)
    protocol: int = PROTOCOL

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Invocation:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("argv"), list):
            raise ValueError("not an invocation")
        return cls(
            argv=[str(a) for a in data["argv"]],
            cwd=str(data.get("cwd", "")),
            out=Terminal(**data.get("out", {})),
            err=Terminal(**data.get("err", {})),
            protocol=int(data.get("protocol", PROTOCOL)),
        )


#: runs one invocation with stdout/stderr given; returns the exit code
Executor = Callable[[Invocation, TextIO, TextIO], int]


class _Wire:
    """One connection's sending side; frames from both streams never interleave."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.gone = False

    def send(self, frame: dict[str, Any]) -> None:
        data = (json.dumps(frame) + "\n").encode("utf-8")
        with self.lock:
            if self.gone:
                return
            try:
                self.conn.sendall(data)
            except OSError:  # the client went away (Ctrl-C); the command still completes
                self.gone = True


class RemoteStream(io.TextIOBase):
    """A text stream whose writes go to the client as frames."""

    def __init__(self, wire: _Wire, name: str, terminal: Terminal) -> None:
        self._wire = wire
        self._name = name
        self.terminal = terminal

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self._wire.send({self._name: text})
        return len(text)

    def isatty(self) -> bool:
        return self.terminal.is_terminal


# ---------------------------------------------------------------- per-thread stdout/stderr


class _Redirect(threading.local):
    out: TextIO | None = None
    err: TextIO | None = None


_redirect = _Redirect()


class _ThreadStream(io.TextIOBase):
    """Installed as sys.stdout/sys.stderr in a runtime: a thread running a command for the
    CLI writes to that client; every other thread to the process's own stream."""

    def __init__(self, name: str, own: TextIO) -> None:
        self._name = name
        self.own = own

    def _target(self) -> TextIO:
        found: TextIO | None = getattr(_redirect, self._name)
        return found if found is not None else self.own

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", "utf-8") or "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return self._target().isatty()

    def fileno(self) -> int:
        return self._target().fileno()


def install_thread_streams() -> None:
    """Make sys.stdout/sys.stderr (and logging handlers writing to them) per-thread."""
    import sys

    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if isinstance(current, _ThreadStream):
            continue
        dispatch = _ThreadStream("out" if name == "stdout" else "err", current)
        setattr(sys, name, dispatch)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is current:
                handler.setStream(dispatch)


@contextmanager
def thread_streams(out: TextIO, err: TextIO) -> Iterator[None]:
    before = (_redirect.out, _redirect.err)
    _redirect.out, _redirect.err = out, err
    try:
        yield
    finally:
        _redirect.out, _redirect.err = before


# ---------------------------------------------------------------- the server


def _peer_uid(conn: socket.socket) -> int | None:
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):  # not Linux: the 0700 directory is the guard
        return None
    _, uid, _ = struct.unpack("3i", raw)
    return int(uid)


def answers(path: Path, timeout: float = 2.0) -> bool:
    """Whether a live runtime listens on `path` (a stale socket file refuses)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


class AdminServer:
    """Listens on the project's admin socket; each connection runs one command."""

    def __init__(self, state_dir: Path, execute: Executor, lock: Any) -> None:
        self.path = socket_path(state_dir)
        self._execute = execute
        self._lock = lock
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._busy = threading.Semaphore(8)  # connections served at once (they queue anyway)

    def start(self) -> None:
        folder = self.path.parent
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        if self.path.exists() or self.path.is_symlink():
            if answers(self.path):
                raise TidegateError(
                    f"another runtime already answers for this project on {self.path}"
                )
            self.path.unlink()  # left by a runtime that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, stat.S_IRUSR | stat.S_IWUSR)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="tidegate-admin", daemon=True)
        self._thread.start()
        log.info("admin socket listening on %s", self.path)

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> AdminServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                raise
            self._busy.acquire()
            threading.Thread(
                target=self._serve, args=(conn,), name="tidegate-admin-command", daemon=True
            ).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(None)
                wire = _Wire(conn)
                uid = _peer_uid(conn)
                if uid is not None and uid not in (os.getuid(), 0):
                    log.warning("admin socket: refused a connection from uid %s", uid)
                    wire.send({"err": "error: not the runtime's user\n"})
                    wire.send({"exit": 1})
                    return
                try:
                    invocation = Invocation.from_json(_read_line(conn))
                except (ValueError, TypeError, OSError) as err:
                    wire.send({"err": f"error: bad request to the runtime: {err}\n"})
                    wire.send({"exit": 2})
                    return
                if invocation.protocol != PROTOCOL:
                    wire.send({"err": "error: this tidegate and the runtime differ in version\n"})
                    wire.send({"exit": 2})
                    return
                wire.send({"exit": self._run(invocation, wire)})
        finally:
            self._busy.release()

    def _run(self, invocation: Invocation, wire: _Wire) -> int:
        out = cast(TextIO, RemoteStream(wire, "out", invocation.out))
        err = cast(TextIO, RemoteStream(wire, "err", invocation.err))
        log.info("running for the CLI: tidegate %s", " ".join(invocation.argv))
        try:
            with self._lock, thread_streams(out, err):
                return self._execute(invocation, out, err)
        except BaseException as error:  # the executor maps errors itself; this is a bug
            log.exception("admin command failed")
            err.write(f"internal error in the runtime: {type(error).__name__}: {error}\n")
            return 70


def _read_line(conn: socket.socket) -> str:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            raise ValueError("the request ended early")
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk:
            break
        if size > MAX_REQUEST:
            raise ValueError("the request is too long")
    return b"".join(chunks).split(b"\n", 1)[0].decode("utf-8")
