"""The patches of Hydra's internals, all here: how ``hydra.main`` reports an error, and a
single run's directory kept as it was when the run ends on a config error.

Hydra reports every error of ``hydra.main`` through ``hydra._internal.utils.run_and_report``
(several lines and a hint). :func:`reporting_errors_in_one_line` wraps it for the duration
of one call so that detflow can print the errors it knows in one line.

Hydra's ``run_job`` creates the run directory, writes ``.hydra/*.yaml`` and opens the job's
log before the task runs, so before detflow can validate. :func:`keeping_run_dir_on_config_error`
wraps it (``hydra._internal.hydra.run_job``, the name ``Hydra.run`` calls) to put the
directory back byte for byte when the task ends with a config error (exit status 2).

Both were checked against the Hydra versions in :data:`CHECKED_HYDRA_VERSIONS`; a test pins
them, so a new Hydra release is looked at before it is trusted. So was the part of Hydra's
composition that :mod:`detflow._hydra.derive` replays per trial (compose once): under
another release it leaves every trial to Hydra's own ``load_sweep_config``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detflow._core.artifacts import HPARAMS_FILE
from detflow._core.errors import ConfigError
from detflow._core.files import LOCK_NAME

__all__ = [
    "CHECKED_HYDRA_VERSIONS",
    "RunDirSnapshot",
    "keeping_run_dir_on_config_error",
    "reporting_errors_in_one_line",
]

#: Hydra releases whose ``run_and_report`` this patch was read against (major.minor).
CHECKED_HYDRA_VERSIONS = ("1.3",)


@contextlib.contextmanager
def reporting_errors_in_one_line(report_error: Callable[[BaseException], None]) -> Iterator[None]:
    """Call ``report_error(exc)`` on an error of ``hydra.main`` before Hydra reports it.

    ``report_error`` may raise (``SystemExit`` after printing one line) to end there, or
    return to let Hydra report the error as before.
    """
    from hydra._internal import utils as hydra_utils

    original = hydra_utils.run_and_report

    def run_and_report(func: Callable[[], Any]) -> Any:
        def reported() -> Any:
            try:
                return func()
            except Exception as exc:
                report_error(exc)
                raise

        return original(reported)

    hydra_utils.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


@dataclass
class RunDirSnapshot:
    """What a run directory held before Hydra touched it: enough to put it back.

    ``created`` is the outermost directory that did not exist yet (removed on restore);
    otherwise every path that was there is kept, the files Hydra rewrites get their old
    bytes back, and every path added since is removed.
    """

    root: Path
    created: Path | None = None
    paths: dict[Path, tuple[int, int]] = field(default_factory=dict)  # path -> size, mtime
    saved: dict[Path, tuple[bytes, int, int] | None] = field(default_factory=dict)
    #: What detflow writes before training: a run that wrote anything else trained.
    before_training: frozenset[str] = frozenset({LOCK_NAME, HPARAMS_FILE})

    @classmethod
    def take(cls, root: Path, rewritten: list[Path]) -> RunDirSnapshot:
        root = root.absolute()
        if not root.exists():
            created = root
            while not created.parent.exists():
                created = created.parent
            return cls(root, created, saved=dict.fromkeys(rewritten))
        paths = {path: _stamp(path) for path in _walk(root)}
        saved = {path: _contents(path) for path in rewritten}
        return cls(root, None, paths, saved)

    def trained(self) -> bool:
        """Whether the run wrote more than Hydra's files and detflow's lock and
        ``hparams.json`` (metrics, checkpoints): then what it wrote is kept."""
        owned = set(self.saved) | {self.root / name for name in self.before_training}
        where = self.root if self.root.exists() else None
        for path in _walk(where) if where is not None else []:
            if path in owned or path.is_dir():
                continue
            if path not in self.paths or self.paths[path] != _stamp(path):
                return True
        return False

    def restore(self) -> None:
        """Put the directory back (unless the run trained: see :meth:`trained`)."""
        if self.trained():
            return
        if self.created is not None:
            shutil.rmtree(self.created, ignore_errors=True)
            return
        for path, kept in self.saved.items():
            if kept is not None:  # the bytes and the times: as if never opened
                data, atime_ns, mtime_ns = kept
                path.write_bytes(data)
                os.utime(path, ns=(atime_ns, mtime_ns))
        added = [path for path in _walk(self.root) if path not in self.paths]
        for path in sorted(added, key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _walk(root: Path) -> list[Path]:
    return [Path(top) / name for top, dirs, files in os.walk(root) for name in dirs + files]


def _stamp(path: Path) -> tuple[int, int]:
    try:
        info = path.stat()
    except OSError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


def _contents(path: Path) -> tuple[bytes, int, int] | None:
    if not path.is_file():
        return None
    info = path.stat()
    return path.read_bytes(), info.st_atime_ns, info.st_mtime_ns


@contextlib.contextmanager
def keeping_run_dir_on_config_error() -> Iterator[None]:
    """Put a single run's directory back as it was when its task exits with a config error.

    Sweeps validate before they launch anything; their jobs (``job_subdir_key`` set) are
    left to Hydra as they are.
    """
    import hydra._internal.hydra as hydra_internal
    from omegaconf import OmegaConf

    original = hydra_internal.run_job  # type: ignore[attr-defined]

    def run_job(*args: Any, **kwargs: Any) -> Any:
        config = kwargs.get("config")
        if config is None or kwargs.get("job_subdir_key") is not None:
            return original(*args, **kwargs)
        root = Path(str(OmegaConf.select(config, kwargs["job_dir_key"])))
        subdir = OmegaConf.select(config, "hydra.output_subdir")
        job_name = str(OmegaConf.select(config, "hydra.job.name"))
        hydra_dir = root / str(subdir) if subdir is not None else None
        rewritten = [root / f"{job_name}.log"]
        if hydra_dir is not None:
            rewritten += [hydra_dir / n for n in ("config.yaml", "hydra.yaml", "overrides.yaml")]
        snapshot = RunDirSnapshot.take(root, rewritten)
        try:
            return original(*args, **kwargs)
        except SystemExit as exc:
            if exc.code == ConfigError.exit_code:
                snapshot.restore()
            raise

    hydra_internal.run_job = run_job  # type: ignore[attr-defined]
    try:
        yield
    finally:
        hydra_internal.run_job = original  # type: ignore[attr-defined]
