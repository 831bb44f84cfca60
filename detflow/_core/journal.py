"""An append-only journal of events: one checksummed JSON line each, fsync'd on append.

The sweep's state is a snapshot (``searcher.json``) plus the events since it
(``searcher.journal.jsonl``): recording an event costs one short append, not a rewrite of
the whole state. Each line is ``{"event": {...}, "seq": N, "sha256": "..."}``: ``seq``
numbers the events from the first of the search, so a snapshot says how many it holds and
the lines it holds already are skipped; the checksum covers ``event`` and ``seq``. A crash
in the middle of an append leaves at most the last line cut short: it is reported and
skipped (the event it held was never acknowledged). Any other line that is not one this
module wrote is an error naming the file and the line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from detflow._core.errors import ConfigError
from detflow._core.files import fsync_dir, naming

__all__ = ["EventJournal", "JournalEntry", "JournalRead"]

_ADVICE = (
    "a line as detflow's sweeper writes it (the file was edited or damaged); restore it, or use "
    "a new hydra.sweep.dir to start the search over"
)


@dataclass(frozen=True)
class JournalEntry:
    """One event of the journal: its number in the search and what happened (JSON data).

    >>> JournalEntry(3, {"kind": "tell", "trial": 0}).line()
    b'{"event":{"kind":"tell","trial":0},"seq":3,"sha256":"..."}\\n'
    """

    seq: int
    event: Mapping[str, Any]

    def line(self) -> bytes:
        """The entry as one line of the journal, checksum included."""
        body = _canonical(self.seq, self.event)
        return f'{body[:-1]},"sha256":"{_digest(body)}"}}\n'.encode()


@dataclass(frozen=True)
class JournalRead:
    """What a journal holds: its entries in order and whether a last line was cut short."""

    entries: list[tuple[int, JournalEntry]]  # (line number, entry)
    torn: bool = False


class EventJournal:
    """Appends :class:`JournalEntry` lines to ``path``; each append is fsync'd before it
    returns, so an event is on disk before anything that depends on it happens.

    >>> import tempfile
    >>> journal = EventJournal(Path(tempfile.mkdtemp()) / "events.jsonl")
    >>> journal.append([JournalEntry(0, {"kind": "ask"}), JournalEntry(1, {"kind": "tell"})])
    >>> [(n, e.seq, e.event["kind"]) for n, e in EventJournal.read(journal.path).entries]
    [(1, 0, 'ask'), (2, 1, 'tell')]
    >>> journal.clear(); EventJournal.read(journal.path).entries, journal.size
    ([], 0)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[bytes] | None = None
        #: bytes in the file (as this process wrote it: 0 until the first append)
        self.size = 0

    def append(self, entries: Sequence[JournalEntry]) -> None:
        """Append ``entries`` in one write and fsync; an ``OSError`` names the file."""
        if not entries:
            return
        data = b"".join(entry.line() for entry in entries)
        try:
            if self._handle is None:
                created = not self.path.exists()
                self._handle = open(self.path, "ab")  # noqa: SIM115 - held while the sweep runs
                self.size = self._handle.tell()
                if created:
                    fsync_dir(self.path.parent)
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise naming(exc, self.path) from exc
        self.size += len(data)

    def clear(self) -> None:
        """Empty the journal (its events are in a snapshot written before), durably."""
        try:
            if self._handle is None:
                if not self.path.exists():
                    return
                self._handle = open(self.path, "ab")  # noqa: SIM115 - held while the sweep runs
            self._handle.truncate(0)
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise naming(exc, self.path) from exc
        self.size = 0

    def remove(self) -> None:
        """Close and delete the journal (empty, or held in a snapshot), durably."""
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise naming(exc, self.path) from exc
        fsync_dir(self.path.parent)
        self.size = 0

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    @staticmethod
    def read(path: Path) -> JournalRead:
        """The entries of the journal at ``path`` (none without a file). A last line cut
        short by a crash (no newline after it, and not a whole entry) is left out and
        ``torn`` set; any other bad line is a :class:`ConfigError` naming the file and line.

        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "events.jsonl"
        >>> good = JournalEntry(0, {"kind": "ask"}).line()
        >>> _ = path.write_bytes(good + good[:20])
        >>> read = EventJournal.read(path); len(read.entries), read.torn
        (1, True)
        >>> _ = path.write_bytes(good[:20] + b"\\n" + good)
        >>> EventJournal.read(path)
        Traceback (most recent call last):
        ...
        detflow._core.errors.ConfigError: ...events.jsonl line 1 = 'not JSON: ...
        """
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return JournalRead([])
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise ConfigError(str(path), why, _ADVICE) from None
        lines = data.split(b"\n")
        cut_short = lines[-1] != b""  # the last line has no newline: an append cut short
        if not cut_short:
            lines.pop()
        entries: list[tuple[int, JournalEntry]] = []
        for number, raw in enumerate(lines, start=1):
            entry, why = _parse(raw)
            if entry is not None:
                entries.append((number, entry))
            elif number == len(lines) and cut_short:
                return JournalRead(entries, torn=True)
            else:
                raise ConfigError(f"{path} line {number}", why, _ADVICE)
        return JournalRead(entries)


def _canonical(seq: int, event: Mapping[str, Any]) -> str:
    return json.dumps({"event": event, "seq": seq}, sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _parse(raw: bytes) -> tuple[JournalEntry | None, str]:
    """The entry on one line, or None and why it is not one."""
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except ValueError as exc:
        return None, f"not JSON: {str(exc).splitlines()[0]}"
    if not isinstance(value, dict) or sorted(value) != ["event", "seq", "sha256"]:
        return None, "not a journal entry"
    seq, event = value["seq"], value["event"]
    if type(seq) is not int or seq < 0 or not isinstance(event, dict):
        return None, "not a journal entry"
    if value["sha256"] != _digest(_canonical(seq, event)):
        return None, "its checksum does not match"
    return JournalEntry(seq, event), ""
