"""``detflow status DIR`` and ``detflow cancel DIR``: a sweep's trials, its Slurm jobs and
its detached driver (``hydra.sweeper.detach=true``, :mod:`detflow._hydra.detach`).

``status`` reads the sweep's files and asks Slurm (``squeue``, ``sacct``) about its jobs:
the trial jobs are the jobs whose batch script lies under the sweep's submitit folder.
``cancel`` stops the driver first (``SIGINT``: it saves its state and submits nothing more),
then asks the running trials to checkpoint (``SIGUSR2``: each saves and requeues itself)
and cancels them: the same command resumes the sweep from their checkpoints.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detflow._core.detached import DRIVER_LOG, DriverRecord
from detflow._core.errors import NotResultsError
from detflow._results.reader import SweepDir, load

__all__ = ["SlurmJob", "SweepStatus", "cancel_sweep", "sweep_status"]

#: Where trial jobs keep their scripts when the sweep has no driver record (the launcher's
#: default ``hydra.launcher.submitit_folder``, ``.detflow/slurm/%j``).
DEFAULT_TRIALS_UNDER = ".detflow/slurm"
_SLURM_TIMEOUT_S = 30
_TRIAL_LINE = re.compile(r"trial (\d+): Slurm job (\S+?),")

#: Runs a Slurm command and returns its stdout ("" when it fails); tests pass their own.
SlurmCommand = Callable[[Sequence[str]], str]


def run_slurm(args: Sequence[str]) -> str:
    """Slurm's answer to ``args`` (stdout), or ``""`` when the command fails or is missing."""
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=_SLURM_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


@dataclass(frozen=True)
class SlurmJob:
    """One Slurm job as ``squeue`` (or ``sacct``) shows it; ``trial_id`` when known."""

    job_id: str
    state: str
    nodes: str
    elapsed: str
    trial_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "nodes": self.nodes,
            "elapsed": self.elapsed,
            "trial_id": self.trial_id,
        }


@dataclass
class SweepStatus:
    """What ``detflow status`` shows: trial ids by status, the running trial jobs and the
    detached driver (``None`` for a sweep driven from a terminal).

    >>> print("\\n".join(SweepStatus(Path("s"), {"COMPLETED": [0, 1], "RUNNING": [2]}).lines()))
    sweep s
    driver: none recorded (not detached: it runs, or ran, in a terminal)
    trials: 3 (2 completed, 1 running)
      completed: 0 1
      running: 2
    trial jobs queued or running: 0
    """

    sweep_dir: Path
    trials: dict[str, list[int]] = field(default_factory=dict)
    jobs: list[SlurmJob] = field(default_factory=list)
    driver: SlurmJob | None = None
    driver_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sweep_dir": str(self.sweep_dir),
            "trials": {status: ids for status, ids in self.trials.items()},
            "jobs": [job.to_json() for job in self.jobs],
            "driver": None
            if self.driver is None
            else {**self.driver.to_json(), "job_name": self.driver_name},
        }

    def lines(self) -> list[str]:
        """The text ``detflow status`` prints."""
        out = [f"sweep {self.sweep_dir}"]
        if self.driver is None:
            out.append("driver: none recorded (not detached: it runs, or ran, in a terminal)")
        else:
            where = f" on {self.driver.nodes}" if self.driver.nodes else ""
            out.append(
                f"driver: Slurm job {self.driver.job_id} ({self.driver_name}) "
                f"{self.driver.state}{where}"
            )
        total = sum(len(ids) for ids in self.trials.values())
        counts = ", ".join(f"{len(ids)} {status.lower()}" for status, ids in self.trials.items())
        out.append(f"trials: {total}" + (f" ({counts})" if counts else ""))
        for status, ids in self.trials.items():
            out.append(f"  {status.lower()}: {' '.join(str(i) for i in ids)}")
        out.append(f"trial jobs queued or running: {len(self.jobs)}")
        for job in self.jobs:
            trial = "?" if job.trial_id is None else str(job.trial_id)
            out.append(
                f"  job {job.job_id}  trial {trial}  {job.state}  {job.nodes or '-'}  {job.elapsed}"
            )
        return out


def _trials(sweep_dir: Path, record: DriverRecord | None) -> dict[str, list[int]]:
    """Trial ids by status; none yet in a detached sweep whose driver has not started
    (its directory holds only the driver's record), else a :class:`NotResultsError` for a
    directory that is not a sweep's."""
    try:
        found = load(sweep_dir)
    except NotResultsError:
        if record is None:
            raise
        return {}
    if not isinstance(found, SweepDir):
        raise NotResultsError(f"{sweep_dir} is a run directory: give a sweep directory")
    return _trials_by_status(found)


def _trials_by_status(sweep: SweepDir) -> dict[str, list[int]]:
    by: dict[str, list[int]] = {}
    for trial in sorted(sweep.trials, key=lambda t: t.trial_id):
        by.setdefault(str(trial.status.value).upper(), []).append(trial.trial_id)
    return by


def _trial_of_jobs(sweep_dir: Path) -> dict[str, int]:
    """Job id -> trial id, from the driver's log lines (``trial 3: Slurm job 812, log ...``)."""
    try:
        text = (sweep_dir / DRIVER_LOG).read_text(errors="replace")
    except OSError:
        return {}
    return {job: int(trial) for trial, job in _TRIAL_LINE.findall(text)}


def trial_jobs(sweep_dir: Path, slurm: SlurmCommand = run_slurm) -> list[SlurmJob]:
    """The sweep's trial jobs that ``squeue`` lists (pending, running, requeued)."""
    record = DriverRecord.read(sweep_dir)
    under = Path(record.trials_under) if record else sweep_dir.absolute() / DEFAULT_TRIALS_UNDER
    prefix = f"{under}/"
    trials = _trial_of_jobs(sweep_dir)
    jobs = []
    for line in slurm(["squeue", "-h", "-o", "%i|%T|%N|%M|%o"]).splitlines():
        parts = line.split("|", 4)
        if len(parts) == 5 and parts[4].startswith(prefix):
            job_id = parts[0].strip()
            jobs.append(SlurmJob(job_id, parts[1], parts[2], parts[3], trials.get(job_id)))
    return jobs


def _three(answer: str) -> tuple[str, str, str]:
    """The first three ``|``-separated fields of the first line (missing ones empty)."""
    fields = [*answer.splitlines()[0].split("|"), "", ""]
    return fields[0], fields[1], fields[2]


def driver_job(record: DriverRecord, slurm: SlurmCommand = run_slurm) -> SlurmJob:
    """The driver job's state: ``squeue``'s while Slurm holds it, then ``sacct``'s."""
    queued = slurm(["squeue", "-h", "-j", record.job_id, "-o", "%T|%N|%M"]).strip()
    if queued:
        state, nodes, elapsed = _three(queued)
        return SlurmJob(record.job_id, state, nodes, elapsed)
    accounted = slurm(
        ["sacct", "-n", "-X", "-P", "-j", record.job_id, "-o", "State,NodeList,Elapsed"]
    ).strip()
    if accounted:
        state, nodes, elapsed = _three(accounted)
        return SlurmJob(record.job_id, state.split(" ")[0], nodes, elapsed)
    return SlurmJob(record.job_id, "UNKNOWN", "", "")


def sweep_status(sweep_dir: Path, slurm: SlurmCommand = run_slurm) -> SweepStatus:
    """The status of the sweep in ``sweep_dir`` (a :class:`NotResultsError` if it is not one)."""
    record = DriverRecord.read(sweep_dir)
    return SweepStatus(
        sweep_dir=sweep_dir,
        trials=_trials(sweep_dir, record),
        jobs=trial_jobs(sweep_dir, slurm),
        driver=driver_job(record, slurm) if record else None,
        driver_name=record.job_name if record else None,
    )


@dataclass
class CancelReport:
    """What ``detflow cancel`` did: the driver job stopped (if any), the trial jobs asked to
    checkpoint and cancelled, and the command that resumes the sweep."""

    driver: str | None
    checkpointed: list[str]
    cancelled: list[str]
    resume: str | None

    def lines(self) -> list[str]:
        out = []
        if self.driver is not None:
            out.append(f"driver job {self.driver} stopped (its state is saved)")
        else:
            out.append("no detached driver running (a sweep run in a terminal: Ctrl-C stops it)")
        if self.checkpointed:
            out.append(f"trial jobs asked to checkpoint: {' '.join(self.checkpointed)}")
        out.append(
            f"trial jobs cancelled: {' '.join(self.cancelled)}"
            if self.cancelled
            else "no trial jobs were queued or running"
        )
        if self.resume:
            out.append(f"to resume: {self.resume}")
        return out


def _wait(condition: Callable[[], bool], seconds: float, poll: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True


def cancel_sweep(
    sweep_dir: Path,
    *,
    slurm: SlurmCommand = run_slurm,
    driver_wait_s: float = 30,
    checkpoint_wait_s: float = 60,
) -> CancelReport:
    """Stop the sweep in ``sweep_dir``: driver first, then its trials (see the module)."""
    record = DriverRecord.read(sweep_dir)
    _trials(sweep_dir, record)  # a NotResultsError if it is not a sweep directory
    stopped = None
    if record is not None and driver_job(record, slurm).state in ("RUNNING", "PENDING"):

        def driver_gone() -> bool:
            return not slurm(["squeue", "-h", "-j", record.job_id, "-o", "%T"]).strip()

        slurm(["scancel", "--batch", "--signal=INT", record.job_id])
        if not _wait(driver_gone, driver_wait_s):
            slurm(["scancel", record.job_id])
            _wait(driver_gone, driver_wait_s)
        stopped = record.job_id
    jobs = trial_jobs(sweep_dir, slurm)
    running = [job.job_id for job in jobs if job.state == "RUNNING"]
    if running:
        slurm(["scancel", "--signal=USR2", *running])

        def none_running() -> bool:
            return not any(job.state == "RUNNING" for job in trial_jobs(sweep_dir, slurm))

        _wait(none_running, checkpoint_wait_s)
    cancelled = [job.job_id for job in trial_jobs(sweep_dir, slurm)]
    if cancelled:
        slurm(["scancel", *cancelled])
        _wait(lambda: not trial_jobs(sweep_dir, slurm), driver_wait_s)  # COMPLETING, then gone
    resume = None
    if record is not None:
        resume = f"cd {shlex.quote(record.cwd)} && {shlex.join(record.command)}"
    return CancelReport(stopped, running, cancelled, resume)
