"""``hydra/launcher=detflow_slurm``: trials as Slurm jobs, through submitit.

Jobs that start together and ask for the same resources go out as one job array. On
``SIGUSR2`` (Slurm's warning before a time limit or a pre-emption) the trial checkpoints
at its next optimizer step, the job requeues itself and resumes with exact counters.
A job that ends without a result (a signal, the memory limit, a node failure) is reported at
once as such: the sweep restarts the trial from its last checkpoint (``max_restarts``); a
cancelled one fails. A ``SIGUSR2`` that comes while the job is still starting waits for the
stop handler (:data:`BLOCKED_START`).
A sweep stopped by Ctrl-C leaves its running jobs running (:meth:`SlurmTrials.left_running`)
and submits nothing more.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from submitit.slurm.slurm import _make_sbatch_string  # the script submitit submits

from detflow._core.errors import ConfigError
from detflow._harness import preemption
from detflow._launch.base import TrialProcesses, private_directory, script_directory
from detflow._launch.slurm_settings import SlurmSettings, check_line
from detflow._launch.worker import job_return, run_job_outcome, write_shared_payload
from detflow._search.driver import TrialOutcome

__all__ = ["BLOCKED_START", "SHELL_START", "SlurmSettings", "SlurmTrials", "job_python"]

log = logging.getLogger("detflow.slurm")

_POLL_SECONDS = 0.2
_REQUEUE_WAIT_SECONDS = 300
_SACCT_EVERY_SECONDS = 4.0
# Final states; PREEMPTED is not one (with requeue it is followed by PENDING).
_DEAD_STATES = (
    "CANCELLED",
    "FAILED",
    "NODE_FAIL",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "COMPLETED",
)
#: Final states a job without a result is not restarted from (``max_restarts``): someone
#: cancelled it, or its process ended by itself.
_NOT_RESTARTED = ("CANCELLED", "COMPLETED")


#: How a job's task starts: a shell that ignores ``SIGUSR2`` (from its first millisecond:
#: Slurm's default action would end the task) and execs Python, which runs
#: :data:`BLOCKED_START` first. A ``SIGUSR2`` that comes while the task is still starting
#: (importing, unpickling: a second or more) then waits, pending, until detflow's stop handler
#: is installed and unblocks it (:func:`detflow._harness.preemption.install_stop_handler`):
#: the trial checkpoints at its first step and the job requeues, as for any pre-emption. One
#: that comes in the first few milliseconds, before Python blocked it, is ignored.
SHELL_START = 'trap "" USR2; exec "$0" "$@"'
#: Python's first code in the job (``python -S``: no site, a few milliseconds): block
#: ``SIGUSR2`` (blocked, a signal is kept pending, even while it is ignored), then exec the
#: job's own Python in this same process.
BLOCKED_START = (
    "import os,signal,sys;signal.pthread_sigmask(signal.SIG_BLOCK,{signal.SIGUSR2});"
    "os.execv(sys.executable,[sys.executable,*sys.argv[1:]])"
)


def job_python(python: str | None) -> str:
    """The command submitit starts a job's Python with: ``python`` (``hydra.launcher.python``,
    quoted already; this interpreter's by default) behind :data:`SHELL_START` and running
    :data:`BLOCKED_START` first.

    >>> print(job_python("/opt/py/bin/python"))  # doctest: +ELLIPSIS
    /bin/sh -c 'trap "" USR2; exec "$0" "$@"' /opt/py/bin/python -S -c 'import os,...'
    """
    python = python or shlex.quote(sys.executable)
    return f"/bin/sh -c {shlex.quote(SHELL_START)} {python} -S -c {shlex.quote(BLOCKED_START)}"


@dataclass
class _Job:
    trial_id: int
    overrides: list[str]
    config: DictConfig
    dir: Path
    parameters: dict[str, Any]
    submitted: Any = None  # submitit.Job
    result_path: Path | None = None  # rank 0's result file, once submitted


class TrialJob:
    """The callable submitit runs on the cluster: one Hydra job, requeued on pre-emption."""

    def __init__(self, shared: Path, config: DictConfig, max_requeues: int) -> None:
        self.shared = shared
        self.config = config
        self.max_requeues = max_requeues

    def __call__(self) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per slot: torch.distributed from Slurm's environment
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        outcome = run_job_outcome(self.shared, self.config)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if preemption.stopped() and restarts < self.max_requeues:
            if env.global_rank == 0:
                log.info(
                    "checkpoint saved; requeueing job %s (restart %d)", env.job_id, restarts + 1
                )
                subprocess.check_call(["scontrol", "requeue", env.job_id], timeout=60)
            else:  # the requeue (or rank 0's exit, with --kill-on-bad-exit) ends this task
                time.sleep(_REQUEUE_WAIT_SECONDS)
            sys.exit(-1)  # no result file: the job is not over, it will run again
        if preemption.stopped():
            outcome.update(
                status="FAILED",
                error=f"pre-empted {restarts} times: requeue "
                f"limit hydra.launcher.max_requeues={self.max_requeues} reached",
            )
        return outcome


class SlurmTrials(TrialProcesses["_Job"]):
    """Submits Hydra jobs to Slurm; blocking ``launch()`` and non-blocking ``start``/``wait``."""

    poll_seconds = _POLL_SECONDS

    def __init__(self, settings: SlurmSettings) -> None:
        super().__init__()
        self.settings = settings
        self.dry_run = settings.dry_run
        self.queued: list[_Job] = []
        self.running: dict[int, _Job] = {}
        self._shared: Path | None = None
        self._last_sacct = 0.0

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # Checked before anything is composed or submitted: what goes into sbatch lines.
        check_line("hydra.job.name", str(config.hydra.job.name))
        check_line("hydra.sweep.dir", str(self._folder()))

    # -- the sweeper's interface -------------------------------------------------------------
    def start(self, trial_id: int, overrides: list[str]) -> None:
        """Queue the job; queued jobs go out together (as arrays) at the next :meth:`wait`."""
        self.queued.append(self._compose(trial_id, overrides))

    def _flush(self) -> None:
        if not self._stop_requested:  # the sweep stopped: queued jobs are not submitted
            with _sigint_held():
                self._submit_queued()

    def _poll(self) -> list[_Job]:
        with _sigint_held():
            return self._ended()

    def _busy(self) -> bool:
        if self._stop_requested:  # running jobs are left to run: waiting is over
            return False
        return bool(self.running or self.queued)

    def request_stop(self) -> str | None:
        """Submit nothing more and stop waiting: the running jobs go on (no signal to them)."""
        self._stop_requested = True
        return "stopping: nothing more is submitted; the running Slurm jobs go on"

    def left_running(self) -> list[str]:
        """The Slurm jobs of the trials still running: a stopped sweep leaves them be."""
        return [str(job.submitted.job_id) for job in self.running.values()]

    def sbatch_scripts(self, jobs: Sequence[tuple[int, list[str]]]) -> list[str]:
        """The sbatch script(s) these jobs would be submitted with (one per array)."""
        composed = [self._compose(trial_id, overrides) for trial_id, overrides in jobs]
        scripts = []
        for group in _groups(composed):
            executor = self._executor(group[0].parameters)
            text = _make_sbatch_string(
                command=executor._submitit_command_str,
                folder=executor.folder,
                job_name=executor.parameters.get("job_name", "submitit"),
                map_count=len(group) if len(group) > 1 else None,
                **{k: v for k, v in executor.parameters.items() if k != "job_name"},
            )
            scripts.append(text)
        return scripts

    # -- Hydra's blocking interface ------------------------------------------------------------
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> list[JobReturn]:
        """Submit every job (arrays where resources agree) and wait for all of them."""
        ids = [initial_job_idx + i for i in range(len(job_overrides))]
        if self.dry_run:
            for script in self.sbatch_scripts(
                list(zip(ids, map(list, job_overrides), strict=True))
            ):
                print(script)
            return []
        return super().launch(job_overrides, initial_job_idx)

    # -- internals -------------------------------------------------------------------------------
    def _compose(self, trial_id: int, overrides: list[str]) -> _Job:
        config, job_dir = self.compose(trial_id, overrides)
        slots = int(OmegaConf.select(config, "resources.slots_per_trial", default=1) or 1)
        params = self.settings.parameters(slots)
        params["job_name"] = str(config.hydra.job.name)
        check_line("hydra.job.name", params["job_name"])  # a trial's own override
        # The job imports the task's modules as this process did: same script directory.
        params["setup"] = [
            f"export PYTHONPATH={shlex.quote(script_directory())}${{PYTHONPATH:+:$PYTHONPATH}}",
            *params["setup"],
        ]
        return _Job(trial_id, list(overrides), config, job_dir, params)

    def _sweep_dir(self) -> Path:
        assert self.config is not None
        return Path(str(self.config.hydra.sweep.dir)).absolute()

    def _folder(self) -> Path:
        """submitit's folder (``%j``: the job id); its path goes into ``#SBATCH`` lines."""
        return self._sweep_dir() / self.settings.submitit_folder

    def _executor(self, parameters: dict[str, Any]) -> submitit.SlurmExecutor:
        folder = self._folder()
        check_line("hydra.sweep.dir", str(folder))
        executor = submitit.SlurmExecutor(
            folder=folder, python=job_python(self.settings.python), max_num_timeout=0
        )
        executor.update_parameters(**parameters)
        return executor

    def _submit_queued(self) -> None:
        if not self.queued:
            return
        if self._shared is None:
            # Jobs unpickle what is written here and in submitit's folder: owner only (0700).
            private = self.private_dir()
            static = _static_prefix(self._folder())
            if private not in (static, *static.parents):  # a submitit_folder elsewhere
                private_directory(static)
            self._shared = write_shared_payload(private, self.hydra_context, self.task_function)
        queued, self.queued = self.queued, []
        for group in _groups(queued):
            executor = self._executor(group[0].parameters)
            with executor.batch():
                for job in group:
                    job.dir.mkdir(parents=True, exist_ok=True)
                    job.submitted = executor.submit(
                        TrialJob(self._shared, job.config, self.settings.max_requeues)
                    )
            for job in group:
                job.result_path = _rank0(job).paths.result_pickle
                self.running[job.trial_id] = job
                log.info(
                    "trial %d: Slurm job %s, log %s",
                    job.trial_id,
                    job.submitted.job_id,
                    _rank0(job).paths.stdout,
                )

    def _ended(self) -> list[_Job]:
        now = time.monotonic()
        force = now - self._last_sacct >= _SACCT_EVERY_SECONDS
        if force and self.running:
            self._last_sacct = now
            next(iter(self.running.values())).submitted.done(force_check=True)  # one sacct call
        ended = []
        for trial_id, job in list(self.running.items()):
            if (job.result_path is not None and job.result_path.exists()) or self._dead(job):
                del self.running[trial_id]
                ended.append(job)
        return ended

    def _dead(self, job: _Job) -> bool:
        state = str(job.submitted.watcher.get_state(job.submitted.job_id, mode="cache"))
        return state.upper().split(" ")[0] in _DEAD_STATES

    def _result(self, job: _Job) -> dict[str, Any]:
        pickle_path = _rank0(job).paths.result_pickle
        for _ in range(25):  # a finished job's result file may take a moment to appear
            if pickle_path.exists():
                break
            time.sleep(0.2)
        if not pickle_path.exists():
            state = job.submitted.watcher.get_state(job.submitted.job_id, mode="force")
            ended = f"Slurm job {job.submitted.job_id} ended {state}"
            # Without a result: a signal (one that came while the job started), the memory
            # limit, a lost node, the time limit. A restart may cure those; not a job someone
            # cancelled, nor one whose process exited by itself (COMPLETED).
            final = str(state).upper().split(" ")[0] in _NOT_RESTARTED
            return {
                "status": "FAILED",
                "value": None,
                "error": f"{ended} without a result",
                "lost": None if final else ended,
            }
        try:
            outcome = _rank0(job).result()
        except Exception as exc:  # submitit's own failure (e.g. the callable could not load)
            error = _last_error_line(_rank0(job).paths.stderr) or type(exc).__name__
            return {"status": "FAILED", "value": None, "error": error}
        assert isinstance(outcome, dict)
        return outcome

    def _outcome(self, job: _Job) -> TrialOutcome:
        result = self._result(job)
        return TrialOutcome(
            job.trial_id,
            result.get("error"),
            str(_rank0(job).paths.stdout),
            lost=result.get("lost"),
            raised_at=result.get("raised_at"),
        )

    def _job_return(self, job: _Job) -> JobReturn:
        return job_return(self._result(job), job.overrides, job.config, job.dir)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """``SIGINT`` held back while ``sbatch`` / ``sacct`` run: Ctrl-C reaches the terminal's
    whole process group, and must not kill a submission half done. The children inherit the
    blocked signal (and drop it); this process takes it, and its handler, once they are done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _static_prefix(folder: Path) -> Path:
    """The part of submitit's folder before its first ``%`` pattern (``%j``)."""
    parts = []
    for part in folder.parts:
        if "%" in part:
            break
        parts.append(part)
    return Path(*parts)


def _rank0(job: _Job) -> Any:
    """The submitit job of the trial's first task (rank 0): the one that reports."""
    return job.submitted.task(0) if job.submitted.num_tasks > 1 else job.submitted


def _last_error_line(path: Path) -> str | None:
    """The exception line at the end of a job's stderr (Slurm's own lines skipped)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        text = line.strip()
        if text and not text.startswith(("srun:", "slurmstepd:", "submitit ")):
            return text
    return None


def _groups(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs with equal Slurm parameters, in order: each group is one job array."""
    groups: dict[str, list[_Job]] = {}
    for job in jobs:
        groups.setdefault(repr(sorted(job.parameters.items())), []).append(job)
    return list(groups.values())


def settings_from(values: dict[str, Any]) -> SlurmSettings:
    """:class:`SlurmSettings` from the plugin's keyword arguments (Hydra's containers to plain)."""
    known = {f.name for f in dataclasses.fields(SlurmSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"hydra.launcher.{unknown[0]}",
            values[unknown[0]],
            f"one of the launcher's keys: {', '.join(sorted(known))}",
        )
    cleaned = dict(values)
    for key in ("setup", "srun_args"):
        if cleaned.get(key) is not None:
            cleaned[key] = [str(x) for x in cleaned[key]]
    if cleaned.get("additional_parameters") is not None:
        cleaned["additional_parameters"] = dict(cleaned["additional_parameters"])
    return SlurmSettings(**cleaned)
