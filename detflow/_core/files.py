"""Files written so that a crash leaves the old content or the new, never half of either."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["fsync_dir", "remove_quietly", "write_atomic", "write_synced"]


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
