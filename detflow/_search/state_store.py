"""Where a sweep's state lives on disk: a snapshot and the journal of events since it.

Saving a sweep after every event must not cost more as the sweep grows. A small state is
written whole on every save (``searcher.json``, as cheap as an append, so that a reader sees
every event at once); a larger one is kept as its last snapshot plus an appended, fsync'd
journal of the events since (``searcher.journal.jsonl``: asks, tells, restarts), and is
written whole again when the journal has grown as large as the snapshot (so writing stays
O(1) per event, amortised), at most every :attr:`SnapshotPolicy.interval_s` otherwise, and
when the sweep ends or stops. ``results.csv`` is written with each snapshot.

Resuming loads the snapshot into the searcher and replays the journal's events onto it:
searchers are deterministic (a trial's hyperparameters come from ``Random(f"{seed}:{id}")``
and every choice from the told results), so each replayed ask gives the job the journal
recorded, and a job that differs is an error naming the line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any

from detflow._core.artifacts import JOURNAL_FILE
from detflow._core.errors import ConfigError
from detflow._core.journal import EventJournal, JournalEntry, JournalRead
from detflow._search.searchers import Job, Searcher

__all__ = ["EventKind", "Replayed", "SnapshotPolicy", "SweepStore", "replay"]

_REPLAY_ADVICE = (
    "an event of this same search, replayed onto its searcher.json (same searcher settings "
    "and space); use a new hydra.sweep.dir for a different search"
)


class EventKind(str, Enum):
    """What a journal event records (its ``kind``)."""

    #: the searcher was asked and gave this job (``trial``, ``rung``, ``promotion``)
    ASK = "ask"
    #: a job's end was told to the searcher (``trial``, ``metric``, ``length``, ``error``, ``best``)
    TELL = "tell"
    #: the driver restarted a trial: its restarts so far (``trial``, ``count``)
    RESTARTS = "restarts"
    #: a trial's code raised at this batch (``trial``, ``batch``): a second raise there is final
    RAISED_AT = "raised_at"


@dataclass(frozen=True)
class SnapshotPolicy:
    """When a save writes the whole state rather than appending its events to the journal.

    ``whole_below_bytes``: a snapshot smaller than this is written on every save (the
    journal is not used). Otherwise a snapshot is written when the journal has grown as
    large as it, or once ``interval_s`` has passed since the last one and writing it took
    at most ``max_share`` of that time (a reader of a running sweep sees its state this
    fresh; the journal holds every event meanwhile).

    >>> SnapshotPolicy().whole_below_bytes, SnapshotPolicy.every_save().interval_s
    (16384, 0.0)
    """

    whole_below_bytes: int = 16 * 1024
    interval_s: float = 10.0
    max_share: float = 0.05

    @classmethod
    def every_save(cls) -> SnapshotPolicy:
        """The whole state on every save, whatever its size (no journal)."""
        return cls(whole_below_bytes=sys.maxsize, interval_s=0.0)


@dataclass
class Replayed:
    """What replaying a journal gave besides the searcher's state: the driver's counts
    (restarts and raise batches, per trial) and the number of the next event."""

    restarts: dict[int, int]
    raised_at: dict[int, int]
    next_seq: int
    events: int = 0  # how many events were replayed


def ask_event(job: Job) -> dict[str, Any]:
    """The event of an ask that gave ``job``.

    >>> ask_event(Job(3, {}, Fraction(1), 0, False))
    {'kind': 'ask', 'trial': 3, 'rung': 0, 'promotion': False}
    """
    return {
        "kind": EventKind.ASK.value,
        "trial": job.trial_id,
        "rung": job.rung,
        "promotion": job.promotion,
    }


def tell_event(
    trial_id: int,
    metric: float | None,
    length: int | Fraction,
    error: str | None,
    best: float | None,
) -> dict[str, Any]:
    """The event of a tell, with the arguments :meth:`Searcher.tell` was given.

    >>> tell_event(3, 0.5, Fraction(1, 4), None, 0.25)["length"]
    '1/4'
    """
    return {
        "kind": EventKind.TELL.value,
        "trial": trial_id,
        "metric": metric,
        "length": str(Fraction(length)),
        "error": error,
        "best": best,
    }


def count_event(kind: EventKind, trial_id: int, value: int) -> dict[str, Any]:
    """A driver's count for a trial: its restarts, or the batch its code raised at.

    >>> count_event(EventKind.RESTARTS, 2, 1)
    {'kind': 'restarts', 'trial': 2, 'value': 1}
    """
    return {"kind": kind.value, "trial": trial_id, "value": value}


def replay(
    searcher: Searcher,
    read: JournalRead,
    path: Path,
    *,
    first_seq: int,
    restarts: Mapping[int, int],
    raised_at: Mapping[int, int],
) -> Replayed:
    """Apply the journal's events numbered ``first_seq`` on (the ones after the snapshot)
    to ``searcher`` (loaded from the snapshot) and to the driver's counts. An event that
    does not replay (an ask that gives another job, a tell of a trial not in flight, a gap
    in the numbers) is a :class:`ConfigError` naming ``path`` and its line."""
    out = Replayed(dict(restarts), dict(raised_at), first_seq)
    for number, entry in read.entries:
        if entry.seq < first_seq:
            continue  # already in the snapshot (a crash between writing it and clearing this)
        where = f"{path} line {number}"
        if entry.seq != out.next_seq:
            raise ConfigError(where, f"event {entry.seq}", f"event {out.next_seq}, the next one")
        try:
            _apply(searcher, entry.event, out)
        except (ValueError, KeyError, TypeError, IndexError, ZeroDivisionError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(where, why, _REPLAY_ADVICE) from None
        out.next_seq += 1
        out.events += 1
    return out


def _apply(searcher: Searcher, event: Mapping[str, Any], out: Replayed) -> None:
    kind = EventKind(event["kind"])
    trial = event["trial"]
    if type(trial) is not int:
        raise ValueError(f"trial {trial!r} is not a trial number")
    if kind is EventKind.ASK:
        job = searcher.ask()
        got = None if job is None else (job.trial_id, job.rung, job.promotion)
        wanted = (trial, event["rung"], event["promotion"])
        if got != wanted:
            raise ValueError(f"the searcher now asks {got} (trial, rung, promotion), not {wanted}")
    elif kind is EventKind.TELL:
        searcher.tell(
            trial,
            event["metric"],
            Fraction(event["length"]),
            error=event["error"],
            best=event["best"],
        )
    else:
        value = event["value"]
        if type(value) is not int or value < 0:
            raise ValueError(f"{kind.value} {value!r} is not a count")
        counts = out.restarts if kind is EventKind.RESTARTS else out.raised_at
        counts[trial] = value


@dataclass
class SweepStore:
    """The journal of a sweep directory and when to write a snapshot (:class:`SnapshotPolicy`).

    The driver :meth:`record` s each event as it happens; a save either :meth:`append` s
    them to the journal (fsync'd) or, when :meth:`snapshot_due`, writes the whole state and
    calls :meth:`snapshot_written`.
    """

    sweep_dir: Path
    policy: SnapshotPolicy = field(default_factory=SnapshotPolicy)

    def __post_init__(self) -> None:
        self.journal = EventJournal(self.sweep_dir / JOURNAL_FILE)
        self.pending: list[JournalEntry] = []
        #: the number of the next event (= events in the state so far)
        self.seq = 0
        self._snapshot_bytes = 0  # 0: no snapshot written by this store yet
        self._snapshot_at = time.monotonic()
        self._snapshot_cost = 0.0

    def record(self, event: dict[str, Any]) -> None:
        """An event that changed the state; on disk at the next save."""
        self.pending.append(JournalEntry(self.seq, event))
        self.seq += 1

    def snapshot_due(self) -> bool:
        """Whether this save should write the whole state (see :class:`SnapshotPolicy`)."""
        size = self._snapshot_bytes
        if size == 0 or size < self.policy.whole_below_bytes:
            return True
        if self.journal.size + 100 * len(self.pending) >= size:  # ~100 bytes an entry
            return True
        since = time.monotonic() - self._snapshot_at
        return since >= self.policy.interval_s and since * self.policy.max_share >= (
            self._snapshot_cost
        )

    def append(self) -> None:
        """Append the events recorded since the last save to the journal, durably."""
        self.journal.append(self.pending)
        self.pending = []

    def snapshot_written(self, size: int, seconds: float, *, final: bool = False) -> None:
        """A snapshot of ``size`` bytes holding every event so far was written in
        ``seconds``: the journal is emptied (``final``: deleted, the sweep stops here)."""
        self.pending = []
        if final:
            self.journal.remove()
        elif self.journal.size or self.journal.path.exists():
            self.journal.clear()
        self._snapshot_bytes = size
        self._snapshot_at = time.monotonic()
        self._snapshot_cost = seconds

    def close(self) -> None:
        self.journal.close()
