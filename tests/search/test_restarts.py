"""``max_restarts`` and ``checkpoint_storage`` through the SweepDriver, with a fake launcher.

The fake of ``tests/search/test_driver.py`` plays the trial processes; :class:`Dying` adds the
ways a trial can end that a restart may cure (its process killed: ``lost``; the user's code
raising at a batch: ``raised_at``) and :class:`Checkpointing` writes each trial's checkpoints
as the harness lays them out, so that what the driver prunes can be read back from disk.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from detflow._core.checkpoints import checkpoint_names, pointer
from detflow._core.errors import ConfigError
from detflow._core.experiment import CheckpointPolicy
from detflow._search.driver import SweepDriver, SweepInterrupted, TrialOutcome
from detflow._search.searchers import Searcher
from tests.search.test_driver import (
    ASHA_RUNGS,
    BATCHES_PER_EPOCH,
    GRID_SIZE,
    MAX_LENGTH,
    UNIT,
    FakeLauncher,
    Kill,
    Killed,
    Run,
    World,
    asha,
    grid,
    loss,
    overrides_for,
    result_payload,
    rows,
    write_result,
)


class Dying(FakeLauncher):
    """Trials that die: ``lost[i]`` times trial ``i``'s process is killed (no result of its own,
    as a launcher reports a signal), ``raises[i]`` the batches at which its code raises, one
    per run of it, in order."""

    def __init__(
        self,
        world: World,
        *,
        lost: dict[int, int] | None = None,
        raises: dict[int, list[int]] | None = None,
        errors: dict[int, str] | None = None,
        complete_then_lost: frozenset[int] = frozenset(),
        kill: Kill | None = None,
    ) -> None:
        super().__init__(world, errors=errors, kill=kill)
        self.lost = dict(lost or {})
        self.raises = {k: list(v) for k, v in (raises or {}).items()}
        self.complete_then_lost = complete_then_lost

    def _end(self, run: Run) -> TrialOutcome:
        trial_id = run.trial_id
        if self.lost.get(trial_id):
            self.lost[trial_id] -= 1
            error = "the trial process died (killed by signal 9)"
            return TrialOutcome(trial_id, error, "log", lost="killed by signal 9")
        if self.raises.get(trial_id):
            batch = self.raises[trial_id].pop(0)
            return TrialOutcome(trial_id, "RuntimeError: boom", "log", raised_at=batch)
        if trial_id in self.complete_then_lost:  # result.json written, then the kill
            outcome = super()._end(run)
            assert outcome.error is None
            return TrialOutcome(trial_id, "the trial process died (killed by signal 9)", lost="x")
        return super()._end(run)


def driver(
    sweep_dir: Path,
    launcher: FakeLauncher,
    searcher: Searcher | None = None,
    *,
    max_restarts: int = 5,
    checkpoints: CheckpointPolicy | None = None,
    max_concurrent: int = 2,
) -> SweepDriver:
    made = SweepDriver(
        grid() if searcher is None else searcher,
        launcher,
        sweep_dir,
        overrides_for,
        max_concurrent,
        UNIT,
        max_restarts=max_restarts,
        checkpoints=checkpoints,
    )
    launcher.trial_dir = made.trial_dir
    return made


# -- max_restarts -----------------------------------------------------------------------------
def test_a_trial_killed_without_a_result_restarts_from_its_checkpoint_and_completes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    launcher = Dying(World(), lost={3: 1})
    with caplog.at_level(logging.INFO, "detflow.sweep"):
        summary = driver(tmp_path / "s", launcher).run()

    assert launcher.world.start_counts() == Counter({**dict.fromkeys(range(GRID_SIZE), 1), 3: 2})
    again = [run for run in launcher.started if run.trial_id == 3]
    assert again[0] == again[1]  # the same job: same hyperparameters, length and rung
    table = rows(tmp_path / "s")
    assert [(r["status"], r["restarts"]) for r in table] == [
        ("COMPLETED", "1" if i == 3 else "0") for i in range(GRID_SIZE)
    ]
    assert float(table[3]["best_metric"]) == loss(again[0].hparams, again[0].length)
    assert table[3]["error"] == ""
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "trial 3 ended without a result (killed by signal 9); restart 1 of 5 from its last "
        "checkpoint"
    ) in lines
    assert any(line.startswith("restarting trial 3 to 4 epochs") for line in lines)
    assert summary.restarts == {3: 1} and summary.failed == 0


def test_restarts_stop_at_max_restarts_and_the_trial_fails_saying_so(tmp_path: Path) -> None:
    launcher = Dying(World(), lost={1: 10})
    summary = driver(tmp_path / "s", launcher, max_restarts=2).run()

    assert launcher.world.start_counts()[1] == 3  # the first run and two restarts
    row = rows(tmp_path / "s")[1]
    assert (row["status"], row["restarts"]) == ("FAILED", "2")
    assert row["error"] == "the trial process died (killed by signal 9) (after 2 restarts)"
    assert summary.failed == 1


def test_max_restarts_0_fails_a_killed_trial_at_once_as_before(tmp_path: Path) -> None:
    launcher = Dying(World(), lost={1: 1})
    driver(tmp_path / "s", launcher, max_restarts=0).run()

    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))
    row = rows(tmp_path / "s")[1]
    assert (row["status"], row["restarts"], row["error"]) == (
        "FAILED",
        "0",
        "the trial process died (killed by signal 9)",
    )


@pytest.mark.parametrize(
    "error",
    [
        "ConfigError: searcher.metric = 'acc' is not valid: expected one of validation_loss",
        "TrialError: loss is nan at batch 3",
        "CorruptCheckpoint: run/checkpoints/0000000008/state.json is corrupt (x): delete it",
    ],
)
def test_detflows_own_errors_are_not_retried(tmp_path: Path, error: str) -> None:
    # The worker sets raised_at only for an exception of the user's code: none here.
    launcher = Dying(World(), errors={2: error})
    driver(tmp_path / "s", launcher).run()

    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))
    row = rows(tmp_path / "s")[2]
    assert (row["status"], row["restarts"], row["error"]) == ("FAILED", "0", error)


def test_a_nan_metric_is_not_retried(tmp_path: Path) -> None:
    launcher = FakeLauncher(World(), nan=frozenset({4}))
    driver(tmp_path / "s", launcher).run()
    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))
    assert rows(tmp_path / "s")[4]["restarts"] == "0"


def test_the_users_exception_twice_at_the_same_batch_is_not_retried_again(
    tmp_path: Path,
) -> None:
    launcher = Dying(World(), raises={0: [12, 12, 12]})
    driver(tmp_path / "s", launcher).run()

    assert launcher.world.start_counts()[0] == 2
    row = rows(tmp_path / "s")[0]
    assert (row["status"], row["restarts"]) == ("FAILED", "1")
    assert row["error"] == (
        "RuntimeError: boom (raised again at batch 12: not retried; after 1 restart)"
    )


def test_the_users_exception_at_other_batches_is_retried_each_time(tmp_path: Path) -> None:
    launcher = Dying(World(), raises={0: [12, 30, 31]})
    driver(tmp_path / "s", launcher).run()

    assert launcher.world.start_counts()[0] == 4
    row = rows(tmp_path / "s")[0]
    assert (row["status"], row["restarts"], row["error"]) == ("COMPLETED", "3", "")


def test_a_job_killed_after_its_result_json_reached_the_target_is_recorded_not_restarted(
    tmp_path: Path,
) -> None:
    launcher = Dying(World(), complete_then_lost=frozenset({2}))
    driver(tmp_path / "s", launcher).run()

    assert launcher.world.start_counts() == Counter(range(GRID_SIZE))
    row = rows(tmp_path / "s")[2]
    assert (row["status"], row["restarts"], row["error"]) == ("COMPLETED", "0", "")


def test_resume_keeps_each_trials_restarts(tmp_path: Path) -> None:
    # Trial 0 dies and the driver dies as it restarts it (restart 1 of 1); the resumed sweep
    # relaunches it, it dies again: its one restart is spent, it fails.
    sweep_dir, world = tmp_path / "s", World()
    first = Dying(world, lost={0: 1}, kill=Kill("start", 3))
    with pytest.raises(Killed):
        driver(sweep_dir, first, max_restarts=1).run()
    assert [run.trial_id for run in first.started] == [0, 1]
    state = json.loads((sweep_dir / "searcher.json").read_text())
    assert state["driver"]["restarts"] == {"0": 1}
    assert state["searcher"]["in_flight"] == [0, 1]

    second = Dying(world, lost={0: 1})
    driver(sweep_dir, second, max_restarts=1).run()
    assert [run.trial_id for run in second.started[:2]] == [0, 1]
    row = rows(sweep_dir)[0]
    assert (row["status"], row["restarts"]) == ("FAILED", "1")
    assert row["error"].endswith("(after 1 restart)")


def test_the_driver_state_is_checked_with_the_searchers(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "s"
    driver(sweep_dir, Dying(World(), lost={1: 1})).run()
    path = sweep_dir / "searcher.json"
    path.write_text(path.read_text().replace('"restarts": {"1": 1}', '"restarts": {"1": 0}'))
    with pytest.raises(ConfigError, match="checksum does not match"):
        driver(sweep_dir, FakeLauncher(World())).run()


def test_a_trial_that_dies_while_the_sweep_stops_stays_in_flight_for_the_resume(
    tmp_path: Path,
) -> None:
    sweep_dir = tmp_path / "s"
    made: list[SweepDriver] = []

    class StopThenDie(Dying):
        def wait(self) -> list[TrialOutcome]:
            made[0].request_stop()  # Ctrl-C while trials 0 and 1 run; trial 1 then dies
            return super().wait()

    launcher = StopThenDie(World(), lost={0: 1})
    made.append(driver(sweep_dir, launcher, max_concurrent=1))
    with pytest.raises(SweepInterrupted) as stopped:
        made[0].run()
    assert stopped.value.stopped == [0]
    state = json.loads((sweep_dir / "searcher.json").read_text())["searcher"]
    assert state["in_flight"] == [0]
    summary = driver(sweep_dir, FakeLauncher(World()), max_concurrent=1).run()
    assert [t.status for t in summary.trials] == ["COMPLETED"] * GRID_SIZE


# -- checkpoint_storage -----------------------------------------------------------------------
def write_checkpoint(root: Path, batches: int, metric: float | None) -> None:
    """A checkpoint as the harness lays it out (``state.json`` with its metric)."""
    name = f"{batches:010d}"
    (root / name).mkdir(parents=True, exist_ok=True)
    (root / name / "state.json").write_text(json.dumps({"batches": batches, "metric": metric}))
    (root / name / "trial.json").write_text("{}")
    (root / "latest.json").write_text(json.dumps({"name": name, "metric": metric}))


class Checkpointing(FakeLauncher):
    """Trials that checkpoint once an epoch, validated at each, keeping every checkpoint (the
    run-time policy is the store's; what the driver prunes is the point here). Each start of a
    promotion records whether the trial's latest checkpoint was still there."""

    def __init__(self, world: World) -> None:
        super().__init__(world)
        self.latest_at_start: dict[tuple[int, int], str | None] = {}

    def start(self, trial_id: int, overrides: list[str]) -> None:
        super().start(trial_id, overrides)
        run = self.started[-1]
        root = self._dir(trial_id) / "checkpoints"
        self.latest_at_start[trial_id, run.rung] = pointer(root, "latest.json")

    def _end(self, run: Run) -> TrialOutcome:
        outcome = super()._end(run)
        root = self._dir(run.trial_id) / "checkpoints"
        done = max((int(n) for n in checkpoint_names(root)), default=0) // BATCHES_PER_EPOCH
        for epoch in range(done + 1, int(run.length) + 1):
            write_checkpoint(root, epoch * BATCHES_PER_EPOCH, loss(run.hparams, Fraction(epoch)))
        return outcome


def kept_checkpoints(sweep_dir: Path) -> dict[int, list[str]]:
    found = {}
    for trial_dir in sorted(sweep_dir.iterdir()):
        if trial_dir.name.isdigit():
            found[int(trial_dir.name)] = checkpoint_names(trial_dir / "checkpoints")
    return found


def test_save_experiment_best_1_leaves_the_best_checkpoint_of_the_best_trial_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    policy = CheckpointPolicy(save_trial_latest=0, save_trial_best=0, save_experiment_best=1)
    launcher = Checkpointing(World())
    with caplog.at_level(logging.INFO, "detflow.sweep"):
        summary = driver(tmp_path / "s", launcher, checkpoints=policy).run()

    assert summary.best is not None
    kept = kept_checkpoints(tmp_path / "s")
    assert {t for t, names in kept.items() if names} == {summary.best.trial_id}
    root = tmp_path / "s" / str(summary.best.trial_id) / "checkpoints"
    assert kept[summary.best.trial_id] == [f"{MAX_LENGTH * BATCHES_PER_EPOCH:010d}"]  # its best
    assert pointer(root, "best.json") == kept[summary.best.trial_id][0]
    pruned = [r.getMessage() for r in caplog.records if "deleted" in r.getMessage()]
    # As each trial ends: all but its best; once it cannot be among the best 1: the rest.
    out = [line for line in pruned if "not among the best 1 trials" in line]
    assert sorted(line.split(":")[0] for line in out) == [
        f"trial {t}" for t in range(GRID_SIZE) if t != summary.best.trial_id
    ]
    assert (
        "trial 0: deleted 3 checkpoints (at batches 10, 20, 30), keeping its best, for the "
        "best 1 trials (checkpoint_storage)"
    ) in pruned
    assert "trial 0: deleted its 1 checkpoint (at batch 40): not among the best 1 trials " in (
        "\n".join(pruned)
    )


def test_a_trial_out_of_the_best_n_is_pruned_as_soon_as_enough_ended_trials_beat_it(
    tmp_path: Path,
) -> None:
    # Grid order: lr 0.001, 0.01, 0.1 x width 16, 64; losses 1.31, 1.27, 0.31, 0.27, ...
    # Trials run one at a time: once trials 1 and 2 ended, trial 0 is out of the best 2;
    # once 2 and 3 ended, trial 1 is out too.
    policy = CheckpointPolicy(save_experiment_best=2)
    launcher = Checkpointing(World())
    seen: dict[int, dict[int, list[str]]] = {}

    def look(run: Run) -> None:
        seen[run.trial_id] = kept_checkpoints(tmp_path / "s")

    launcher.on_start = look
    driver(tmp_path / "s", launcher, checkpoints=policy, max_concurrent=1).run()
    assert seen[2][0] != [] and seen[2][1] != []  # two ended: both may be the best 2
    assert seen[3][0] == [] and seen[3][1] != []  # 1 and 2 beat 0
    assert seen[4][1] == []  # 2 and 3 beat 1
    final = kept_checkpoints(tmp_path / "s")
    assert {t for t, names in final.items() if names} == {2, 3}
    last = f"{MAX_LENGTH * BATCHES_PER_EPOCH:010d}"  # its latest, and its best: the default
    assert final[2] == final[3] == [last]


def test_save_trial_latest_and_best_0_keep_nothing_once_a_trial_ended(tmp_path: Path) -> None:
    policy = CheckpointPolicy(save_trial_latest=0, save_trial_best=0)
    driver(tmp_path / "s", Checkpointing(World()), checkpoints=policy).run()
    assert kept_checkpoints(tmp_path / "s") == {t: [] for t in range(GRID_SIZE)}
    assert not (tmp_path / "s" / "0" / "checkpoints" / "latest.json").exists()


def test_the_default_policy_deletes_nothing(tmp_path: Path) -> None:
    driver(tmp_path / "s", Checkpointing(World())).run()
    assert all(len(names) == MAX_LENGTH for names in kept_checkpoints(tmp_path / "s").values())


def test_asha_with_a_policy_promotes_from_checkpoints_that_are_still_there(
    tmp_path: Path,
) -> None:
    policy = CheckpointPolicy(save_trial_latest=0, save_trial_best=0, save_experiment_best=1)
    launcher = Checkpointing(World())
    summary = driver(tmp_path / "s", launcher, asha(), checkpoints=policy, max_concurrent=3).run()

    promotions = [key for key in launcher.latest_at_start if key[1] > 0]
    assert promotions, "no trial was promoted"
    for trial_id, rung in promotions:  # the checkpoint of the rung below, where it continues
        batches = int(ASHA_RUNGS[rung - 1] * BATCHES_PER_EPOCH)
        assert launcher.latest_at_start[trial_id, rung] == f"{batches:010d}"
    kept = kept_checkpoints(tmp_path / "s")
    assert summary.best is not None
    assert {t for t, names in kept.items() if names} == {summary.best.trial_id}


def test_checkpoints_of_a_trial_in_flight_at_a_kill_survive_the_resume(tmp_path: Path) -> None:
    policy = CheckpointPolicy(save_trial_latest=0, save_trial_best=0, save_experiment_best=1)
    sweep_dir, world = tmp_path / "s", World()
    first = Checkpointing(world)
    first.kill = Kill("wait", 2)
    with pytest.raises(Killed):
        driver(sweep_dir, first, checkpoints=policy).run()
    # Trials 0 and 1 have ended (their result.json), the state still says in flight: the
    # driver pruned neither before its state said they ended.
    state = json.loads((sweep_dir / "searcher.json").read_text())["searcher"]
    in_flight = set(state["in_flight"])
    for trial_id, names in kept_checkpoints(sweep_dir).items():
        if trial_id in in_flight:
            assert names, trial_id
    summary = driver(sweep_dir, Checkpointing(world), checkpoints=policy).run()
    assert summary.best is not None
    kept = kept_checkpoints(sweep_dir)
    assert {t for t, names in kept.items() if names} == {summary.best.trial_id}


def test_results_of_a_restarted_trial_read_back_in_detflow_summary(tmp_path: Path) -> None:
    from detflow._results.reader import load_sweep

    sweep_dir = tmp_path / "s"
    driver(sweep_dir, Dying(World(), lost={5: 2})).run()
    write_result(sweep_dir / "5", result_payload("completed", Fraction(MAX_LENGTH), 0.1))
    by_id = {t.trial_id: t for t in load_sweep(sweep_dir).trials}
    assert by_id[5].restarts == 2 and by_id[0].restarts == 0
    (sweep_dir / "results.csv").unlink()  # searcher.json alone says it too
    assert {t.trial_id: t.restarts for t in load_sweep(sweep_dir).trials}[5] == 2
