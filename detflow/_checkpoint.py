"""Checkpoints written atomically: temp directory, fsync, rename, then a pointer file.

``checkpoints/<batches>/`` holds ``state.json`` (counters, RNG, metric) and the trial's
state (JSON when it can be, else ``torch.save``); ``latest.json`` and ``best.json`` point at
the last good and the best checkpoint; every other checkpoint is removed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CheckpointStore", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new, never half."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(
        self,
        meta: dict[str, Any],
        trial_state: dict[str, Any],
        metric: float | None,
        smaller_is_better: bool,
    ) -> Path:
        """Write a checkpoint, point ``latest`` (and ``best`` when it is) at it, prune the rest."""
        self.root.mkdir(parents=True, exist_ok=True)
        name = f"{int(meta['batches']):010d}"
        final = self.root / name
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        _write_trial_state(tmp, trial_state)
        _write_file(tmp / "state.json", json.dumps({**meta, "metric": metric}).encode())
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(self.root)
        pointer = json.dumps({"name": name, "metric": metric}).encode()
        write_atomic(self.root / "latest.json", pointer)
        best = self._pointer("best.json")
        if metric is not None and (
            best is None
            or best.get("metric") is None
            or (metric < best["metric"] if smaller_is_better else metric > best["metric"])
        ):
            write_atomic(self.root / "best.json", pointer)
        self._prune()
        return final

    def load(self) -> Loaded | None:
        """The latest good checkpoint, or ``None`` when there is none."""
        pointer = self._pointer("latest.json")
        candidates = [self.root / pointer["name"]] if pointer else []
        candidates += sorted(self._complete(), reverse=True)
        for path in candidates:
            try:
                meta = json.loads((path / "state.json").read_text())
                return Loaded(path, meta, _read_trial_state(path))
            except (OSError, ValueError, EOFError, pickle.UnpicklingError):
                continue
        return None

    def best_path(self) -> Path | None:
        """The best checkpoint by the searcher's metric, if any has a metric."""
        pointer = self._pointer("best.json")
        return self.root / pointer["name"] if pointer else None

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

    def _prune(self) -> None:
        keep = {
            p.get("name") for p in (self._pointer("latest.json"), self._pointer("best.json")) if p
        }
        for path in self.root.iterdir():
            stale_tmp = path.name.startswith(".tmp-")
            if path.is_dir() and (stale_tmp or (path.name.isdigit() and path.name not in keep)):
                shutil.rmtree(path, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_trial_state(directory: Path, state: dict[str, Any]) -> None:
    try:
        data = json.dumps(state, allow_nan=True).encode()
    except (TypeError, ValueError):
        pass
    else:
        _write_file(directory / "trial.json", data)
        return
    if "torch" in sys.modules:
        import torch

        with open(directory / "trial.pt", "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return
    _write_file(directory / "trial.pkl", pickle.dumps(state))


def _read_trial_state(directory: Path) -> dict[str, Any]:
    if (directory / "trial.json").exists():
        state = json.loads((directory / "trial.json").read_text())
    elif (directory / "trial.pt").exists():
        import torch

        state = torch.load(directory / "trial.pt", weights_only=True)
    else:
        with open(directory / "trial.pkl", "rb") as handle:
            state = pickle.load(handle)
    if not isinstance(state, dict):
        raise ValueError(f"{directory}: trial state is not a dict")
    return state
