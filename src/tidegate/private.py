"""Project state at rest is private to its owner: files 0600, folders 0700.

The warehouse, online store, event log, metadata, keys and the files syncs write hold
personal data of every subject. Two layers keep them from other local users:

* the process entry point (`tidegate`, cli/app.py) sets the umask to 077, so everything
  the process creates, side files included (DuckDB's `.wal`, SQLite's `-wal`/`-shm`,
  temporary files), is born private;
* where tidegate creates a file or folder of state it also sets the mode explicitly
  (`private_dir`, `private_file`), for library use without that umask and for state
  created by an older version. SQLite gives its `-wal` and `-shm` files the database
  file's mode, so a database made 0600 right after opening keeps its side files 0600.

Folders tidegate did not create (a destination path in the user's home, say) keep their
mode: tidegate narrows only what it makes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700
UMASK = 0o077
#: side files next to a database, by engine: SQLite's WAL/shared memory/journal, DuckDB's WAL
SIDE_FILES = ("-wal", "-shm", "-journal", ".wal")


def restrict_umask() -> None:
    """For the process entry point: everything created from here on is owner-only."""
    os.umask(UMASK)


def private_dir(path: Path) -> Path:
    """`mkdir -p` where each folder created is 0700; existing folders are left alone."""
    missing = []
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=DIR_MODE)
            os.chmod(folder, DIR_MODE)  # mkdir's mode is narrowed by the umask, never widened
    return path


def private_file(path: Path, *, side_files: bool = False, create: bool = False) -> None:
    """Make a file (and, for a database, its side files) 0600; `create`: create it empty
    first when missing, so that it is never readable by others even for a moment (SQLite
    opens an empty file as a new database)."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    targets = [path]
    if side_files:
        targets += [path.with_name(path.name + suffix) for suffix in SIDE_FILES]
    for target in targets:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(target, FILE_MODE)
