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

__all__ = ["Counters", "MetricsFile", "Window", "format_line", "mean_metrics"]


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
    """What one report covers: its counts, time and mean metrics."""

    records: int
    batches: int
    seconds: float
    metrics: dict[str, float]


def format_line(kind: str, window: Window) -> str:
    """``trained: 320 records in 0.41s (780.5 records/s), in 10 batches (24.4 batches/s)``.

    >>> format_line("trained", Window(320, 10, 0.41, {}))
    'trained: 320 records in 0.41s (780.5 records/s), in 10 batches (24.4 batches/s)'
    """
    seconds = max(window.seconds, 1e-9)
    return (
        f"{kind}: {window.records} records in {window.seconds:.3g}s "
        f"({window.records / seconds:.1f} records/s), in {window.batches} batches "
        f"({window.batches / seconds:.1f} batches/s)"
    )


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``loss=0.5213 accuracy=0.91``, in the order given."""
    return " ".join(f"{k}={v:.6g}" for k, v in metrics.items())


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
