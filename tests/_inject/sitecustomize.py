"""Fault injection for ``tests/e2e/test_faults.py``: SIGKILL a process inside a checkpoint write.

Put this directory first on ``PYTHONPATH`` and set ``DETFLOW_TEST_KILL=<point>:<n>``; the
interpreter imports this module at start-up (``site`` imports ``sitecustomize``), and the
process kills itself with ``SIGKILL`` at the ``n``-th time the checkpoint store reaches
``point``, one of:

``trial-state``
    the trial's state file of a checkpoint is written, not yet synced; ``state.json`` is not
    written and the checkpoint is still a temporary directory
``rename``
    the checkpoint's temporary directory is complete, not yet renamed to its final name
``after-rename``
    the directory is renamed, ``latest.json`` still points at the previous checkpoint
``latest``
    ``latest.json``'s new content is in its temporary file, not yet renamed over it
``best``
    ``best.json``'s new content is in its temporary file, not yet renamed over it

Only ``os.fsync`` and ``os.replace`` are wrapped, and only calls made from
``detflow/_harness/checkpoint.py`` and ``detflow/_core/files.py`` count: production code has
no test hooks. Without the variable nothing is changed.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

POINTS = ("trial-state", "rename", "after-rename", "latest", "best")


#: The modules whose calls count: the checkpoint store and the atomic writes it uses.
_CHECKPOINT_WRITERS = (
    os.path.join("detflow", "_harness", "checkpoint.py"),
    os.path.join("detflow", "_core", "files.py"),
)


def _from_checkpoint_module() -> bool:
    """Whether the wrapped call comes from the checkpoint store's writes (two frames up)."""
    return sys._getframe(2).f_code.co_filename.endswith(_CHECKPOINT_WRITERS)


def _fd_path(fd: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def install(point: str, nth: int) -> None:
    """Wrap ``os.fsync`` and ``os.replace`` to die at the ``nth`` time ``point`` is reached."""
    if point not in POINTS or nth < 1:
        raise SystemExit(f"DETFLOW_TEST_KILL: expected <{'|'.join(POINTS)}>:<n >= 1>")
    seen = [0]
    real_fsync: Callable[[Any], None] = os.fsync
    real_replace: Callable[..., None] = os.replace

    def reached() -> None:
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)

    def fsync(fd: Any) -> None:
        if point == "trial-state" and _from_checkpoint_module():
            path = _fd_path(fd if isinstance(fd, int) else fd.fileno())
            if (
                path is not None
                and path.name == "trial.json"
                and path.parent.name.startswith(".tmp-")
            ):
                reached()
        real_fsync(fd)

    def replace(src: Any, dst: Any, **kwargs: Any) -> None:
        ours = _from_checkpoint_module()
        source, target = Path(src), Path(dst)
        directory = ours and source.name.startswith(".tmp-")
        if ours and (
            (point == "rename" and directory)
            or (point == "latest" and target.name == "latest.json")
            or (point == "best" and target.name == "best.json")
        ):
            reached()
        real_replace(src, dst, **kwargs)
        if point == "after-rename" and directory:
            reached()

    os.fsync = fsync
    os.replace = replace


def _chain() -> None:
    """Run the ``sitecustomize`` this one hides, if the environment has one."""
    import importlib.machinery
    import importlib.util

    here = str(Path(__file__).resolve().parent)
    rest = [p for p in sys.path if p and str(Path(p).resolve()) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)


_setting = os.environ.get("DETFLOW_TEST_KILL", "")
if __name__ == "sitecustomize" and _setting:  # at start-up of a process the test injects into
    _chain()
    _name, _, _count = _setting.partition(":")
    install(_name, int(_count or 1))
