"""The sweep state's journal: ``searcher.json`` plus ``searcher.journal.jsonl`` (events since).

No Hydra, no processes: :class:`InstantLauncher` writes each job's ``result.json`` as it
starts, and ends jobs oldest first, one per wait. A driver "dies" by an exception from the
launcher (nothing after it runs, as with SIGKILL); a crash in the middle of an append is
played by cutting the journal's last line short.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detflow._core.artifacts import (
    JOURNAL_FILE,
    RESULTS_FILE,
    STATE_FILE,
    RunEnd,
    TrialResult,
    TrialStatus,
)
from detflow._core.errors import ConfigError
from detflow._core.journal import EventJournal, JournalEntry
from detflow._search.driver import SweepDriver, TrialOutcome
from detflow._search.pbt import PbtSearcher
from detflow._search.searchers import Job, Searcher, make_searcher
from detflow._search.space import Choice, Interval, Space
from detflow._search.state_store import (
    EventKind,
    SnapshotPolicy,
    SweepStore,
    ask_event,
    count_event,
    replay,
    tell_event,
)

SPACE: Space = {"lr": Interval(1e-4, 1e-1, log=True), "width": Choice((16, 32, 64))}
#: the journal always (no state is small), a snapshot only when the journal outgrows it
JOURNAL_ONLY = SnapshotPolicy(whole_below_bytes=0, interval_s=1e9)


def searcher(name: str, trials: int = 24, seed: int = 0) -> Searcher:
    if name == "pbt":  # generations of 4, exploiting and exploring every 2 epochs
        return PbtSearcher(SPACE, max_length=8, population_size=4, perturb_every=2, seed=seed)
    return make_searcher(
        name,
        space=SPACE,
        max_length=8,
        max_trials=trials,
        seed=seed,
        metric="validation_loss",
        smaller_is_better=True,
        divisor=2,
        max_rungs=3,
        max_concurrent_trials=3,
    )


def loss(hparams: dict[str, Any], length: Fraction) -> float:
    lr, width = float(hparams["lr"]), int(hparams["width"])
    return abs(math.log10(lr) + 2.5) + width / 100 + 1 / float(length)


class Killed(Exception):
    """The driver's process dies here: nothing after it runs."""


class InstantLauncher:
    """Jobs that end as they start (their ``result.json`` written at once), oldest first."""

    def __init__(self, sweep_dir: Path, *, die_at_wait: int | None = None) -> None:
        self.sweep_dir = sweep_dir
        self.die_at_wait = die_at_wait
        self.waits = 0
        self.running: list[int] = []
        self.started: list[tuple[int, Fraction]] = []
        self.hparams: dict[int, dict[str, Any]] = {}
        self.state_sizes: list[tuple[int, int]] = []  # (searcher.json, journal) at each start

    def start(self, trial_id: int, overrides: list[str]) -> None:
        values = dict(item.split("=", 1) for item in overrides)
        length = Fraction(values["length"])
        hparams = {"lr": float(values["lr"]), "width": int(values["width"])}
        metric = loss(hparams, length)
        result = TrialResult(
            RunEnd.COMPLETED,
            records=int(length) * 10,
            batches=int(length) * 10,
            steps=int(length) * 10,
            epochs=int(length),
            target_batches=int(length) * 10,
            batches_per_epoch=10,
            global_batch_size=1,
            aggregation_frequency=1,
            length=length,
            unit="epochs",
            metric=metric,
            best_metric=metric,
        )
        trial_dir = self.sweep_dir / str(trial_id)
        trial_dir.mkdir(parents=True, exist_ok=True)
        (trial_dir / "result.json").write_text(json.dumps(result.to_json()))
        self.running.append(trial_id)
        self.started.append((trial_id, length))
        sizes = [p.stat().st_size if p.exists() else 0 for p in self._state_files()]
        self.state_sizes.append((sizes[0], sizes[1]))

    def _state_files(self) -> tuple[Path, Path]:
        return self.sweep_dir / STATE_FILE, self.sweep_dir / JOURNAL_FILE

    def wait(self) -> list[TrialOutcome]:
        self.waits += 1
        if self.waits == self.die_at_wait:
            raise Killed(f"killed at wait {self.waits}")
        return [TrialOutcome(self.running.pop(0))]


def overrides_for(job: Job) -> list[str]:
    return [
        f"lr={job.hparams['lr']!r}",
        f"width={job.hparams['width']}",
        f"length={job.length}",
        f"hydra.sweep.subdir={job.trial_id}",
    ]


def driver(
    sweep_dir: Path,
    launcher: InstantLauncher,
    name: str = "asha",
    policy: SnapshotPolicy = JOURNAL_ONLY,
) -> SweepDriver:
    return SweepDriver(
        searcher(name), launcher, sweep_dir, overrides_for, 3, "epochs", snapshots=policy
    )


def table(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / RESULTS_FILE, newline="") as handle:
        return [{k: v for k, v in row.items() if k != "dir"} for row in csv.DictReader(handle)]


def state(sweep_dir: Path) -> dict[str, Any]:
    saved: dict[str, Any] = json.loads((sweep_dir / STATE_FILE).read_text())
    return saved


class References:
    """Uninterrupted sweeps, one per searcher, run once for the tests of this module, with
    the whole state on every save (the way before the journal)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runs: dict[str, tuple[Path, InstantLauncher]] = {}

    def run(self, name: str = "asha") -> tuple[Path, InstantLauncher]:
        """The sweep directory and the launcher of ``name``'s reference sweep."""
        if name not in self.runs:
            sweep_dir = self.root / name
            launcher = InstantLauncher(sweep_dir)
            driver(sweep_dir, launcher, name, SnapshotPolicy.every_save()).run()
            self.runs[name] = (sweep_dir, launcher)
        return self.runs[name]

    def dir(self, name: str = "asha") -> Path:
        return self.run(name)[0]


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> References:
    return References(tmp_path_factory.mktemp("references"))


def killed(sweep_dir: Path, at_wait: int, name: str = "asha") -> InstantLauncher:
    launcher = InstantLauncher(sweep_dir, die_at_wait=at_wait)
    with pytest.raises(Killed):
        driver(sweep_dir, launcher, name).run()
    return launcher


# -- the file ---------------------------------------------------------------------------------
def test_a_journal_round_trips_its_entries_across_appends(tmp_path: Path) -> None:
    path = tmp_path / JOURNAL_FILE
    events = [
        ask_event(Job(0, {"lr": 0.1}, Fraction(1, 3), 0, False)),
        tell_event(0, float("nan"), Fraction(1, 3), None, None),
        tell_event(1, None, 2, "ValueError: bad\nsecond line é", None),
        count_event(EventKind.RESTARTS, 1, 2),
        tell_event(2, 0.1 + 0.2, Fraction(8), None, 1e-300),
    ]
    journal = EventJournal(path)
    journal.append([JournalEntry(0, events[0])])
    journal.append([JournalEntry(i, e) for i, e in enumerate(events) if i > 0])
    journal.close()
    read = EventJournal.read(path)
    assert not read.torn
    assert [number for number, _ in read.entries] == [1, 2, 3, 4, 5]
    got = [entry.event for _, entry in read.entries]
    assert math.isnan(got[1]["metric"])
    assert [g for i, g in enumerate(got) if i != 1] == [e for i, e in enumerate(events) if i != 1]
    assert got[4]["metric"] == 0.1 + 0.2  # floats exactly
    assert path.stat().st_size == journal.size


def test_a_cut_short_last_line_is_left_out_and_any_other_bad_line_names_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / JOURNAL_FILE
    lines = [JournalEntry(i, {"kind": "ask", "trial": i}).line() for i in range(3)]
    for cut in (1, len(lines[2]) // 2, len(lines[2]) - 2):  # cut before its last brace
        path.write_bytes(lines[0] + lines[1] + lines[2][:cut])
        read = EventJournal.read(path)
        assert read.torn and [e.seq for _, e in read.entries] == [0, 1]
    path.write_bytes(lines[0] + lines[1] + lines[2][:-1])  # all but its newline: it is whole
    assert [e.seq for _, e in EventJournal.read(path).entries] == [0, 1, 2]

    edited = lines[1].replace(b'"trial":1', b'"trial":7')
    damaged = {
        "its checksum does not match": edited,
        "not JSON": lines[1][:30] + b"\n",
        "not UTF-8 text": b"\xff\xfe\n",
        "not a journal entry": b'{"seq": 1}\n',
    }
    for why, line in damaged.items():
        path.write_bytes(lines[0] + line + lines[2])
        with pytest.raises(ConfigError) as error:
            EventJournal.read(path)
        assert f"{path} line 2" in str(error.value) and why in str(error.value)
        assert "hydra.sweep.dir" in str(error.value)
    path.write_bytes(lines[0] + edited)  # the last line, whole (a newline) but edited
    with pytest.raises(ConfigError, match="line 2"):
        EventJournal.read(path)


# -- replay equals the snapshot -------------------------------------------------------------
#: one step of a random search: ask (0), or tell the in-flight job at this index, with a
#: metric (or a failure: None), or record a driver count
steps = st.lists(
    st.one_of(
        st.just(("ask", 0, None)),
        st.tuples(st.just("tell"), st.integers(0, 5), st.one_of(st.none(), st.floats(0, 10))),
        st.tuples(st.just("count"), st.integers(0, 5), st.integers(0, 3)),
    ),
    max_size=80,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["random", "asha", "adaptive_asha", "bohb", "pbt"]),
    seed=st.integers(0, 3),
    program=steps,
    cut=st.floats(0, 1),
)
def test_replaying_the_journal_onto_a_snapshot_gives_the_live_searchers_state(
    name: str, seed: int, program: list[tuple[str, int, Any]], cut: float
) -> None:
    live = searcher(name, trials=12, seed=seed)
    events: list[dict[str, Any]] = []
    counts: dict[int, int] = {}
    snapshot: tuple[dict[str, Any], dict[int, int], int] | None = None
    at = int(cut * len(program))
    for index, (kind, which, value) in enumerate(program):
        if index == at:
            snapshot = (live.state_dict(), dict(counts), len(events))
        flying = live.in_flight()
        if kind == "ask":
            job = live.ask()
            if job is not None:
                events.append(ask_event(job))
        elif kind == "tell" and flying:
            job = flying[which % len(flying)]
            error = "failed" if value is None else None
            live.tell(job.trial_id, value, job.length, error=error, best=value)
            events.append(tell_event(job.trial_id, value, job.length, error, value))
        elif kind == "count" and flying:
            trial = flying[which % len(flying)].trial_id
            counts[trial] = value
            events.append(count_event(EventKind.RESTARTS, trial, value))
    if snapshot is None:
        snapshot = (live.state_dict(), dict(counts), len(events))
    saved, saved_counts, first = snapshot

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / JOURNAL_FILE
        path.write_bytes(b"".join(JournalEntry(seq, e).line() for seq, e in enumerate(events)))
        read = EventJournal.read(path)
    assert len(read.entries) == len(events)

    resumed = searcher(name, trials=12, seed=seed)
    resumed.load_state_dict(json.loads(json.dumps(saved)))
    replayed = replay(resumed, read, path, first_seq=first, restarts=saved_counts, raised_at={})
    assert replayed.next_seq == len(events) and replayed.events == len(events) - first
    assert resumed.state_dict() == live.state_dict()
    assert replayed.restarts == counts
    assert resumed.ask() == live.ask()  # and it goes on the same


def test_an_event_that_does_not_replay_is_an_error_naming_the_line(tmp_path: Path) -> None:
    live = searcher("asha")
    saved = live.state_dict()
    job = live.ask()
    assert job is not None
    path = tmp_path / JOURNAL_FILE
    following = live.ask()
    assert following is not None and following.rung == 0
    wrong = {**ask_event(following), "rung": 1}
    path.write_bytes(JournalEntry(0, ask_event(job)).line() + JournalEntry(1, wrong).line())
    resumed = searcher("asha")
    resumed.load_state_dict(saved)
    with pytest.raises(ConfigError) as error:
        replay(resumed, EventJournal.read(path), path, first_seq=0, restarts={}, raised_at={})
    assert f"{path} line 2" in str(error.value) and "asks (1, 0, False)" in str(error.value)

    path.write_bytes(JournalEntry(0, ask_event(job)).line() + JournalEntry(5, wrong).line())
    resumed = searcher("asha")
    resumed.load_state_dict(saved)
    with pytest.raises(ConfigError, match=r"line 2 = 'event 5' .* expected event 1"):
        replay(resumed, EventJournal.read(path), path, first_seq=0, restarts={}, raised_at={})


# -- the driver -------------------------------------------------------------------------------
def test_a_large_state_is_journaled_and_a_finished_sweep_leaves_the_whole_state(
    references: References,
    tmp_path: Path,
) -> None:
    expected = references.dir()
    sweep_dir = tmp_path / "sweep"
    launcher = InstantLauncher(sweep_dir)
    summary = driver(sweep_dir, launcher).run()

    assert summary.count(TrialStatus.COMPLETED) >= 1
    assert not (sweep_dir / JOURNAL_FILE).exists()  # folded into searcher.json at the end
    assert state(sweep_dir) == state(expected)
    assert table(sweep_dir) == table(expected)
    # While it ran, events went to the journal and searcher.json was rewritten now and then.
    snapshots = [size for size, _ in launcher.state_sizes]
    assert max(journal for _, journal in launcher.state_sizes) > 0
    assert len(set(snapshots)) < len(snapshots) / 3
    # ... and the journal never grew (much) beyond the snapshot it follows.
    assert all(journal <= size + 1000 for size, journal in launcher.state_sizes)


def test_a_small_state_is_written_whole_on_every_save(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    launcher = InstantLauncher(sweep_dir)
    driver(sweep_dir, launcher, policy=SnapshotPolicy()).run()  # 24 trials: a few kB
    assert all(journal == 0 for _, journal in launcher.state_sizes)
    assert not (sweep_dir / JOURNAL_FILE).exists()


@pytest.mark.parametrize("name", ["random", "asha", "adaptive_asha"])
def test_a_killed_sweep_resumes_from_the_journal_without_losing_or_rerunning(
    references: References, tmp_path: Path, name: str
) -> None:
    expected, everything = references.run(name)
    sweep_dir = tmp_path / "sweep"
    first = killed(sweep_dir, 11, name)
    assert (sweep_dir / JOURNAL_FILE).stat().st_size > 0  # events since the last snapshot
    second = InstantLauncher(sweep_dir)
    driver(sweep_dir, second, name).run()

    assert state(sweep_dir) == state(expected)
    assert table(sweep_dir) == table(expected)
    # Every job ran once in all: the ones in flight at the kill had written their result.json
    # and were recorded from it, not started again.
    assert first.running and second.started
    assert sorted(first.started + second.started) == sorted(everything.started)


def test_a_crash_in_the_middle_of_an_append_resumes_with_a_warning(
    references: References,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = references.dir()
    sweep_dir = tmp_path / "sweep"
    killed(sweep_dir, 9)
    journal = sweep_dir / JOURNAL_FILE
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[: last + (len(data) - last) // 2])  # the last append cut short

    with caplog.at_level(logging.WARNING, logger="detflow.sweep"):
        driver(sweep_dir, InstantLauncher(sweep_dir)).run()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(journal) in w and "cut short" in w for w in warned), warned
    assert state(sweep_dir) == state(expected)
    assert table(sweep_dir) == table(expected)


def test_a_damaged_journal_line_refuses_to_resume_and_changes_nothing(tmp_path: Path) -> None:
    for at_wait in range(5, 20):  # a kill that leaves a journal of 3 events or more
        sweep_dir = tmp_path / f"sweep-{at_wait}"
        killed(sweep_dir, at_wait)
        journal = sweep_dir / JOURNAL_FILE
        lines = journal.read_bytes().split(b"\n")
        if len(lines) > 3:
            break
    assert len(lines) > 3
    lines[1] = lines[1].replace(b'"kind":"', b'"kind":"x')
    journal.write_bytes(b"\n".join(lines))
    before = {p.name: p.read_bytes() for p in sweep_dir.iterdir() if p.is_file()}

    launcher = InstantLauncher(sweep_dir)
    with pytest.raises(ConfigError) as error:
        driver(sweep_dir, launcher).run()
    assert f"{journal} line 2" in str(error.value)
    assert "checksum does not match" in str(error.value)
    assert launcher.started == []
    assert {p.name: p.read_bytes() for p in sweep_dir.iterdir() if p.is_file()} == before


def test_a_journal_without_its_snapshot_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    killed(sweep_dir, 9)
    (sweep_dir / STATE_FILE).unlink()
    with pytest.raises(ConfigError, match=f"{JOURNAL_FILE} = '.* events without a searcher.json'"):
        driver(sweep_dir, InstantLauncher(sweep_dir)).run()


def test_a_crash_between_a_snapshot_and_clearing_the_journal_replays_nothing_twice(
    references: References,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    expected = references.dir()
    sweep_dir = tmp_path / "sweep"
    cleared: list[bytes] = []
    original = EventJournal.clear

    def die_clearing(self: EventJournal) -> None:
        cleared.append(self.path.read_bytes())
        raise Killed("killed clearing the journal")

    monkeypatch.setattr(EventJournal, "clear", die_clearing)
    with pytest.raises(Killed):
        driver(sweep_dir, InstantLauncher(sweep_dir)).run()
    monkeypatch.setattr(EventJournal, "clear", original)
    assert cleared and cleared[0]  # the journal held events the new snapshot holds too
    assert (sweep_dir / JOURNAL_FILE).read_bytes() == cleared[0]

    second = InstantLauncher(sweep_dir)
    driver(sweep_dir, second).run()
    assert state(sweep_dir) == state(expected)
    assert table(sweep_dir) == table(expected)


def test_the_store_writes_a_snapshot_when_the_journal_outgrows_it(tmp_path: Path) -> None:
    store = SweepStore(tmp_path, SnapshotPolicy(whole_below_bytes=100, interval_s=1e9))
    assert store.snapshot_due()  # none yet
    store.snapshot_written(5000, 0.01)
    store.record({"kind": "ask", "trial": 0, "rung": 0, "promotion": False})
    assert not store.snapshot_due()
    while store.journal.size < 5000:
        store.record(count_event(EventKind.RESTARTS, 0, 1))
        store.append()
    assert store.snapshot_due()
    store.snapshot_written(5000, 0.01)
    assert store.journal.size == 0 and (tmp_path / JOURNAL_FILE).read_bytes() == b""
    store.snapshot_written(5000, 0.01, final=True)
    assert not (tmp_path / JOURNAL_FILE).exists()
