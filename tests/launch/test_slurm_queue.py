"""The Slurm launcher's side of the queue, without a cluster: how often it asks Slurm, what it
reads from ``squeue``/``sacct``, jobs that can never start, nodes that failed, what the
driver composes. The real-cluster tests are in ``tests/slurm/`` and test_slurm_launcher.py."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

from detflow._launch import slurm_queue as queue
from detflow._launch.slurm import SlurmTrials, _Job
from detflow._launch.slurm_settings import SlurmSettings


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRepository:
    def __init__(self, groups: set[str]) -> None:
        self.groups = groups

    def group_exists(self, name: str) -> bool:
        return name in self.groups


def trials(tmp_path: Path, *, exclude: str | None = None, slots: int = 1) -> SlurmTrials:
    """A set-up launcher over a small master config (a sweep's, without Hydra's compose)."""
    launcher = SlurmTrials(SlurmSettings(partition="debug", exclude=exclude, gpus_per_node=0))
    launcher.config = OmegaConf.create(
        {
            "seed": 1,
            "resources": {"slots_per_trial": slots},
            "hyperparameters": {"lr": 0.1},
            "hydra": {
                "sweep": {"dir": str(tmp_path), "subdir": "${hydra.job.num}"},
                "job": {"name": "train", "num": 0},
                "overrides": {"task": ["+experiment=quadratic", "hyperparameters.lr=range(0,3)"]},
            },
        }
    )
    launcher.hydra_context = SimpleNamespace(  # type: ignore[assignment]
        config_loader=SimpleNamespace(repository=FakeRepository({"experiment", "model"}))
    )
    launcher._master_overrides = frozenset(launcher.config.hydra.overrides.task)
    return launcher


def submitted(launcher: SlurmTrials, trial_id: int, job_id: str) -> _Job:
    job = launcher._job(trial_id, ["++hyperparameters.lr=0.5", f"hydra.sweep.subdir={trial_id}"])
    paths = SimpleNamespace(result_pickle=job.dir / "none.pkl", stdout=job.dir / "log.out")
    job.submitted = SimpleNamespace(job_id=job_id, num_tasks=1, paths=paths)
    launcher.running[trial_id] = job
    return job


def record_calls(launcher: SlurmTrials, answers: dict[str, str]) -> list[list[str]]:
    """Replace the launcher's Slurm commands by ``answers`` (by command name); log each."""
    calls: list[list[str]] = []

    def slurm(command: list[str], *, missing_ok: bool = False) -> str | None:
        calls.append(command)
        return answers.get(command[0], "")

    launcher._slurm = slurm  # type: ignore[method-assign]
    return calls


# -- what the driver composes ------------------------------------------------------------------
def test_a_sweeper_job_is_not_composed_in_the_driver(tmp_path: Path) -> None:
    launcher = trials(tmp_path)
    launcher.compose = None  # type: ignore[assignment]  # would raise if called
    overrides = [
        "+experiment=quadratic",  # the master's own: composed there already
        "++hyperparameters.lr=0.5",
        "++resume=true",
        "hydra.sweep.subdir=7",
        "++hydra.job.env_set.DETFLOW_SEARCHER_KEYS=hyperparameters.lr",
    ]
    job = launcher._job(7, overrides)
    assert job.config is None and job.dir == tmp_path / "7"
    assert job.parameters["job_name"] == "train" and job.parameters["ntasks_per_node"] == 1


@pytest.mark.parametrize(
    "override",
    ["resources.slots_per_trial=2", "++hydra.job.name=other", "model=resnet", "~resources"],
)
def test_a_job_whose_overrides_change_its_sbatch_script_is_composed_in_the_driver(
    tmp_path: Path, override: str
) -> None:
    launcher = trials(tmp_path)
    composed: list[list[str]] = []

    def compose(trial_id: int, overrides: Sequence[str]) -> tuple[Any, Path]:
        composed.append(list(overrides))
        return OmegaConf.merge(launcher.config, {"resources": {"slots_per_trial": 2}}), tmp_path

    launcher.compose = compose  # type: ignore[method-assign]
    job = launcher._job(3, [override, "hydra.sweep.subdir=3"])
    assert composed == [[override, "hydra.sweep.subdir=3"]]
    assert job.config is not None and job.parameters["ntasks_per_node"] == 2


# -- arrays --------------------------------------------------------------------------------------
def test_arrays_are_cut_to_the_clusters_max_array_size_read_once(tmp_path: Path) -> None:
    launcher = trials(tmp_path)
    calls = record_calls(launcher, {"scontrol": "MaxArraySize            = 3\n"})
    jobs = [launcher._job(i, [f"hydra.sweep.subdir={i}"]) for i in range(7)]
    assert [len(a) for a in launcher._arrays(jobs)] == [3, 3, 1]
    assert [len(a) for a in launcher._arrays(jobs[:5])] == [3, 2]
    assert calls == [["scontrol", "show", "config"]]


# -- the rate of queue calls --------------------------------------------------------------------
def test_queue_calls_stay_at_most_six_a_minute_and_back_off_at_1000_jobs(tmp_path: Path) -> None:
    launcher = trials(tmp_path)
    clock = FakeClock()
    launcher.clock = queue.PollClock(clock=clock)
    for trial_id in range(1000):
        submitted(launcher, trial_id, f"100_{trial_id}")
    running = "\n".join(f"100_{i}|RUNNING|None|node1|debug" for i in range(1000))
    calls = record_calls(launcher, {"squeue": running})
    launcher.clock.hurry()  # as a submission does
    times = []
    while clock.now < 600:
        before = len(calls)
        launcher._ended()
        if len(calls) > before:
            times.append(clock.now)
        clock.now += 1.0
    assert all(c[0] == "squeue" and c[-1] == "100" for c in calls)  # one call: every job
    assert all(b - a >= queue.MIN_GAP_S for a, b in itertools.pairwise(times))
    assert max(sum(t <= s < t + 60 for s in times) for t in times) <= 6
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert times[0] == queue.MIN_GAP_S  # the first: 10 s after the submission
    assert gaps[:3] == [20.0, 40.0, 60.0] and set(gaps[3:]) == {60.0}  # healthy: backs off


def test_a_log_that_says_the_job_was_cancelled_brings_the_next_call_closer(tmp_path: Path) -> None:
    launcher = trials(tmp_path)
    clock = FakeClock()
    launcher.clock = queue.PollClock(clock=clock)
    job = submitted(launcher, 0, "5")
    job.log_path = tmp_path / "0.err"
    job.log_path.write_bytes(b"")
    calls = record_calls(launcher, {"squeue": "5|RUNNING|None|node1|debug"})
    launcher.clock.called(changed=False)
    launcher.clock.gap = queue.MAX_GAP_S
    clock.now = 11.0
    assert launcher._ended() == [] and calls == []
    job.log_path.write_bytes(b"slurmstepd: error: *** JOB 5 ON node1 CANCELLED AT 2026-12-01 ***\n")
    calls = record_calls(launcher, {"sacct": "5|CANCELLED by 0|node1"})
    (ended,) = launcher._ended()  # 11 s after the last call, not 60
    assert ended.final == "CANCELLED"
    assert [c[0] for c in calls] == ["sacct"]  # it may have left squeue already: sacct knows


# -- jobs that can never start ------------------------------------------------------------------
def test_a_job_that_can_never_start_fails_with_slurms_reason_and_what_it_asked(
    tmp_path: Path,
) -> None:
    launcher = trials(tmp_path)
    job = submitted(launcher, 0, "9")
    job.parameters["nodes"] = 3
    calls = record_calls(
        launcher,
        {
            "squeue": "9|PENDING|PartitionNodeLimit||debug\n",
            "scontrol": "PartitionName=debug MaxNodes=UNLIMITED TotalNodes=2 State=UP",
        },
    )
    launcher.clock.hurry()
    launcher.clock.last = -queue.MIN_GAP_S
    (ended,) = launcher._ended()
    assert ended.refusal == (
        "Slurm job 9 can never start: PartitionNodeLimit (nodes=3; partition debug has 2)"
    )
    assert ["scancel", "9"] in calls
    outcome = launcher._outcome(ended)
    assert outcome.error == ended.refusal and outcome.lost is None  # no restart: it never could


def test_waiting_for_resources_or_a_node_that_exists_is_not_a_refusal() -> None:
    nodes = {"node1", "node2"}.copy
    for reason in ("Resources", "Priority", "ReqNodeNotAvail, UnavailableNodes:node2"):
        assert not queue.never_starts(queue.QueuedJob("1", "PENDING", reason, "", "d"), nodes)
    for reason in (
        "InvalidAccount",
        "QOSMaxNodePerJobLimit",
        "ReqNodeNotAvail, UnavailableNodes:x9",
    ):
        assert queue.never_starts(queue.QueuedJob("1", "PENDING", reason, "", "d"), nodes)


# -- nodes that failed (Determined's exclude_node) ----------------------------------------------
def test_a_job_ended_node_fail_is_lost_and_its_restart_excludes_the_node(tmp_path: Path) -> None:
    launcher = trials(tmp_path, exclude="node9")
    job = submitted(launcher, 4, "21")
    job.result_path = tmp_path / "never.pkl"
    record_calls(launcher, {"squeue": "21|NODE_FAIL|None|node2|debug"})
    launcher.clock.hurry()
    launcher.clock.last = -queue.MIN_GAP_S
    (ended,) = launcher._ended()
    outcome = launcher._outcome(ended)
    assert outcome.lost == "Slurm job 21 ended NODE_FAIL on node2"  # a restart may cure it
    assert launcher.excluded_nodes == {4: ["node2"]}
    assert launcher._job(4, ["hydra.sweep.subdir=4"]).parameters["exclude"] == "node9,node2"
    assert launcher._job(5, ["hydra.sweep.subdir=5"]).parameters["exclude"] == "node9"


def test_a_job_slurm_requeued_after_its_node_failed_excludes_the_node_while_pending(
    tmp_path: Path,
) -> None:
    launcher = trials(tmp_path)
    clock = FakeClock()
    launcher.clock = queue.PollClock(clock=clock)
    submitted(launcher, 2, "30_1")
    calls = record_calls(launcher, {"squeue": "30_1|RUNNING|None|node1|debug"})
    launcher.clock.hurry()
    clock.now = 10.0
    launcher._ended()
    record_calls(launcher, {"squeue": "30_1|PENDING|BeginTime||debug"})
    clock.now = 30.0  # all healthy at 10 s: the next call 20 s later
    launcher._ended()
    assert launcher._requeued == {2}
    calls = record_calls(
        launcher, {"sacct": "30_1|NODE_FAIL|node1\n30_1|PENDING|None assigned\n30_0|COMPLETED|x\n"}
    )
    clock.now = 40.0  # a requeue wants a look soon: 10 s later
    assert launcher._ended() == []  # still the same job: Slurm runs it again
    assert calls[0][:2] == ["sacct", "-X"] and calls[0][-1] == "30"
    assert calls[1] == ["scontrol", "update", "JobId=30_1", "ExcNodeList=node1"]
    assert launcher.excluded_nodes == {2: ["node1"]}


def test_a_requeue_between_two_polls_still_excludes_the_failed_node(tmp_path: Path) -> None:
    """The job ran and was requeued after its node failed before the driver's first look:
    it is never seen RUNNING, only waiting with BeginTime (Slurm's reason for a requeued job),
    and its node is excluded all the same."""
    launcher = trials(tmp_path)
    clock = FakeClock()
    launcher.clock = queue.PollClock(clock=clock)
    submitted(launcher, 3, "31")
    record_calls(launcher, {"squeue": "31|PENDING|BeginTime||debug"})
    launcher.clock.hurry()
    clock.now = 10.0
    launcher._ended()
    assert launcher._requeued == {3}
    calls = record_calls(launcher, {"sacct": "31|NODE_FAIL|node2\n31|PENDING|None assigned\n"})
    clock.now = 20.0
    assert launcher._ended() == []
    assert calls[1] == ["scontrol", "update", "JobId=31", "ExcNodeList=node2"]
    assert launcher.excluded_nodes == {3: ["node2"]}
    record_calls(launcher, {"squeue": "31|PENDING|BeginTime||debug"})
    clock.now = 40.0
    launcher._ended()
    assert launcher._requeued == set()  # still held: looked at once, not at every poll


def test_sacct_records_of_a_requeued_job_name_the_failed_nodes_once() -> None:
    text = "7|NODE_FAIL|node2\n7|NODE_FAIL|node2\n7|REQUEUED|node1\n7|RUNNING|node1\n"
    job = queue.parse_sacct(text)["7"]
    assert job.state == "RUNNING" and job.failed_nodes() == ["node2"]
    assert queue.parse_sacct("8|CANCELLED by 0|node1")["8"].state == "CANCELLED"


def test_node_fail_in_sacct_is_final_only_once_the_job_left_the_queue(tmp_path: Path) -> None:
    launcher = trials(tmp_path)
    job = submitted(launcher, 1, "40")
    calls = record_calls(launcher, {"sacct": "40|NODE_FAIL|node2\n"})
    launcher._killed = True  # its log said so: sacct next
    launcher.clock.hurry()
    launcher.clock.last = -queue.MIN_GAP_S
    assert launcher._ended() == []  # Slurm may be requeueing it: not failed yet
    assert calls[-1] == ["scontrol", "update", "JobId=40", "ExcNodeList=node2"]
    job.gone_rounds = 1  # then squeue no longer lists it
    launcher.clock.last = -queue.MIN_GAP_S
    (ended,) = launcher._ended()
    assert (ended.final, ended.final_nodes) == ("NODE_FAIL", "node2")
    assert [c[0] for c in calls] == ["sacct", "scontrol", "sacct"]  # excluded once
