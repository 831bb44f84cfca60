"""Checkpoints written atomically: temp directory, fsync, rename, then a pointer file.

``checkpoints/<batches>/`` holds ``state.json`` (counters, RNG, metric) and the trial's
state (JSON when it can be, else ``torch.save``); ``latest.json`` and ``best.json`` point at
the last good and the best checkpoint. A run keeps its latest checkpoint, the
``checkpoint_storage.save_trial_latest`` latest and the ``save_trial_best`` best; every other
checkpoint is removed (:func:`detflow._core.checkpoints.kept`). With
``checkpoint_storage.storage_path`` the run's ``checkpoints`` is a link to its directory
there (:func:`checkpoint_root`).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from detflow._core.artifacts import CHECKPOINTS_DIR
from detflow._core.checkpoints import BEST_POINTER, LATEST_POINTER, checkpoint_metric, kept
from detflow._core.errors import ConfigError, CorruptCheckpoint
from detflow._core.files import fsync_dir, naming, remove_quietly, write_atomic, write_synced

__all__ = ["CheckpointStore", "CorruptCheckpoint", "checkpoint_root"]

log = logging.getLogger("detflow")


def checkpoint_root(
    run_dir: Path, storage_path: str | None, experiment_name: str, *, create: bool
) -> Path:
    """The run's checkpoints directory, ``<run_dir>/checkpoints``.

    With ``storage_path`` (``checkpoint_storage.storage_path``) it is a link to
    ``<storage_path>/<experiment name>/<run dir name>-<12 hex digits>`` (the digits from the
    run directory's absolute path at the link's making: one directory per run, whatever the
    directory names), made by the run that writes (``create``) when it has none. A link that
    is there is always followed, whatever ``storage_path`` says now (a resume finds its
    checkpoints where they are); a link whose directory this machine cannot reach is a
    :class:`ConfigError`, never a fresh start. A ``checkpoints/`` directory of the run's own
    stays where it is.

    >>> import tempfile
    >>> base = Path(tempfile.mkdtemp())
    >>> root = checkpoint_root(base / "run", str(base / "scratch"), "exp", create=True)
    >>> root.is_symlink(), root.resolve().parent == (base / "scratch" / "exp").resolve()
    (True, True)
    """
    link = run_dir / CHECKPOINTS_DIR
    if link.is_symlink():
        if not link.is_dir():
            raise ConfigError(
                "checkpoint_storage.storage_path",
                os.readlink(link),
                f"a directory this machine reaches: {link} links there for the run's "
                "checkpoints (mount it, then rerun)",
            )
        return link
    if storage_path is None or link.exists() or not create:
        return link
    if os.path.commonpath([run_dir.resolve(), Path(storage_path).resolve()]) == str(
        run_dir.resolve()
    ):
        raise ConfigError(
            "checkpoint_storage.storage_path",
            storage_path,
            f"a directory outside the run directory {run_dir}",
        )
    digest = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:12]
    target = Path(storage_path) / _safe(experiment_name) / f"{_safe(run_dir.name)}-{digest}"
    try:
        target.mkdir(parents=True, exist_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{CHECKPOINTS_DIR}.tmp-{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(target.absolute(), tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError as exc:
        raise ConfigError(
            "checkpoint_storage.storage_path",
            storage_path,
            f"a directory this run can write ({exc.strerror or exc}: {exc.filename or target})",
        ) from None
    log.info("checkpoints in %s (%s links there)", target.absolute(), link)
    return link


def _safe(name: str) -> str:
    """``name`` as one path component: letters, digits, ``._-``; others become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


@dataclass(frozen=True)
class Loaded:
    """A checkpoint read back: the harness's state and the trial's."""

    path: Path
    meta: dict[str, Any]
    trial_state: dict[str, Any]


class CheckpointStore:
    """The ``checkpoints/`` directory of one run.

    Examples
    --------
    >>> import tempfile
    >>> store = CheckpointStore(Path(tempfile.mkdtemp()) / "checkpoints")
    >>> _ = store.save({"batches": 10}, {"w": [1.0]}, metric=0.5, smaller_is_better=True)
    >>> store.load().trial_state
    {'w': [1.0]}
    """

    def __init__(self, root: Path, *, keep_latest: int = 1, keep_best: int = 1) -> None:
        if keep_latest < 1 or keep_best < 0:
            raise ValueError(f"keep_latest {keep_latest} < 1 or keep_best {keep_best} < 0")
        self.root = root
        #: checkpoints kept besides pruning: the newest ``keep_latest`` (the latest always)
        #: and the ``keep_best`` best by metric
        self.keep_latest = keep_latest
        self.keep_best = keep_best
        self._metrics: dict[str, float | None] | None = None  # name -> metric, once read

    def save(
        self,
        meta: dict[str, Any],
        trial_state: dict[str, Any],
        metric: float | None,
        smaller_is_better: bool,
    ) -> Path:
        """Write a checkpoint, point ``latest`` (and ``best`` when it is) at it, prune the rest.

        A write that fails (a full disk, say) raises an ``OSError`` naming the file, leaves
        no temporary file or directory, and leaves ``latest`` at the previous checkpoint.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{int(meta['batches']):010d}"
        final = self.root / name
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            _write_trial_state(tmp, trial_state)
            write_synced(tmp / "state.json", json.dumps({**meta, "metric": metric}).encode())
            fsync_dir(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException as exc:
            remove_quietly(tmp)
            written = getattr(exc, "filename", None)
            if (
                isinstance(exc, OSError)
                and isinstance(written, str)
                and Path(written).parent == tmp
            ):
                raise naming(exc, final / Path(written).name) from exc
            raise
        fsync_dir(self.root)
        pointer = json.dumps({"name": name, "metric": metric}).encode()
        try:
            write_atomic(self.root / "latest.json", pointer)
        except OSError:
            if (self._pointer("latest.json") or {}).get("name") != name:
                remove_quietly(final)  # latest still points at the previous checkpoint
            raise
        best = self._pointer("best.json")
        if (
            self.keep_best
            and metric is not None
            and (
                best is None
                or best.get("metric") is None
                or (metric < best["metric"] if smaller_is_better else metric > best["metric"])
            )
        ):
            write_atomic(self.root / "best.json", pointer)
        self._prune(name, metric, smaller_is_better)
        return final

    def load(self) -> Loaded | None:
        """The latest checkpoint, or ``None`` when there is none.

        ``latest.json`` (written only once its checkpoint is complete) names it; without one,
        the newest complete checkpoint. A write cut short (a ``.tmp-*`` directory) is not a
        checkpoint and is ignored; so is a named checkpoint that was deleted (the next newest
        is used). A checkpoint or ``latest.json`` that is there but cannot be read raises
        :class:`CorruptCheckpoint`: resuming from an older one, or from scratch, would
        silently redo (and overwrite) what was trained.
        """
        latest = self.root / "latest.json"
        candidates = sorted(self._complete(), reverse=True)
        if latest.exists():
            try:
                pointer = json.loads(latest.read_text())
                name = pointer["name"]
                if not isinstance(name, str) or not name.isdigit():
                    raise ValueError(f"name {name!r} is not a checkpoint directory's")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CorruptCheckpoint(
                    latest,
                    exc,
                    "delete it to resume from the newest complete checkpoint "
                    f"({candidates[0].name if candidates else 'there is none'}), "
                    "or start over in a new run directory",
                ) from None
            if (self.root / name).is_dir():
                candidates.insert(0, self.root / name)
        if not candidates:
            return None
        path = candidates[0]
        earlier = [c.name for c in candidates[1:] if c.name != path.name]
        advice = (
            f"delete {path} to resume from "
            + (f"the checkpoint before it ({earlier[0]})" if earlier else "scratch")
            + ", or start over in a new run directory"
        )
        try:
            meta = json.loads((path / "state.json").read_text())
            if not isinstance(meta, dict) or meta.get("batches") != int(path.name):
                found = meta.get("batches") if isinstance(meta, dict) else meta
                raise ValueError(f"batches {found!r}, not the {int(path.name)} of its directory")
        except (OSError, ValueError) as exc:
            raise CorruptCheckpoint(path / "state.json", exc, advice) from None
        try:
            trial_state = _read_trial_state(path)
        except (OSError, ValueError, EOFError, RuntimeError, pickle.UnpicklingError) as exc:
            raise CorruptCheckpoint(_trial_file(path), exc, advice) from None
        return Loaded(path, meta, trial_state)

    def _pointer(self, name: str) -> dict[str, Any] | None:
        try:
            value = json.loads((self.root / name).read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) and "name" in value else None

    def _complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if p.is_dir() and p.name.isdigit()]

    def _prune(self, saved: str, metric: float | None, smaller_is_better: bool) -> None:
        """Remove what the policy does not keep: writes cut short, and every checkpoint but
        the latest (``latest.json``'s), the ``keep_latest`` newest and the ``keep_best`` best
        (``best.json``'s among them)."""
        if self._metrics is None:  # once per process: the metrics of what is there already
            self._metrics = {p.name: checkpoint_metric(self.root, p.name) for p in self._complete()}
        self._metrics[saved] = metric if metric is None or metric == metric else None
        pointers = [self._pointer(LATEST_POINTER)]
        if self.keep_best:
            pointers.append(self._pointer(BEST_POINTER))
        pinned = [p["name"] for p in pointers if p and isinstance(p.get("name"), str)]
        keep = kept(
            self._metrics,
            latest=self.keep_latest,
            best=self.keep_best,
            smaller_is_better=smaller_is_better,
            pinned=pinned,
        )
        for path in self.root.iterdir():
            if path.name.startswith(".") and ".tmp-" in path.name:  # a write cut short
                remove_quietly(path)
            elif path.is_dir() and path.name.isdigit() and path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
                self._metrics.pop(path.name, None)
        if not self.keep_best:
            (self.root / BEST_POINTER).unlink(missing_ok=True)


#: The globals a ``trial.pkl`` may name (everything else is refused, so unpickling it runs
#: no code): builtin containers and scalars, ``OrderedDict``, and numpy's arrays, dtypes and
#: scalars (``numpy._core`` in numpy 2, ``numpy.core`` before; ``_frombuffer``: protocol 5).
_PICKLE_GLOBALS = frozenset(
    [
        *(
            (module, name)
            for module in ("builtins", "__builtin__")
            for name in ("complex", "set", "frozenset", "bytearray", "bytes", "slice", "range")
        ),
        ("collections", "OrderedDict"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (f"numpy.{core}.{module}", name)
            for core in ("core", "_core")
            for module, name in (
                ("multiarray", "_reconstruct"),
                ("multiarray", "scalar"),
                ("numeric", "_frombuffer"),
            )
        ),
    ]
)
_PICKLE_PROTOCOL = 4


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle names a global outside :data:`_PICKLE_GLOBALS`; nothing was called."""

    def __init__(self, path: Path, module: str, name: str) -> None:
        self.global_name = f"{module}.{name}"
        super().__init__(
            f"{path}: refused to unpickle {self.global_name} (a trial.pkl may hold only "
            "containers, numbers, strings and numpy arrays)"
        )


class _TrialStateUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`_PICKLE_GLOBALS`: a ``__reduce__``
    payload (``os.system``, ``builtins.eval``, ...) is refused before anything runs."""

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise _RefusedGlobal(self.path, module, name)
        return super().find_class(module, name)


def _torch_safe_globals() -> list[Any]:
    """numpy's array, dtype and scalar reconstruction, for ``torch.load(weights_only=True)``
    (which refuses them otherwise): the same allow-list as a ``trial.pkl``'s."""
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return []
    allowed: list[Any] = [numpy.ndarray, numpy.dtype]
    allowed += list({type(numpy.dtype(code)) for code in numpy.typecodes["All"]})
    multiarray = sys.modules.get("numpy._core.multiarray") or sys.modules.get(
        "numpy.core.multiarray"
    )
    if multiarray is not None:
        allowed += [multiarray._reconstruct, multiarray.scalar]
    return allowed


def _write_trial_state(directory: Path, state: dict[str, Any]) -> None:
    """``trial.json`` when the state is JSON, else ``trial.pt`` (torch imported) or a
    ``trial.pkl`` that :func:`_read_trial_state` can read back without running code."""
    try:
        data = json.dumps(state, allow_nan=True).encode()
    except (TypeError, ValueError):
        pass
    else:
        write_synced(directory / "trial.json", data)
        return
    if "torch" in sys.modules:
        import torch

        path = directory / "trial.pt"
        try:
            with open(path, "wb") as handle:
                torch.save(state, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise naming(exc, path) from exc
        except RuntimeError as exc:  # torch's zip writer: "[enforce fail at inline_container.cc]"
            failed = _write_failure(exc, directory, state)
            if failed is None:
                raise
            raise naming(failed, path) from exc
        return
    data = pickle.dumps(state, protocol=_PICKLE_PROTOCOL)
    try:  # refused now, when saving, rather than at resume when the training is gone
        _TrialStateUnpickler(io.BytesIO(data), directory / "trial.pkl").load()
    except _RefusedGlobal as exc:
        raise TypeError(
            f"state_dict() holds a {exc.global_name}, which a checkpoint without torch does "
            "not restore (it would run code to): return JSON values, numpy arrays, sets, "
            "tuples, bytes, or import torch to save tensors"
        ) from None
    write_synced(directory / "trial.pkl", data)


#: Free space below which a write that failed without saying why is taken for a full disk,
#: beyond the room the state's tensors need.
_LOW_SPACE = 1 << 20


def _write_failure(exc: BaseException, directory: Path, state: Any) -> OSError | None:
    """The ``OSError`` behind a ``RuntimeError`` of ``torch.save``, or ``None`` if none is.

    torch's writer turns a failed write into ``RuntimeError: [enforce fail at
    inline_container.cc:...] . unexpected pos ...``: the ``OSError`` (``ENOSPC``, ``EDQUOT``,
    ``EIO``...) that Python's file raised is in its ``__context__`` (or ``__cause__``), where
    this looks first. Where the chain holds none (a torch that writes in C++), the disk's free
    space decides: less than the state's tensors need (plus 1 MiB) is a full disk (``ENOSPC``).
    The error's text is not matched: it changes between torch versions.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if isinstance(link, OSError) and link.errno is not None:
            return link
        link = link.__cause__ or link.__context__
    try:
        info = os.statvfs(directory)
    except OSError:
        return None
    if info.f_bavail * info.f_frsize < _tensor_bytes(state) + _LOW_SPACE:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return None


def _tensor_bytes(value: Any, depth: int = 0) -> int:
    """The bytes of the tensors (and numpy arrays) in a state: what ``torch.save`` writes."""
    if depth > 64:
        return 0
    if isinstance(value, dict):
        return sum(_tensor_bytes(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v, depth + 1) for v in value)
    nbytes = getattr(value, "nbytes", None)  # torch.Tensor (2.1+) and numpy.ndarray
    return nbytes if isinstance(nbytes, int) else 0


def _trial_file(directory: Path) -> Path:
    """The file holding the trial's state in a checkpoint directory."""
    for name in ("trial.json", "trial.pt", "trial.pkl"):
        if (directory / name).exists():
            return directory / name
    return directory / "trial.json"


def _read_trial_state(directory: Path) -> dict[str, Any]:
    """The trial's state, read without running code from the checkpoint: JSON, torch's
    ``weights_only`` loader, or a ``trial.pkl`` limited to :data:`_PICKLE_GLOBALS`. A file
    that names anything else raises ``pickle.UnpicklingError`` naming the file and global."""
    if (directory / "trial.json").exists():
        state = json.loads((directory / "trial.json").read_text())
    elif (directory / "trial.pt").exists():
        import torch

        path = directory / "trial.pt"
        safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        try:
            if safe_globals is None:
                state = torch.load(path, weights_only=True)
            else:
                with safe_globals(_torch_safe_globals()):
                    state = torch.load(path, weights_only=True)
        except pickle.UnpicklingError as exc:  # weights_only refused a global
            lines = [line.strip() for line in str(exc).splitlines()] or [type(exc).__name__]
            why = next((line for line in lines if "GLOBAL" in line), lines[0])
            raise pickle.UnpicklingError(f"{path}: refused by weights_only ({why})") from None
    else:
        path = directory / "trial.pkl"
        with open(path, "rb") as handle:
            state = _TrialStateUnpickler(handle, path).load()
    if not isinstance(state, dict):
        raise ValueError(f"a {type(state).__name__}, not the dict of the trial's state_dict()")
    return state
