"""Is the process behind a consumer-group member still alive?

A member of the embedded log's group records which process it is: host name, pid and
the process's start time (from /proc, in clock ticks since boot, so a recycled pid is
not mistaken for the old process). A member on this host whose process is gone is
dead at once: after a `kill -9` and restart, the new process takes the partitions back
without waiting for the session timeout. Members on other hosts (a shared file system)
or without a start time are left to the session timeout, as before.
"""

from __future__ import annotations

import functools
import os
import socket


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its end
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None  # field 22: starttime


@functools.cache
def _host() -> str:
    return socket.gethostname()


def this_process() -> str:
    """`host/pid/start`, recorded with each member this process opens."""
    pid = os.getpid()
    return f"{_host()}/{pid}/{_start_ticks(pid) or ''}"


def is_gone(process: str | None) -> bool:
    """True only when `process` ran on this host and is certainly not running now."""
    if not process:
        return False
    host, _, rest = process.partition("/")
    pid_text, _, start = rest.partition("/")
    if host != _host() or not pid_text.isdigit() or not start:
        return False
    now = _start_ticks(int(pid_text))
    return now is None or now != start
