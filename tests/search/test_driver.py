"""SweepDriver through a fake launcher: what a sweep records, survives and refuses.

No subprocess, no Hydra: :class:`FakeLauncher` plays the trial processes. ``start`` records the
job the driver passed (its hyperparameters, length and rung, read back from the overrides
that :func:`overrides_for` made); ``wait`` ends the oldest started jobs by writing the
``result.json`` a trial writes (``detflow._harness.run``), with a loss computed from the job's
hyperparameters and length, or reports a failure. A :class:`Kill` makes the driver "die" at
the n-th ``start`` or ``wait`` call; a :class:`World` outlives it (the trial directories and
every job ever started), so that a second driver on the same directory can be checked to
resume without losing or rerunning a trial.
"""

from __future__ import annotations

import csv
import fcntl
import itertools
import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import pytest

from detflow._core.errors import ConfigError
from detflow._search.driver import SweepDriver, TrialOutcome
from detflow._search.searchers import Job, Searcher, make_searcher
from detflow._search.space import Choice, Interval, Space

UNIT = "epochs"
METRIC = "validation_loss"
BATCHES_PER_EPOCH = 10
MAX_LENGTH = 4
LRS = (0.001, 0.01, 0.1)
WIDTHS = (16, 64)
GRID: Space = {"hyperparameters.lr": Choice(LRS), "hyperparameters.width": Choice(WIDTHS)}
GRID_SIZE = len(LRS) * len(WIDTHS)
ASHA_SPACE: Space = {"hyperparameters.lr": Interval(1e-4, 1e-1, log=True)}
ASHA_TRIALS = 8
ASHA_RUNGS = (Fraction(1), Fraction(2), Fraction(4))  # max_length 4, divisor 2, 3 rungs


# -- the trial process, faked -----------------------------------------------------------------
def loss(hparams: dict[str, Any], length: Fraction) -> float:
    """The validation loss a trial reports: best at lr 0.01, wider and longer are better."""
    lr = float(hparams["hyperparameters.lr"])
    width = int(hparams.get("hyperparameters.width", 32))
    return (math.log10(lr) + 2) ** 2 + 1 / width + 1 / float(length)


def overrides_for(job: Job) -> list[str]:
    """The job's hyperparameters, length and rung as Hydra-style overrides."""
    chosen = [f"++{key}={json.dumps(value)}" for key, value in sorted(job.hparams.items())]
    return [
        *chosen,
        f"++length={job.length}",
        f"++rung={job.rung}",
        f"hydra.sweep.subdir={job.trial_id}",
    ]


@dataclass(frozen=True)
class Run:
    """A started job, as the trial process sees it (from its overrides only)."""

    trial_id: int
    hparams: dict[str, Any]
    length: Fraction
    rung: int


def parse(trial_id: int, overrides: list[str]) -> Run:
    """Read back what :func:`overrides_for` wrote."""
    hparams: dict[str, Any] = {}
    length: Fraction | None = None
    rung: int | None = None
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+")
        if key == "length":
            length = Fraction(value)
        elif key == "rung":
            rung = int(value)
        elif key == "hydra.sweep.subdir":
            assert value == str(trial_id)
        else:
            hparams[key] = json.loads(value)
    assert length is not None and rung is not None, overrides
    return Run(trial_id, hparams, length, rung)


def result_payload(status: str, length: Fraction, metric: float | None) -> dict[str, Any]:
    """A ``result.json`` with the fields ``Harness._result`` writes (one epoch: 10 batches)."""
    batches = int(length * BATCHES_PER_EPOCH)
    return {
        "status": status,
        "records": batches * 32,
        "batches": batches,
        "steps": batches,
        "epochs": batches // BATCHES_PER_EPOCH,
        "target_batches": batches,
        "batches_per_epoch": BATCHES_PER_EPOCH,
        "global_batch_size": 32,
        "aggregation_frequency": 1,
        "length": str(length),
        "unit": UNIT,
        "metric": metric,
        "best_metric": metric,
        "validation": {} if metric is None else {METRIC: metric},
    }


def write_result(trial_dir: Path, payload: dict[str, Any]) -> None:
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "result.json").write_text(json.dumps(payload, indent=2) + "\n")


class Killed(Exception):
    """The driver's process dies here (SIGKILL, a lost node): nothing after it runs."""


@dataclass(frozen=True)
class Kill:
    """Die at the ``number``-th call of ``call`` (before that start takes effect; after that
    wait's trials wrote their results). ``orphans_finish``: the trials still running then go
    on and write their results; otherwise they die with the driver."""

    call: Literal["start", "wait"]
    number: int
    orphans_finish: bool = False


@dataclass
class World:
    """What outlives one driver: every job started, and those that reached their target."""

    starts: list[Run] = field(default_factory=list)
    finished: list[Run] = field(default_factory=list)
    reruns: list[Run] = field(default_factory=list)  # a start of a job already finished

    def start_counts(self) -> Counter[int]:
        return Counter(run.trial_id for run in self.starts)


class FakeLauncher:
    """A :class:`~detflow._search.driver.TrialLauncher` whose trials end when waited for.

    ``wait`` ends the ``per_wait`` oldest running jobs. A trial in ``errors`` fails with that
    error (no result.json); one in ``no_result`` ends cleanly without one; one in ``nan`` reports
    a nan loss; one in ``preempt_once`` is stopped halfway the first time it runs.
    """

    def __init__(
        self,
        world: World,
        *,
        kill: Kill | None = None,
        per_wait: int = 1,
        errors: dict[int, str] | None = None,
        no_result: frozenset[int] = frozenset(),
        nan: frozenset[int] = frozenset(),
        preempt_once: frozenset[int] = frozenset(),
        on_start: Callable[[Run], None] | None = None,
    ) -> None:
        self.world = world
        self.kill = kill
        self.per_wait = per_wait
        self.errors = dict(errors or {})
        self.no_result = no_result
        self.nan = nan
        self.preempt_once = set(preempt_once)
        self.on_start = on_start
        self.trial_dir: Callable[[int], Path] | None = None  # the driver's, see make_driver
        self.calls: Counter[str] = Counter()
        self.started: list[Run] = []
        self.running: list[Run] = []
        self.most_running = 0
        self.found: dict[tuple[int, int], dict[str, Any] | None] = {}  # result.json at start

    def _dir(self, trial_id: int) -> Path:
        assert self.trial_dir is not None, "make_driver binds the launcher to its driver"
        return self.trial_dir(trial_id)

    def start(self, trial_id: int, overrides: list[str]) -> None:
        self.calls["start"] += 1
        if self._dies_at("start"):
            self._die()
        run = parse(trial_id, overrides)
        assert all(r.trial_id != trial_id for r in self.running), f"{trial_id} started twice"
        path = self._dir(trial_id) / "result.json"
        self.found[trial_id, run.rung] = json.loads(path.read_text()) if path.exists() else None
        if any(f.trial_id == trial_id and f.length >= run.length for f in self.world.finished):
            self.world.reruns.append(run)
        if self.on_start is not None:
            self.on_start(run)
        self.started.append(run)
        self.world.starts.append(run)
        self.running.append(run)
        self.most_running = max(self.most_running, len(self.running))

    def wait(self) -> list[TrialOutcome]:
        self.calls["wait"] += 1
        assert self.running, "waited with nothing running: a real launcher would block forever"
        ended, self.running = self.running[: self.per_wait], self.running[self.per_wait :]
        outcomes = [self._end(run) for run in ended]
        if self._dies_at("wait"):
            self._die()
        return outcomes

    def _dies_at(self, call: Literal["start", "wait"]) -> bool:
        kill = self.kill
        return kill is not None and kill.call == call and kill.number == self.calls[call]

    def _die(self) -> None:
        assert self.kill is not None
        if self.kill.orphans_finish:
            for run in self.running:
                self._end(run)
        self.running = []
        raise Killed(f"killed at {self.kill.call} #{self.kill.number}")

    def _end(self, run: Run) -> TrialOutcome:
        trial_dir = self._dir(run.trial_id)
        if run.trial_id in self.errors:
            return TrialOutcome(run.trial_id, self.errors[run.trial_id], str(trial_dir / "log"))
        if run.trial_id in self.no_result:
            return TrialOutcome(run.trial_id)
        if run.trial_id in self.preempt_once:
            self.preempt_once.discard(run.trial_id)
            half = run.length / 2
            write_result(trial_dir, result_payload("stopped", half, loss(run.hparams, half)))
            return TrialOutcome(run.trial_id)
        metric = math.nan if run.trial_id in self.nan else loss(run.hparams, run.length)
        write_result(trial_dir, result_payload("completed", run.length, metric))
        self.world.finished.append(run)
        return TrialOutcome(run.trial_id)


# -- helpers ----------------------------------------------------------------------------------
def grid() -> Searcher:
    return make_searcher(
        "grid",
        space=GRID,
        max_length=MAX_LENGTH,
        max_trials=1,
        seed=0,
        metric=METRIC,
        smaller_is_better=True,
    )


def asha(name: str = "asha", max_trials: int = ASHA_TRIALS, **options: Any) -> Searcher:
    """``name`` (asha or bohb) on ASHA_SPACE, with the rungs ASHA_RUNGS (and ``options``)."""
    return make_searcher(
        name,
        space=ASHA_SPACE,
        max_length=MAX_LENGTH,
        max_trials=max_trials,
        seed=0,
        metric=METRIC,
        smaller_is_better=True,
        divisor=2,
        max_rungs=len(ASHA_RUNGS),
        **options,
    )


def make_driver(
    sweep_dir: Path,
    launcher: FakeLauncher,
    searcher: Searcher | None = None,
    max_concurrent: int = 2,
) -> SweepDriver:
    driver = SweepDriver(
        grid() if searcher is None else searcher,
        launcher,
        sweep_dir,
        overrides_for,
        max_concurrent,
        UNIT,
    )
    launcher.trial_dir = driver.trial_dir
    return driver


def rows(sweep_dir: Path) -> list[dict[str, str]]:
    """``results.csv``, one dict per trial."""
    with open(sweep_dir / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def without_dir(table: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "dir"} for row in table]


def completed_grid(tmp_path: Path, name: str = "sweep") -> tuple[Path, list[dict[str, str]]]:
    """An uninterrupted grid sweep: its directory and its ``results.csv``."""
    sweep_dir = tmp_path / name
    make_driver(sweep_dir, FakeLauncher(World())).run()
    return sweep_dir, rows(sweep_dir)


@contextmanager
def locked(sweep_dir: Path) -> Iterator[None]:
    """Hold the sweep directory's lock, as a running sweep in another process would."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- 1. grid ----------------------------------------------------------------------------------
def test_grid_search_runs_every_point_once_and_writes_one_completed_row_per_trial(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "sweep"
    launcher = FakeLauncher(World())
    summary = make_driver(sweep_dir, launcher, max_concurrent=2).run()

    points = [
        {"hyperparameters.lr": lr, "hyperparameters.width": width}
        for lr, width in itertools.product(LRS, WIDTHS)
    ]
    assert sorted((r.hparams for r in launcher.started), key=str) == sorted(points, key=str)
    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))
    assert {(r.length, r.rung) for r in launcher.started} == {(Fraction(MAX_LENGTH), 0)}
    assert launcher.most_running == 2  # max_concurrent trials ran at once, never more

    by_id = {run.trial_id: run for run in launcher.started}
    table = rows(sweep_dir)
    assert [row["trial_id"] for row in table] == [str(i) for i in range(GRID_SIZE)]
    for row in table:
        run = by_id[int(row["trial_id"])]
        assert row["status"] == "COMPLETED"
        assert row["hyperparameters.lr"] == str(run.hparams["hyperparameters.lr"])
        assert row["hyperparameters.width"] == str(run.hparams["hyperparameters.width"])
        assert float(row["best_metric"]) == loss(run.hparams, run.length)
        assert float(row["last_metric"]) == loss(run.hparams, run.length)
        assert row[f"length_{UNIT}"] == str(MAX_LENGTH)
        assert row["batches"] == str(MAX_LENGTH * BATCHES_PER_EPOCH)
        assert row["error"] == ""
        assert row["dir"] == str(sweep_dir / row["trial_id"])

    best = min(launcher.started, key=lambda r: loss(r.hparams, r.length))
    assert summary.best is not None and summary.best.trial_id == best.trial_id
    assert [t.status for t in summary.trials] == ["COMPLETED"] * GRID_SIZE
    assert summary.failed == 0
    assert summary.batches_trained == GRID_SIZE * MAX_LENGTH * BATCHES_PER_EPOCH


# -- 2. failure isolation ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("raises", "RuntimeError: CUDA out of memory"),
        ("no result.json", "without a result.json"),
        ("nan loss", "metric is nan"),
    ],
)
def test_a_failed_trial_is_recorded_failed_with_its_error_and_the_others_still_run(
    tmp_path: Path, how: str, error: str
) -> None:
    failing = 2
    launcher = FakeLauncher(
        World(),
        errors={failing: error} if how == "raises" else None,
        no_result=frozenset({failing}) if how == "no result.json" else frozenset(),
        nan=frozenset({failing}) if how == "nan loss" else frozenset(),
    )
    summary = make_driver(tmp_path / "sweep", launcher).run()

    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))  # not retried, none lost
    table = rows(tmp_path / "sweep")
    assert len(table) == GRID_SIZE
    for row in table:
        if row["trial_id"] == str(failing):
            assert row["status"] == "FAILED"
            assert error in row["error"]
            assert "\n" not in row["error"]
            assert row["best_metric"] == row["last_metric"] == ""
        else:
            assert row["status"] == "COMPLETED"
            assert row["error"] == ""
            assert row["best_metric"] != ""
    assert summary.failed == 1
    assert summary.best is not None and summary.best.trial_id != failing


def test_a_trial_stopped_before_its_target_is_relaunched_until_it_completes(
    tmp_path: Path,
) -> None:
    launcher = FakeLauncher(World(), preempt_once=frozenset({1}))
    make_driver(tmp_path / "sweep", launcher).run()

    counts = launcher.world.start_counts()
    assert counts[1] == 2
    assert all(counts[i] == 1 for i in range(GRID_SIZE) if i != 1)
    relaunch = [run for run in launcher.started if run.trial_id == 1][-1]
    assert relaunch.length == MAX_LENGTH  # the same job again, not a shorter one
    row = rows(tmp_path / "sweep")[1]
    assert row["status"] == "COMPLETED"
    assert row[f"length_{UNIT}"] == str(MAX_LENGTH)
    assert float(row["best_metric"]) == loss(relaunch.hparams, relaunch.length)


# -- 3. resume after a kill -------------------------------------------------------------------
@pytest.mark.parametrize("orphans_finish", [False, True], ids=["orphans-die", "orphans-finish"])
@pytest.mark.parametrize("number", range(1, GRID_SIZE + 1))
@pytest.mark.parametrize("call", ["start", "wait"])
def test_resume_after_a_kill_loses_no_trial_and_reruns_no_finished_one(
    tmp_path: Path, call: Literal["start", "wait"], number: int, orphans_finish: bool
) -> None:
    _, reference = completed_grid(tmp_path, "reference")
    sweep_dir = tmp_path / "sweep"
    world = World()
    first = FakeLauncher(world, kill=Kill(call, number, orphans_finish))
    with pytest.raises(Killed):
        make_driver(sweep_dir, first).run()
    assert first.calls[call] == number

    second = FakeLauncher(world)
    summary = make_driver(sweep_dir, second, grid()).run()

    assert world.reruns == []  # no job that had reached its target was started again
    assert Counter(run.trial_id for run in world.finished) == Counter(range(GRID_SIZE))
    if orphans_finish:  # every trial that was started ran to its end: none started twice
        assert world.start_counts() == Counter(range(GRID_SIZE))
    assert without_dir(rows(sweep_dir)) == without_dir(reference)
    assert [t.status for t in summary.trials] == ["COMPLETED"] * GRID_SIZE


@pytest.mark.parametrize(
    "kill",
    [Kill("wait", 3), Kill("wait", 7, orphans_finish=True), Kill("start", 5), Kill("start", 10)],
    ids=str,
)
def test_asha_resume_after_a_kill_reruns_no_finished_rung(tmp_path: Path, kill: Kill) -> None:
    sweep_dir = tmp_path / "sweep"
    world = World()
    first = FakeLauncher(world, kill=kill)
    with pytest.raises(Killed):
        make_driver(sweep_dir, first, asha(), max_concurrent=3).run()
    summary = make_driver(sweep_dir, FakeLauncher(world), asha(), max_concurrent=3).run()

    assert world.reruns == []
    finished = Counter((run.trial_id, run.rung) for run in world.finished)
    assert set(finished.values()) == {1}  # each (trial, rung) trained to its end once
    assert len(summary.trials) == ASHA_TRIALS
    for row in rows(sweep_dir):
        rung = int(row["rung"])
        assert row["status"] in ("COMPLETED", "STOPPED_EARLY")
        assert (int(row["trial_id"]), rung) in finished
        assert Fraction(row[f"length_{UNIT}"]) == ASHA_RUNGS[rung]


# -- 4. trials in flight at the kill ----------------------------------------------------------
def killed_with_two_in_flight(sweep_dir: Path, world: World) -> FakeLauncher:
    """Trial 0 finished and recorded; trial 1 running; trial 2 asked, saved, not started."""
    first = FakeLauncher(world, kill=Kill("start", 3))
    with pytest.raises(Killed):
        make_driver(sweep_dir, first).run()
    assert [run.trial_id for run in first.started] == [0, 1]
    assert [run.trial_id for run in world.finished] == [0]
    return first


def test_trials_in_flight_when_the_driver_died_are_started_again_first_on_resume(
    tmp_path: Path,
) -> None:
    world = World()
    killed_with_two_in_flight(tmp_path / "sweep", world)
    second = FakeLauncher(world)
    make_driver(tmp_path / "sweep", second).run()

    assert [run.trial_id for run in second.started[:2]] == [1, 2]
    assert [run.length for run in second.started[:2]] == [Fraction(MAX_LENGTH)] * 2
    assert 0 not in {run.trial_id for run in second.started}
    assert [row["status"] for row in rows(tmp_path / "sweep")] == ["COMPLETED"] * GRID_SIZE


def test_on_resume_a_trial_whose_result_json_shows_its_target_is_recorded_not_relaunched(
    tmp_path: Path,
) -> None:
    world = World()
    first = killed_with_two_in_flight(tmp_path / "sweep", world)
    # Trial 1 ended just before the kill: its result.json is there, the driver never saw it.
    write_result(tmp_path / "sweep" / "1", result_payload("completed", Fraction(4), 0.125))
    second = FakeLauncher(world)
    make_driver(tmp_path / "sweep", second).run()

    assert 1 not in {run.trial_id for run in second.started}
    assert second.started[0].trial_id == 2  # the one in flight without a result: relaunched
    assert first.started[1].trial_id == 1
    row = rows(tmp_path / "sweep")[1]
    assert (row["status"], row["best_metric"], row["batches"]) == ("COMPLETED", "0.125", "40")


@pytest.mark.parametrize(
    "result",
    [
        result_payload("stopped", Fraction(2), 0.5),
        result_payload("completed", Fraction(2), 0.5),  # shorter than the job's target
        {"status": "completed", "length": "4"},  # not a whole result.json
    ],
    ids=["stopped", "completed-short", "partial"],
)
def test_on_resume_a_trial_whose_result_json_falls_short_of_its_target_is_relaunched(
    tmp_path: Path, result: dict[str, Any]
) -> None:
    world = World()
    killed_with_two_in_flight(tmp_path / "sweep", world)
    write_result(tmp_path / "sweep" / "1", result)
    second = FakeLauncher(world)
    make_driver(tmp_path / "sweep", second).run()

    target = Fraction(MAX_LENGTH)
    assert [(run.trial_id, run.length) for run in second.started[:2]] == [(1, target), (2, target)]
    row = rows(tmp_path / "sweep")[1]
    assert row["status"] == "COMPLETED"
    assert float(row["best_metric"]) == loss(second.started[0].hparams, Fraction(MAX_LENGTH))


def test_a_resume_that_only_records_trials_from_their_results_saves_them(
    tmp_path: Path,
) -> None:
    # The driver dies in the last wait, after the last trial wrote its result.json: on resume
    # there is nothing to start, only that trial to record from its result.json.
    sweep_dir = tmp_path / "sweep"
    world = World()
    with pytest.raises(Killed):
        make_driver(sweep_dir, FakeLauncher(world, kill=Kill("wait", GRID_SIZE))).run()
    second = FakeLauncher(world)
    summary = make_driver(sweep_dir, second).run()

    assert second.started == []
    assert [t.status for t in summary.trials] == ["COMPLETED"] * GRID_SIZE
    # What the sweep leaves on disk says the same as what it returned.
    assert [row["status"] for row in rows(sweep_dir)] == ["COMPLETED"] * GRID_SIZE
    state = json.loads((sweep_dir / "searcher.json").read_text())
    assert state["searcher"]["in_flight"] == []


def test_a_promotion_in_flight_is_relaunched_not_taken_from_the_lower_rungs_result(
    tmp_path: Path,
) -> None:
    def die_at_first_promotion(run: Run) -> None:
        if run.rung > 0:
            raise Killed(f"killed promoting trial {run.trial_id}")

    sweep_dir = tmp_path / "sweep"
    world = World()
    first = FakeLauncher(world, on_start=die_at_first_promotion)
    with pytest.raises(Killed):
        make_driver(sweep_dir, first, asha(), max_concurrent=1).run()
    promoted = first.found  # the last key is the promotion that died
    trial_id, rung = list(promoted)[-1]
    assert rung == 1
    assert promoted[trial_id, rung] is not None  # its rung-0 result.json is in its directory

    second = FakeLauncher(world)
    make_driver(sweep_dir, second, asha(), max_concurrent=1).run()
    resumed = second.started[0]
    assert (resumed.trial_id, resumed.rung, resumed.length) == (trial_id, 1, ASHA_RUNGS[1])
    assert world.reruns == []


# -- 5. the lock ------------------------------------------------------------------------------
def test_a_sweep_directory_held_by_another_sweep_is_refused_and_left_unchanged(
    tmp_path: Path,
) -> None:
    sweep_dir, table = completed_grid(tmp_path)
    before = {name: (sweep_dir / name).read_bytes() for name in ("searcher.json", "results.csv")}

    launcher = FakeLauncher(World())
    with locked(sweep_dir), pytest.raises(ConfigError) as refused:
        make_driver(sweep_dir, launcher).run()
    assert refused.value.key == "hydra.sweep.dir"
    assert "hydra.sweep.dir" in str(refused.value)
    assert str(sweep_dir) in str(refused.value)
    assert launcher.started == []
    after = {name: (sweep_dir / name).read_bytes() for name in before}
    assert after == before

    # Once the other sweep let go, the same call resumes: a finished sweep runs nothing.
    summary = make_driver(sweep_dir, launcher).run()
    assert launcher.started == []
    assert rows(sweep_dir) == table
    assert [t.status for t in summary.trials] == ["COMPLETED"] * GRID_SIZE


def test_a_second_sweep_started_while_one_runs_in_the_directory_is_refused(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "sweep"
    intruder = FakeLauncher(World())
    refusals: list[ConfigError] = []

    def start_a_second_sweep(run: Run) -> None:
        if run.trial_id == 0:
            try:
                make_driver(sweep_dir, intruder).run()
            except ConfigError as exc:
                refusals.append(exc)

    launcher = FakeLauncher(World(), on_start=start_a_second_sweep)
    summary = make_driver(sweep_dir, launcher).run()

    assert [exc.key for exc in refusals] == ["hydra.sweep.dir"]
    assert intruder.started == []
    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))  # the first went on
    assert [t.status for t in summary.trials] == ["COMPLETED"] * GRID_SIZE


# -- 6. the result.json cache -----------------------------------------------------------------
@pytest.mark.parametrize("tamper", ["rewritten", "garbage", "deleted"])
def test_results_csv_keeps_a_recorded_trials_values_when_its_result_json_changes_later(
    tmp_path: Path, tamper: str
) -> None:
    sweep_dir = tmp_path / "sweep"

    def tamper_with_trial_0(run: Run) -> None:
        if run.trial_id != 2:  # trial 2 starts once trial 0 has ended and been recorded
            return
        path = sweep_dir / "0" / "result.json"
        if tamper == "rewritten":
            bogus = result_payload("completed", Fraction(MAX_LENGTH), 123.0)
            write_result(path.parent, {**bogus, "batches": 999})
        elif tamper == "garbage":
            path.write_text("{not json")
        else:
            path.unlink()

    launcher = FakeLauncher(World(), on_start=tamper_with_trial_0)
    summary = make_driver(sweep_dir, launcher).run()

    row = rows(sweep_dir)[0]
    run = next(run for run in launcher.started if run.trial_id == 0)
    assert row["status"] == "COMPLETED"
    assert row["batches"] == str(MAX_LENGTH * BATCHES_PER_EPOCH)
    assert float(row["best_metric"]) == loss(run.hparams, run.length)
    assert summary.batches_trained == GRID_SIZE * MAX_LENGTH * BATCHES_PER_EPOCH


def test_each_finished_trials_result_json_is_read_once_in_a_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launcher = FakeLauncher(World())
    driver = make_driver(tmp_path / "sweep", launcher)
    found: Counter[int] = Counter()
    read = driver.read_result

    def counting(trial_id: int) -> Any:
        result = read(trial_id)
        if result is not None:
            found[trial_id] += 1
        return result

    monkeypatch.setattr(driver, "read_result", counting)
    driver.run()
    assert found == Counter(range(GRID_SIZE))


# -- 7. ASHA ----------------------------------------------------------------------------------
def test_asha_promotes_trials_from_their_own_results_and_ends_completed_or_stopped_early(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "sweep"
    launcher = FakeLauncher(World())
    summary = make_driver(sweep_dir, launcher, asha(), max_concurrent=3).run()

    promotions = [run for run in launcher.started if run.rung > 0]
    assert promotions, "no trial was promoted"
    for run in promotions:
        assert run.length == ASHA_RUNGS[run.rung]
        before = launcher.found[run.trial_id, run.rung]  # continues its lower rung's run
        assert before is not None and before["status"] == "completed"
        assert Fraction(before["length"]) == ASHA_RUNGS[run.rung - 1]
    assert {run.trial_id for run in launcher.started if run.rung == 0} == set(range(ASHA_TRIALS))
    assert launcher.most_running <= 3

    statuses = Counter(row["status"] for row in rows(sweep_dir))
    assert set(statuses) == {"COMPLETED", "STOPPED_EARLY"}
    assert sum(statuses.values()) == ASHA_TRIALS
    for row in rows(sweep_dir):
        rung = int(row["rung"])
        assert Fraction(row[f"length_{UNIT}"]) == ASHA_RUNGS[rung]
        assert row["batches"] == str(ASHA_RUNGS[rung] * BATCHES_PER_EPOCH)
        assert (row["status"] == "COMPLETED") == (rung == len(ASHA_RUNGS) - 1)
    assert summary.best is not None and summary.best.status == "COMPLETED"


def test_asha_promotion_that_ends_without_a_new_result_json_is_not_recorded_as_reached(
    tmp_path: Path,
) -> None:
    # A promotion's process exits cleanly without writing result.json (it never called
    # fit()): the trial's directory still holds its lower rung's result. A new trial in the
    # same case is FAILED ("ended without a result.json"); a promotion must not be recorded
    # as having reached its rung with the lower rung's length and loss.
    class SilentPromotions(FakeLauncher):
        def _end(self, run: Run) -> TrialOutcome:
            return TrialOutcome(run.trial_id) if run.rung > 0 else super()._end(run)

    sweep_dir = tmp_path / "sweep"
    launcher = SilentPromotions(World())
    make_driver(sweep_dir, launcher, asha(), max_concurrent=1).run()

    promoted = {run.trial_id for run in launcher.started if run.rung > 0}
    assert promoted
    for row in rows(sweep_dir):
        if int(row["trial_id"]) in promoted:
            assert row["status"] == "FAILED" and row["error"], row


def test_asha_through_the_driver_decides_as_the_searcher_alone_does(tmp_path: Path) -> None:
    launcher = FakeLauncher(World())
    summary = make_driver(tmp_path / "sweep", launcher, asha(), max_concurrent=1).run()

    alone = asha()
    asked: list[tuple[int, int, Fraction]] = []
    while (job := alone.ask()) is not None:
        asked.append((job.trial_id, job.rung, job.length))
        alone.tell(job.trial_id, loss(job.hparams, job.length), job.length)
    assert [(run.trial_id, run.rung, run.length) for run in launcher.started] == asked
    assert summary.trials == alone.trials()
    assert any(rung > 0 for _, rung, _ in asked)


def bohb_news(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("bohb: ")]


@pytest.mark.parametrize("kill", [Kill("wait", 30), Kill("wait", 55)], ids=str)
def test_bohb_tells_of_each_rung_test_once_even_across_a_kill_and_resume(
    tmp_path: Path, kill: Kill, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="detflow")

    def bohb() -> Searcher:  # every proposal random: the rung test reads random draws only
        return asha("bohb", max_trials=40, random_fraction=1.0)

    make_driver(tmp_path / "reference", FakeLauncher(World()), bohb()).run()
    reference = bohb_news(caplog)
    assert len(reference) == 1 and "rung 0 (1 epoch)" in reference[0], reference
    assert "(8 + 8 trials)" in reference[0], reference
    caplog.clear()
    world = World()
    with pytest.raises(Killed):  # the test is decided at the 38th wait: before / after it
        make_driver(tmp_path / "sweep", FakeLauncher(world, kill=kill), bohb()).run()
    make_driver(tmp_path / "sweep", FakeLauncher(world), bohb()).run()
    assert bohb_news(caplog) == reference
