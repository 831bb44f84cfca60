"""Files written so that a crash leaves the old content or the new, never half of either."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

__all__ = [
    "LOCK_NAME",
    "DirectoryLock",
    "fsync_dir",
    "remove_quietly",
    "write_atomic",
    "write_synced",
]

#: The lock file of a run or sweep directory.
LOCK_NAME = ".lock"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half.

    A write that fails (a full disk, say) leaves the old file and no temporary one, and
    raises an ``OSError`` that names ``path``.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "result.json"
    >>> write_atomic(p, b"{}")
    >>> p.read_bytes()
    b'{}'
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
    except OSError as exc:
        remove_quietly(tmp)
        raise naming(exc, path) from exc
    fsync_dir(path.parent)


def write_synced(path: Path, data: bytes) -> None:
    """Write and fsync ``path``; an ``OSError`` names it (a failed flush does not say)."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise naming(exc, path) from exc


def naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path``, the file a user knows, rather than a temporary one."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror, str(path))


def remove_quietly(path: Path) -> None:
    """Remove a file or a directory tree if it is there; never raise."""
    try:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryLock:
    """An exclusive lock on a run or sweep directory (``<dir>/.lock``), held until
    :meth:`release` or the process ends: a second run or sweep on it is refused.

    >>> import tempfile
    >>> where = Path(tempfile.mkdtemp())
    >>> first = DirectoryLock.acquire(where)
    >>> DirectoryLock.acquire(where) is None
    True
    >>> first.release()
    >>> DirectoryLock.acquire(where) is not None
    True
    """

    def __init__(self, handle: IO[str]) -> None:
        self._handle = handle

    @classmethod
    def acquire(cls, directory: Path) -> DirectoryLock | None:
        """The lock, or None when another process holds it (``"a"``: nothing is rewritten)."""
        handle = open(directory / LOCK_NAME, "a")  # noqa: SIM115 - held for the lock's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return cls(handle)

    def release(self) -> None:
        self._handle.close()
