"""TensorBoard scalar event files for a run, written when ``tensorboard`` is installed.

Every report of a run (training and validation metrics) becomes scalars tagged
``train/<name>`` and ``validation/<name>`` at step = batches trained, in
``<run dir>/tensorboard/``; ``tensorboard --logdir SWEEP_DIR`` then shows every trial of a
sweep. Nothing here is required: without ``tensorboard`` (or with ``DETFLOW_TENSORBOARD=0``)
:func:`open_writer` returns ``None`` and nothing is written. The import happens in
:func:`open_writer`, never at ``import detflow``.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ENV", "SUBDIR", "ScalarWriter", "open_writer"]

#: The run directory's subdirectory that holds the event files.
SUBDIR = "tensorboard"
#: Set to ``0`` to write no event files even where ``tensorboard`` is installed.
ENV = "DETFLOW_TENSORBOARD"


class ScalarWriter:
    """Writes metrics as TensorBoard scalars against batches trained.

    Made by :func:`open_writer`; ``backend`` is tensorboard's own event file writer or, where
    that import fails, a ``SummaryWriter`` (tensorboardX's or ``torch.utils.tensorboard``'s).
    """

    def __init__(self, backend: Any, protos: tuple[Any, Any] | None) -> None:
        self._backend = backend
        self._protos = protos  # (Event, Summary) with tensorboard's own writer, else None

    @property
    def log_dir(self) -> str:
        """Where the event files are."""
        return str(self._backend.get_logdir())

    def write(
        self, kind: str, metrics: Mapping[str, Any], batches: int, wall_time: float | None = None
    ) -> None:
        """One report: each finite numeric metric as scalar ``<kind>/<name>`` at ``batches``."""
        now = time.time() if wall_time is None else wall_time
        values = {
            f"{kind}/{name}": float(value)
            for name, value in metrics.items()
            if isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        if not values:
            return
        if self._protos is None:
            for tag, value in values.items():
                self._backend.add_scalar(tag, value, global_step=batches, walltime=now)
            return
        event_cls, summary_cls = self._protos
        summary = summary_cls(
            value=[summary_cls.Value(tag=tag, simple_value=value) for tag, value in values.items()]
        )
        self._backend.add_event(event_cls(wall_time=now, step=batches, summary=summary))

    def flush(self) -> None:
        """Write what is queued to disk (at every validation, so a killed job loses little)."""
        self._backend.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._backend.close()


def open_writer(run_dir: Path, *, start_batches: int = 0) -> ScalarWriter | None:
    """A :class:`ScalarWriter` into ``run_dir/tensorboard``, or ``None`` without tensorboard.

    ``start_batches`` is where a resumed run continues (its checkpoint): TensorBoard then drops
    the events a previous attempt wrote past it (they are trained again), as ``metrics.jsonl``
    does.

    Examples
    --------
    >>> import tempfile
    >>> writer = open_writer(Path(tempfile.mkdtemp()))
    >>> if writer is not None:  # only where tensorboard is installed
    ...     writer.write("validation", {"validation_loss": 0.25}, batches=32)
    ...     writer.close()
    """
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    log_dir = run_dir / SUBDIR
    try:
        event_pb2 = importlib.import_module("tensorboard.compat.proto.event_pb2")
        summary_pb2 = importlib.import_module("tensorboard.compat.proto.summary_pb2")
        file_writer = importlib.import_module("tensorboard.summary.writer.event_file_writer")
    except ImportError:
        return _summary_writer(log_dir, start_batches)
    log_dir.mkdir(parents=True, exist_ok=True)
    backend = file_writer.EventFileWriter(str(log_dir), flush_secs=30)
    if start_batches > 0:
        session_log = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
        backend.add_event(
            event_pb2.Event(wall_time=time.time(), step=start_batches + 1, session_log=session_log)
        )
    return ScalarWriter(backend, (event_pb2.Event, summary_pb2.Summary))


def _summary_writer(log_dir: Path, start_batches: int) -> ScalarWriter | None:
    """A ``SummaryWriter``: tensorboardX's, or torch's when torch is already imported (it is
    not imported here: a trial without torch should not pay for it)."""
    names = ["tensorboardX", *(["torch.utils.tensorboard"] if "torch" in sys.modules else [])]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        log_dir.mkdir(parents=True, exist_ok=True)
        purge = start_batches + 1 if start_batches > 0 else None  # drops steps >= purge
        backend = module.SummaryWriter(str(log_dir), purge_step=purge, flush_secs=30)
        return ScalarWriter(backend, None)
    return None
