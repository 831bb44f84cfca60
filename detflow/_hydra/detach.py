"""``hydra.sweeper.detach=true``: the sweep's driver runs as a small Slurm job of its own.

The same command, with ``hydra.sweeper.detach=true``, submits the driver (1 CPU, little
memory, its own time limit, ``--requeue``; job name ``detflow-sweep-NAME``) and returns in
seconds, printing the sweep directory and the driver's job id. The driver job runs the same
command again, in the same directory, with the sweep directory fixed: a requeued or
resubmitted driver resumes the search from its state (as rerunning the command does). Before
it resumes, it waits for the trial jobs a previous run of it left running: they finish and
are recorded from their results, never run twice.

Follow it with ``detflow status DIR``, stop it with ``detflow cancel DIR``
(:mod:`detflow._results.status`).
"""

# No `from __future__ import annotations`: OmegaConf reads DriverSettings' annotations.
import logging
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detflow._core.detached import DRIVER_ENV, DRIVER_LOG, DriverRecord
from detflow._core.errors import ConfigError

__all__ = [
    "DRIVER_TIME_MINUTES",
    "Detached",
    "DriverSettings",
    "before_search",
    "detach_requested",
    "in_driver_job",
    "long_sweep_hint",
    "submit_driver",
    "wait_for_left_trials",
]

log = logging.getLogger("detflow.sweep")

#: The driver job's time limit by default (minutes): a day; a longer sweep sets
#: ``hydra.sweeper.driver.time`` (a requeued driver resumes, so a limit loses nothing but time).
DRIVER_TIME_MINUTES = 24 * 60
_MAX_TIME_MINUTES = 365 * 24 * 60
_SBATCH_TIMEOUT_S = 60
_LEFT_POLL_S = 2.0


@dataclass
class DriverSettings:
    """``hydra.sweeper.driver.*``: the driver job's own Slurm request.

    ``partition``, ``account`` and ``qos`` left unset take the launcher's
    (``hydra.launcher.*``); ``time`` is in minutes; ``mem`` as sbatch reads it (``1G``).

    >>> DriverSettings(time=30).time
    30
    >>> try:
    ...     DriverSettings(time=0)
    ... except ConfigError as exc:
    ...     print(exc.key)
    hydra.sweeper.driver.time
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int = DRIVER_TIME_MINUTES
    mem: str = "1G"

    def __post_init__(self) -> None:
        if (
            isinstance(self.time, bool)
            or not isinstance(self.time, int)
            or not 1 <= self.time <= _MAX_TIME_MINUTES
        ):
            raise ConfigError(
                "hydra.sweeper.driver.time",
                self.time,
                f"a positive integer of minutes, at most {_MAX_TIME_MINUTES} (365 days)",
            )
        for name in ("partition", "account", "qos", "mem"):
            value = getattr(self, name)
            if value is None and name != "mem":
                continue
            if not isinstance(value, str) or not value or not value.isprintable():
                raise ConfigError(
                    f"hydra.sweeper.driver.{name}", value, "a non-empty printable string"
                )


@dataclass(frozen=True)
class Detached:
    """A driver job submitted: where its sweep runs and which Slurm job drives it."""

    sweep_dir: Path
    job_id: str
    job_name: str


def in_driver_job() -> bool:
    """Whether this process is a detached sweep's driver job (it searches, it does not
    detach again)."""
    return bool(os.environ.get(DRIVER_ENV))


def detach_requested(config: DictConfig) -> bool:
    """``hydra.sweeper.detach`` is true and this is not the driver job itself; refused with
    a :class:`ConfigError` when it is not a boolean, or the launcher is not Slurm's."""
    detach = OmegaConf.select(config, "hydra.sweeper.detach", default=False)
    if not isinstance(detach, bool):
        raise ConfigError("hydra.sweeper.detach", detach, "true or false")
    if not detach or in_driver_job():
        return False
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if "slurm" not in target.lower():
        raise ConfigError(
            "hydra.sweeper.detach",
            "true",
            f"false with this launcher ({target or 'none'}): a detached driver is a Slurm job "
            "and needs hydra/launcher=detflow_slurm",
        )
    return True


def driver_settings(config: DictConfig) -> DriverSettings:
    """The checked ``hydra.sweeper.driver`` section (unset entries as the defaults)."""
    section = OmegaConf.select(config, "hydra.sweeper.driver", default=None)
    values: dict[str, Any] = {}
    if section is not None:
        container = OmegaConf.to_container(section, resolve=True)
        if not isinstance(container, dict):
            raise ConfigError("hydra.sweeper.driver", container, "a mapping of driver options")
        values = {str(k): v for k, v in container.items()}
    known = set(DriverSettings.__dataclass_fields__)
    for key in values:
        if key not in known:
            raise ConfigError(
                f"hydra.sweeper.driver.{key}", values[key], f"one of {', '.join(sorted(known))}"
            )
    return DriverSettings(**values)


def job_name(config: DictConfig) -> str:
    """``detflow-sweep-NAME``, NAME being ``hydra.job.name`` (the script's name)."""
    name = str(OmegaConf.select(config, "hydra.job.name", default="sweep"))
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"detflow-sweep-{cleaned}"


def submit_driver(config: DictConfig, sweep_dir: Path, dir_override: str) -> Detached:
    """Submit the driver job of this sweep (the command that is running, with
    ``dir_override`` (``hydra.sweep.dir=...``) added) and record it in the sweep directory.

    A failed ``sbatch`` is a :class:`ConfigError` naming ``hydra.sweeper.driver`` with
    Slurm's own words.
    """
    settings = driver_settings(config)
    sweep_dir = sweep_dir.absolute()
    previous = DriverRecord.read(sweep_dir)
    if previous is not None and _queued(previous.job_id):
        raise ConfigError(
            "hydra.sweep.dir",
            str(sweep_dir),
            f"a sweep directory no other driver runs in (Slurm job {previous.job_id} drives "
            f"this one; detflow cancel {shlex.quote(str(sweep_dir))} stops it)",
        )
    record_dir = sweep_dir / Path(DRIVER_LOG).parent
    record_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, *sys.argv, dir_override]
    cwd = os.getcwd()
    script = record_dir / "driver.sh"
    script.write_text(_script(sweep_dir, cwd, command))
    name = job_name(config)
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={name}",
        f"--output={sweep_dir / DRIVER_LOG}",
        "--open-mode=append",
        "--requeue",
        "--nodes=1",
        "--ntasks=1",
        "--cpus-per-task=1",
        f"--mem={settings.mem}",
        f"--time={settings.time}",
        f"--chdir={cwd}",
    ]
    for key in ("partition", "account", "qos"):
        value = getattr(settings, key) or OmegaConf.select(
            config, f"hydra.launcher.{key}", default=None
        )
        if value:
            args.append(f"--{key}={value}")
    args.append(str(script))
    done = subprocess.run(args, capture_output=True, text=True, timeout=_SBATCH_TIMEOUT_S)
    if done.returncode != 0:
        words = (done.stderr.strip() or done.stdout.strip() or f"rc={done.returncode}").splitlines()
        raise ConfigError(
            "hydra.sweeper.driver",
            " ".join(a for a in args[2:-1] if not a.startswith(("--output", "--chdir"))),
            f"a request Slurm accepts ({words[-1]})",
        )
    job_id = done.stdout.strip().split(";")[0]
    DriverRecord(
        job_id=job_id,
        job_name=name,
        command=command,
        cwd=cwd,
        trials_under=str(trials_under(config, sweep_dir)),
    ).write(sweep_dir)
    return Detached(sweep_dir, job_id, name)


def _queued(job_id: str) -> bool:
    """Whether Slurm job ``job_id`` is still pending or running (``squeue`` lists it)."""
    done = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60
    )
    return done.returncode == 0 and bool(done.stdout.strip())


def trials_under(config: DictConfig, sweep_dir: Path) -> Path:
    """Where the sweep's trial jobs keep their sbatch scripts: the part of
    ``hydra.launcher.submitit_folder`` (under the sweep directory) before its first ``%``."""
    folder = Path(str(OmegaConf.select(config, "hydra.launcher.submitit_folder", default="")))
    parts = []
    for part in folder.parts:
        if "%" in part:
            break
        parts.append(part)
    return sweep_dir.absolute() / Path(*parts)


def _script(sweep_dir: Path, cwd: str, command: list[str]) -> str:
    """The driver job's batch script: the environment variable that makes it the driver,
    the submitting directory, one line per (re)start in the log, then the command."""
    quoted = " ".join(shlex.quote(word) for word in command)
    return (
        "#!/bin/sh\n"
        f"# detflow: the driver of the detached sweep in {sweep_dir} "
        "(hydra.sweeper.detach=true)\n"
        f"export {DRIVER_ENV}={shlex.quote(str(sweep_dir))}\n"
        f"cd {shlex.quote(cwd)} || exit 1\n"
        'echo "detflow driver: Slurm job $SLURM_JOB_ID, start ${SLURM_RESTART_COUNT:-0}, '
        'on $(hostname), $(date -u +%FT%TZ)"\n'
        f"exec {quoted}\n"
    )


def left_trial_jobs(under: Path) -> list[str]:
    """Slurm jobs (ids) still queued or running whose batch script lies under ``under``:
    the sweep's trial jobs, as ``squeue`` shows them."""
    done = subprocess.run(
        ["squeue", "-h", "-o", "%i|%o"], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        return []
    prefix = f"{under}{os.sep}"
    jobs = []
    for line in done.stdout.splitlines():
        job_id, _, script = line.partition("|")
        if script.startswith(prefix):
            jobs.append(job_id.strip())
    return jobs


def wait_for_left_trials(config: DictConfig, sweep_dir: Path) -> None:
    """In a driver job: wait until the trial jobs an earlier run of the driver left (it was
    requeued, or killed and resubmitted) have ended. The resumed search then records them
    from their results (nothing runs twice) and restarts from a checkpoint what died."""
    under = trials_under(config, sweep_dir)
    left = left_trial_jobs(under)
    if not left:
        return
    log.info(
        "waiting for %d trial job(s) of the previous driver (%s) to end before resuming",
        len(left),
        " ".join(left),
    )
    while left:
        time.sleep(_LEFT_POLL_S)
        left = left_trial_jobs(under)


def before_search(
    config: DictConfig, sweep_dir: Path, n_trials: int, at_once: int, dir_override: str
) -> Detached | None:
    """The sweeper's hook before the search starts: with ``hydra.sweeper.detach=true``
    submit the driver job, print where and which, and return it (this process is done); in
    the driver job, wait for trials a previous driver left running; else print
    :func:`long_sweep_hint` when there is one. Errors are :class:`ConfigError`."""
    if detach_requested(config):
        detached = submit_driver(config, sweep_dir, dir_override)
        where = shlex.quote(str(detached.sweep_dir))
        print(
            f"detached: the sweep runs in {detached.sweep_dir}, driven by Slurm job "
            f"{detached.job_id} ({detached.job_name})\n"
            f"follow it with: detflow status {where}\n"
            f"stop it with:   detflow cancel {where}  (its state is kept: the same command "
            "resumes it)",
            flush=True,
        )
        return detached
    if in_driver_job():
        wait_for_left_trials(config, sweep_dir)
        return None
    hint = long_sweep_hint(config, n_trials, at_once)
    if hint is not None:
        log.info("%s", hint)
    return None


def long_sweep_hint(config: DictConfig, n_trials: int, at_once: int) -> str | None:
    """The line a sweep prints when its driver will wait in this terminal for long: on
    Slurm, more trials than run at once. ``None`` otherwise (and in a driver job)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    if in_driver_job() or "slurm" not in target.lower() or n_trials <= at_once:
        return None
    return (
        f"this sweep runs {n_trials} trials, {at_once} at once, and its driver waits in this "
        "terminal until the last ends: to let it run on the cluster instead (the terminal may "
        "close), run the same command with hydra.sweeper.detach=true"
    )
