"""The truthful log lines and ``metrics.jsonl`` records of a run."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter, mul
from pathlib import Path
from typing import Any

from detflow._core.text import number_text

__all__ = [
    "Counters",
    "MetricsFile",
    "Window",
    "format_line",
    "format_metrics",
    "mean_metrics",
    "where_text",
]


@dataclass
class Counters:
    """Exact progress of a trial; saved in every checkpoint."""

    records: int = 0
    batches: int = 0
    epochs: int = 0
    batch_in_epoch: int = 0

    def steps(self, aggregation_frequency: int) -> int:
        """Optimizer steps taken."""
        return self.batches // aggregation_frequency


@dataclass(frozen=True)
class Window:
    """What one report covers: its counts (``None``: not counted, e.g. a validation the
    trial computed itself), time and mean metrics."""

    records: int | None
    batches: int | None
    seconds: float
    metrics: dict[str, float]


def where_text(counters: Counters, epoch_length: int | None, target: int) -> str:
    """Where training is: the batch within its epoch when the epoch's length is known, else
    the batch of the target.

    >>> where_text(Counters(batches=102, epochs=2, batch_in_epoch=12), 45, 225)
    'epoch 3, batch 12/45'
    >>> where_text(Counters(batches=135, epochs=3), 45, 225)
    'epoch 3, batch 45/45'
    >>> where_text(Counters(batches=102, epochs=0, batch_in_epoch=102), None, 225)
    'batch 102/225'
    """
    if epoch_length is None:
        return f"batch {counters.batches}/{target}"
    if counters.batch_in_epoch or not counters.epochs:
        return f"epoch {counters.epochs + 1}, batch {counters.batch_in_epoch}/{epoch_length}"
    return f"epoch {counters.epochs}, batch {epoch_length}/{epoch_length}"


def format_line(kind: str, window: Window, where: str = "") -> str:
    """A report in one line: ``trained: 320 records in 0.41s (780.5 records/s), in 10 batches
    (24.39 batches/s)``, then ``at`` where training is (when given), then the metrics.
    Times to 3 significant digits, rates and metrics to 4 (rates whole from 1000 on:
    ``41939 records/s``).

    >>> format_line("trained", Window(320, 10, 0.41, {"loss": 0.52134}), "epoch 1, batch 10/45")
    'trained: 320 records in 0.41s (780.5 records/s), in 10 batches (24.39 batches/s)
    at epoch 1, batch 10/45; loss=0.5213'
    >>> format_line("validated", Window(359, None, 0.0031, {}))
    'validated: 359 records in 0.0031s (115806 records/s)'
    >>> format_line("validated", Window(None, None, 0.2134, {"validation_loss": 2.0}), "batch 8/10")
    'validated in 0.213s at batch 8/10; validation_loss=2'
    """
    # Plain f-strings: this runs once per report, inside the training loop's time.
    seconds = window.seconds
    took = f"{seconds:.3g}s" if seconds < 100 else f"{round(seconds)}s"
    if window.records is None:
        line = f"{kind} in {took}"
    else:
        per_second = 1.0 / max(seconds, 1e-9)
        rate = window.records * per_second
        line = f"{kind}: {window.records} records in {took} ("
        line += f"{rate:.4g}" if rate < 1000 else f"{round(rate)}"
        line += " records/s)"
        if window.batches is not None:
            rate = window.batches * per_second
            line += f", in {window.batches} batches ("
            line += f"{rate:.4g}" if rate < 1000 else f"{round(rate)}"
            line += " batches/s)"
    if where:
        line += f" at {where}"
    if window.metrics:
        line += f"; {format_metrics(window.metrics)}"
    return line


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``loss=0.5213 accuracy=0.91``, in the order given, to 4 significant digits.

    >>> format_metrics({"validation_loss": 0.15239160548387132, "validation_accuracy": 0.9})
    'validation_loss=0.1524 validation_accuracy=0.9'
    """
    return " ".join(f"{k}={number_text(v)}" for k, v in metrics.items())


def mean_metrics(
    rows: Sequence[Mapping[str, Any]], weights: Sequence[int], prefix: str = ""
) -> dict[str, float]:
    """Record-weighted means of every numeric metric; non-numbers are dropped.

    >>> mean_metrics([{"loss": 1.0}, {"loss": 4.0}], [3, 1])
    {'loss': 1.75}
    >>> mean_metrics([{"loss": 2.0}], [5], prefix="validation_")
    {'validation_loss': 2.0}
    >>> mean_metrics([{"loss": 1.0, "tag": "a"}, {"loss": 3.0}], [1, 1])
    {'loss': 2.0}
    """
    if not rows:
        return {}
    first = rows[0]
    total = sum(weights)
    if total <= 0 or sum(map(len, rows)) != len(first) * len(rows):
        return _weighted_means(rows, weights, prefix)
    out = {}
    try:  # the common case, column by column in C: every row has the same numeric keys
        for key in first:
            column = map(float, map(itemgetter(key), rows))
            out[_named(key, prefix)] = sum(map(mul, column, weights)) / total
    except (KeyError, TypeError, ValueError):
        return _weighted_means(rows, weights, prefix)
    return out


def _named(key: str, prefix: str) -> str:
    return key if not prefix or key.startswith(prefix) else prefix + key


def _weighted_means(
    rows: Sequence[Mapping[str, Any]], weights: Sequence[int], prefix: str
) -> dict[str, float]:
    sums: dict[str, float] = {}
    totals: dict[str, int] = {}
    for row, weight in zip(rows, weights, strict=False):
        for key, value in row.items():
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            sums[key] = sums.get(key, 0.0) + number * weight
            totals[key] = totals.get(key, 0) + weight
    return {
        _named(key, prefix): total / totals[key] if totals[key] else math.nan
        for key, total in sums.items()
    }


class MetricsFile:
    """``metrics.jsonl`` opened for appending: one JSON line per record, each whole or absent.

    Every :meth:`write` reaches the operating system at once (a killed process loses no
    reported record). When an append fails (a full disk, say), the file is cut back to where
    it stood, so it never ends in a partial line, and the error is raised as an ``OSError``
    whose ``filename`` is this file.

    Examples
    --------
    >>> import tempfile
    >>> metrics = MetricsFile(Path(tempfile.mkdtemp()) / "metrics.jsonl")
    >>> metrics.write({"kind": "train", "batches": 1})
    >>> metrics.close()
    >>> metrics.path.read_text()
    '{"kind": "train", "batches": 1}\\n'
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc

    def write(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` as one line, or leave the file as it was and raise ``OSError``."""
        assert self._fd is not None, "write after close"
        data = memoryview((json.dumps(record, allow_nan=True) + "\n").encode())
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while data:  # a full disk may take part of a write before refusing the rest
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            with contextlib.suppress(OSError):  # else resume skips the line cut short
                os.ftruncate(self._fd, start)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from exc

    def close(self) -> None:
        """Close the file (nothing is buffered: every record was written at once)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
