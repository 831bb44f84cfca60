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

Each job composes its own config on its node: the sweep's master config goes once into the
sweep's launch file (:func:`~detflow._launch.worker.write_shared_payload`), a job carries
only its overrides (:func:`~detflow._launch.worker.compose_job`). The driver composes a job
itself only when the job's own overrides change what goes into its sbatch script (its slots,
job name or directory, or a config group). A trial's end is read from its result file;
Slurm's queue is asked at a bounded rate, one call for all jobs
(:mod:`detflow._launch.slurm_queue`), for what a file cannot tell: a job that died without a
result, one that can never start (failed at once with Slurm's reason), one whose node failed
(its restart excludes that node, as Determined's ``exclude_node`` log policy does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
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
from detflow._launch import slurm_queue as queue
from detflow._launch.base import (
    TrialProcesses,
    private_directory,
    script_directory,
    slots_per_trial,
)
from detflow._launch.slurm_settings import SlurmSettings, check_line
from detflow._launch.worker import (
    compose_job,
    job_return,
    load_shared,
    run_job_outcome,
    write_shared_payload,
)
from detflow._search.driver import TrialOutcome

__all__ = ["BLOCKED_START", "SHELL_START", "SlurmSettings", "SlurmTrials", "job_python"]

log = logging.getLogger("detflow.slurm")

_POLL_SECONDS = 0.2
_REQUEUE_WAIT_SECONDS = 300
#: Final states a job without a result is not restarted from (``max_restarts``): someone
#: cancelled it, or its process ended by itself.
_NOT_RESTARTED = ("CANCELLED", "COMPLETED")
#: Final states that blame the job's node: its restart excludes that node.
_NODE_STATES = ("NODE_FAIL", "BOOT_FAIL")
#: Keys of a job's own overrides that change its sbatch script (slots, name, directory):
#: with one of them (or a config group) the driver composes the job's config itself.
_DRIVER_KEYS = ("resources.slots_per_trial", "hydra.job.name", "hydra.sweep.dir")
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.-]+")
#: A job's subdirectory as Hydra's default writes it (then it is the job's number).
_JOB_NUM_SUBDIR = "${hydra.job.num}"
#: Queue rounds a job may be missing from both ``squeue`` and ``sacct`` before it is lost.
_GONE_ROUNDS = 4
#: How long a submission may retry while slurmctld does not answer (restarting, busy).
_SUBMIT_RETRY_S = 90.0
_SLURM_TIMEOUT_S = 60


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
    dir: Path
    parameters: dict[str, Any]
    #: composed in the driver only where the job's overrides change its sbatch script
    config: DictConfig | None = None
    submitted: Any = None  # submitit.Job
    result_path: Path | None = None  # rank 0's result file, once submitted
    log_path: Path | None = None  # rank 0's stderr: Slurm's "*** JOB ... CANCELLED" lands there
    log_size: int = 0
    seen: queue.QueuedJob | None = None  # its last line in squeue
    final: str | None = None  # its final state, once Slurm says it ended ("NODE_FAIL")
    final_nodes: str = ""
    refusal: str | None = None  # why Slurm can never run it: failed at once, not waited on
    gone_rounds: int = 0  # queue rounds it was missing from squeue (and then sacct)

    @property
    def job_id(self) -> str:
        return str(self.submitted.job_id)


class TrialJob:
    """The callable submitit runs on the cluster: one Hydra job, composed on the node from the
    sweep's launch file and the job's overrides (or given its ``config``), requeued on
    pre-emption."""

    def __init__(
        self,
        shared: Path,
        trial_id: int,
        overrides: list[str],
        max_requeues: int,
        config: DictConfig | None = None,
    ) -> None:
        self.shared = shared
        self.trial_id = trial_id
        self.overrides = overrides
        self.max_requeues = max_requeues
        self.config = config

    def __call__(self) -> dict[str, Any]:
        env = submitit.JobEnvironment()
        if env.num_tasks > 1:  # one task per slot: torch.distributed from Slurm's environment
            from submitit.helpers import TorchDistributedEnvironment

            TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        shared = load_shared(self.shared)
        config = self.config
        if config is None:
            config = compose_job(shared, self.trial_id, self.overrides)
        outcome = run_job_outcome(shared, config)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if preemption.stopped() and restarts < self.max_requeues:
            if env.global_rank == 0:
                log.info(
                    "checkpoint saved; requeueing job %s (restart %d)", env.job_id, restarts + 1
                )
                requeue = ["scontrol", "requeue", env.job_id]
                code = subprocess.call(requeue, timeout=60)
                if code > 0:  # refused (a job Slurm may not requeue): this run's failure
                    raise subprocess.CalledProcessError(code, requeue)
                # code < 0: scontrol ended by a signal, as the requeue it asked for ends every
                # process of this job (this one bypasses SIGTERM, submitit's handler): done.
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
        #: the nodes each trial's jobs failed on (NODE_FAIL): its next job excludes them
        self.excluded_nodes: dict[int, list[str]] = {}
        self.clock = queue.PollClock()
        self._shared: Path | None = None
        self._master_overrides: frozenset[str] = frozenset()
        self._max_array_size: int | None = None
        self._partitions: dict[str, dict[str, str]] = {}
        self._cluster_nodes: set[str] | None = None
        self._requeued: set[int] = set()  # trials whose job went from RUNNING back to PENDING
        self._killed = False  # a job's log says Slurm ended it: sacct knows its state at once

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        # Checked before anything is composed or submitted: what goes into sbatch lines.
        check_line("hydra.job.name", str(config.hydra.job.name))
        check_line("hydra.sweep.dir", str(self._folder()))
        self.settings.parameters(
            slots_per_trial(config)
        )  # tasks per node from the slots, or refused
        task = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
        self._master_overrides = frozenset(str(o) for o in task)

    # -- the sweeper's interface -------------------------------------------------------------
    def start(self, trial_id: int, overrides: list[str]) -> None:
        """Queue the job; queued jobs go out together (as arrays) at the next :meth:`wait`."""
        self.queued.append(self._job(trial_id, overrides))

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
        return [job.job_id for job in self.running.values() if job.submitted is not None]

    def sbatch_scripts(self, jobs: Sequence[tuple[int, list[str]]]) -> list[str]:
        """The sbatch script(s) these jobs would be submitted with (one per array)."""
        prepared = [self._job(trial_id, overrides) for trial_id, overrides in jobs]
        scripts = []
        for array in self._arrays(prepared):
            executor = self._executor(array[0].parameters)
            text = _make_sbatch_string(
                command=executor._submitit_command_str,
                folder=executor.folder,
                job_name=executor.parameters.get("job_name", "submitit"),
                map_count=len(array) if len(array) > 1 else None,
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

    # -- a job, before it is submitted ---------------------------------------------------------
    def _job(self, trial_id: int, overrides: list[str]) -> _Job:
        """The job's sbatch parameters and directory: from the master config when its own
        overrides leave them as they are (the node composes its config), else composed here."""
        assert self.config is not None
        config: DictConfig | None = None
        subdir = self._subdir(trial_id, overrides)
        if subdir is not None:
            source: DictConfig = self.config
            job_dir = self._sweep_dir() / subdir
        else:
            config, job_dir = self.compose(trial_id, overrides)
            source = config
        params = self.settings.parameters(slots_per_trial(source))
        params["job_name"] = str(source.hydra.job.name)
        check_line("hydra.job.name", params["job_name"])  # a trial's own override
        # The job imports the task's modules as this process did: same script directory.
        params["setup"] = [
            f"export PYTHONPATH={shlex.quote(script_directory())}${{PYTHONPATH:+:$PYTHONPATH}}",
            *params["setup"],
        ]
        bad = self.excluded_nodes.get(trial_id)
        if bad:  # Determined's exclude_node: not again on a node this trial's job failed on
            given = [n for n in (self.settings.exclude or "").split(",") if n]
            params["exclude"] = ",".join(dict.fromkeys([*given, *bad]))
            check_line("hydra.launcher.exclude", params["exclude"])
            log.info("trial %d: its job excludes node(s) %s", trial_id, params["exclude"])
        return _Job(trial_id, list(overrides), job_dir, params, config)

    def _subdir(self, trial_id: int, overrides: list[str]) -> str | None:
        """The job's subdirectory when the master config's sbatch parameters hold for it
        (None: the job's own overrides may change them, compose it here)."""
        assert self.config is not None and self.hydra_context is not None
        repository = getattr(self.hydra_context.config_loader, "repository", None)

        def _group(name: str) -> bool:
            return repository is None or bool(repository.group_exists(name))

        subdir = None
        for override in overrides:
            if override in self._master_overrides:  # in the master config already
                continue
            key, _, value = override.partition("=")
            bare = key.lstrip("~+").split("@")[0]
            if bare == "hydra.sweep.subdir" and _PLAIN_VALUE.fullmatch(value):
                subdir = value
                continue
            if any(
                bare == k or k.startswith(f"{bare}.") or bare.startswith(f"{k}.")
                for k in (*_DRIVER_KEYS, "hydra.sweep.subdir")
            ):
                return None
            if "." not in bare and ("/" in bare or _group(bare)):
                return None  # a config group: anything may change
        if subdir is None:
            sweep = OmegaConf.to_container(self.config.hydra.sweep, resolve=False)
            if not isinstance(sweep, dict) or sweep.get("subdir") != _JOB_NUM_SUBDIR:
                return None
            subdir = str(trial_id)
        return subdir

    def _arrays(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Jobs with equal Slurm parameters, in order, each group cut to the cluster's
        ``MaxArraySize``: each list is one job array (or one job)."""
        arrays = []
        for group in _groups(jobs):
            size = self._array_size() if len(group) > 1 else 1
            arrays += [group[i : i + size] for i in range(0, len(group), size)]
        return arrays

    def _array_size(self) -> int:
        """The cluster's ``MaxArraySize``, read once (``scontrol show config``)."""
        if self._max_array_size is None:
            self._max_array_size = queue.max_array_size(self._slurm(["scontrol", "show", "config"]))
        return self._max_array_size

    # -- submission ----------------------------------------------------------------------------
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
            self._shared = write_shared_payload(
                private, self.hydra_context, self.task_function, master_config=self.config
            )
        queued, self.queued = self.queued, []
        for array in self._arrays(queued):
            refusal = self._submit_array(array)
            for job in array:
                self.running[job.trial_id] = job
                if refusal is not None:
                    job.refusal = refusal
                    log.error("trial %d: %s", job.trial_id, refusal)
                    continue
                rank0 = _rank0(job)
                job.result_path = rank0.paths.result_pickle
                job.log_path = rank0.paths.stderr
                log.info(
                    "trial %d: Slurm job %s, log %s", job.trial_id, job.job_id, rank0.paths.stdout
                )
        self.clock.hurry()  # a job that can never start says so within a round or two

    def _submit_array(self, array: list[_Job]) -> str | None:
        """Submit one array (one ``sbatch``); Slurm's refusal, if it refused it. An error that
        a wait may cure (slurmctld restarting) is retried for up to ``_SUBMIT_RETRY_S``."""
        assert self._shared is not None
        executor = self._executor(array[0].parameters)
        deadline = time.monotonic() + _SUBMIT_RETRY_S
        delay = 1.0
        while True:
            try:
                with executor.batch():
                    for job in array:
                        job.dir.mkdir(parents=True, exist_ok=True)
                        job.submitted = executor.submit(
                            TrialJob(
                                self._shared,
                                job.trial_id,
                                job.overrides,
                                self.settings.max_requeues,
                                job.config,
                            )
                        )
                return None
            except submitit.core.utils.FailedJobError as exc:
                for job in array:
                    job.submitted = None  # submitit's placeholder, never promoted to a job
                text = str(exc)
                if not queue.transient_error(text) or time.monotonic() > deadline:
                    asked = queue.asked_text("", array[0].parameters, {})
                    return (
                        f"Slurm refused the job at submission: {queue.sbatch_refusal(text)} "
                        f"(asked: {asked})"
                    )
                log.warning("sbatch: %s; retrying in %.0f s", queue.sbatch_refusal(text), delay)
                time.sleep(delay)
                delay = min(delay * 2, 15.0)

    # -- which jobs ended ----------------------------------------------------------------------
    def _ended(self) -> list[_Job]:
        """Jobs with a result file, and those Slurm says ended (or will never start).

        Result files and logs are read on every call; Slurm's queue only when
        :attr:`clock` says so (one call for all jobs)."""
        for job in self.running.values():
            if job.refusal is None and job.final is None:
                self._read_log(job)
        if self.clock.due() and any(self._watched()):
            self._ask_slurm()
        ended = []
        for trial_id, job in list(self.running.items()):
            has_result = job.result_path is not None and job.result_path.exists()
            if has_result or job.refusal is not None or job.final is not None:
                del self.running[trial_id]
                ended.append(job)
        return ended

    def _watched(self) -> list[_Job]:
        """The submitted jobs Slurm has not said the end of, and without a result file."""
        return [
            job
            for job in self.running.values()
            if job.submitted is not None
            and job.refusal is None
            and job.final is None
            and not (job.result_path is not None and job.result_path.exists())
        ]

    def _read_log(self, job: _Job) -> None:
        """A job's stderr grew: does it say that Slurm ended the job? Then ask Slurm soon."""
        if job.log_path is None:
            return
        try:
            size = job.log_path.stat().st_size
            if size <= job.log_size:
                return
            with open(job.log_path, "rb") as handle:
                handle.seek(max(job.log_size, size - 4096))
                tail = handle.read(size - job.log_size)
        except OSError:
            return
        job.log_size = size
        if queue.killed_in_log(tail):
            self._killed = True
            self.clock.hurry()

    def _ask_slurm(self) -> None:
        """One queue round: ``squeue`` for every watched job; ``sacct`` instead when some
        left the queue without a result, went back to PENDING (requeued: after a node
        failure?), or a log says Slurm killed one (it may leave the queue before squeue
        sees it end)."""
        watched = self._watched()
        ids = {_submission_id(job.job_id) for job in watched}
        if self._killed or self._requeued or any(job.gone_rounds for job in watched):
            self._killed = False
            text = self._slurm(queue.sacct_command(ids))
            changed = text is not None and self._accounted(watched, queue.parse_sacct(text))
        else:
            text = self._slurm(queue.squeue_command(ids), missing_ok=True)
            changed = text is not None and self._queued(watched, queue.parse_squeue(text))
        self.clock.called(changed=changed)

    def _queued(self, watched: list[_Job], lines: dict[str, queue.QueuedJob]) -> bool:
        """Read squeue's lines; whether a job needs looking at again soon (it died, left the
        queue without a result, was requeued or can never start). Jobs that start, run and
        end with a result are healthy: the calls then back off."""
        attention = False
        never = []
        for job in watched:
            line = lines.get(job.job_id)
            if line is None:  # left the queue (MinJobAge) without a result: ask sacct
                job.gone_rounds += 1
                attention = True
                continue
            seen, job.seen = job.seen, line
            if queue.requeued(seen, line):
                self._requeued.add(job.trial_id)  # requeued: sacct -D says why
                attention = True
            if line.dead:
                self._ended_as(job, line.state, line.nodes)
                attention = True
            elif queue.never_starts(line, self._known_nodes):
                never.append((job, line))
        if never:
            self._never_start(never)
        return attention or bool(never)

    def _accounted(self, watched: list[_Job], records: dict[str, queue.AccountedJob]) -> bool:
        """Read sacct's records (every run of each job); whether a job needs looking at again
        soon (one ended, or is still missing)."""
        attention = False
        for job in watched:
            record = records.get(job.job_id)
            if record is None:
                if job.gone_rounds:
                    job.gone_rounds += 1
                    attention = True
                    if job.gone_rounds > _GONE_ROUNDS:
                        self._ended_as(job, "gone from Slurm's queue and accounting", "")
                continue
            failed = record.failed_nodes()
            # NODE_FAIL is final only once the job has left the queue: until then Slurm may
            # be requeueing it (and sacct may not have its PENDING record yet).
            node_fail = record.state in _NODE_STATES
            if record.state in queue.DEAD_STATES and (job.gone_rounds or not node_fail):
                self._ended_as(job, record.state, record.nodes[-1])
                attention = True
                continue
            if failed and (node_fail or job.trial_id in self._requeued):
                self._exclude_on_requeue(job, failed)  # Slurm runs it again: elsewhere
            attention = attention or node_fail
            job.gone_rounds = 0  # still in Slurm's hands: squeue again next round
        self._requeued.clear()
        return attention

    def _ended_as(self, job: _Job, state: str, nodes: str) -> None:
        job.final = state
        job.final_nodes = nodes if nodes not in ("", "None assigned") else ""
        if state in _NODE_STATES and job.final_nodes:
            self._blame(job, [job.final_nodes])

    def _blame(self, job: _Job, nodes: list[str]) -> None:
        """The trial's next job excludes these nodes (Determined's ``exclude_node``)."""
        known = self.excluded_nodes.setdefault(job.trial_id, [])
        new = [n for n in nodes if n not in known]
        if not new:
            return
        known += new
        log.warning(
            "trial %d: Slurm job %s failed with its node(s) %s; its next run excludes %s",
            job.trial_id,
            job.job_id,
            ",".join(nodes),
            ",".join(known),
        )

    def _exclude_on_requeue(self, job: _Job, failed: list[str]) -> None:
        """Slurm requeued the job after its node failed: the pending job excludes that node."""
        self._blame(job, failed)
        given = [n for n in (job.parameters.get("exclude") or "").split(",") if n]
        nodes = ",".join(dict.fromkeys([*given, *self.excluded_nodes[job.trial_id]]))
        if nodes == job.parameters.get("exclude"):
            return  # excluded already
        update = ["scontrol", "update", f"JobId={job.job_id}", f"ExcNodeList={nodes}"]
        if self._slurm(update) is not None:
            job.parameters["exclude"] = nodes

    def _never_start(self, never: list[tuple[_Job, queue.QueuedJob]]) -> None:
        """Fail at once the jobs Slurm can never start, with its reason and what they asked
        for; cancel them (one ``scancel``)."""
        for job, line in never:
            partition = self._partition(line.partition)
            asked = queue.asked_text(
                line.reason, {**job.parameters, "partition": line.partition}, partition
            )
            job.refusal = f"Slurm job {job.job_id} can never start: {line.reason} ({asked})"
            log.error("trial %d: %s", job.trial_id, job.refusal)
        self._slurm(["scancel", *(job.job_id for job, _ in never)])

    def _partition(self, name: str) -> dict[str, str]:
        if name not in self._partitions:
            text = self._slurm(["scontrol", "show", "partition", "-o", name]) if name else None
            self._partitions[name] = queue.parse_partition(text or "")
        return self._partitions[name]

    def _known_nodes(self) -> set[str]:
        """The cluster's node names (asked once, when a job waits for a node it names)."""
        if self._cluster_nodes is None:
            text = self._slurm(["sinfo", "-h", "-N", "-o", "%N"]) or ""
            self._cluster_nodes = {line.strip() for line in text.splitlines() if line.strip()}
        return self._cluster_nodes

    def _slurm(self, command: list[str], *, missing_ok: bool = False) -> str | None:
        """A Slurm command's output; None when it failed (it is asked again next round).
        ``missing_ok``: squeue's "Invalid job id" (none of the jobs is known) is no output."""
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_SLURM_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s: %s", command[0], exc)
            return None
        if done.returncode != 0:
            if missing_ok and "Invalid job id" in done.stderr:
                return ""
            log.warning("%s: %s", command[0], done.stderr.strip() or f"exit {done.returncode}")
            return None
        return done.stdout

    # -- outcomes ------------------------------------------------------------------------------
    def _result(self, job: _Job) -> dict[str, Any]:
        if job.refusal is not None:  # never submitted, or cancelled: it could never start
            return {"status": "FAILED", "value": None, "error": job.refusal}
        pickle_path = _rank0(job).paths.result_pickle
        for _ in range(25 if job.final in (None, "COMPLETED") else 0):
            if pickle_path.exists():  # a finished job's result file may take a moment
                break
            time.sleep(0.2)
        if not pickle_path.exists():
            state = job.final or "UNKNOWN"
            on = f" on {job.final_nodes}" if job.final_nodes and state in _NODE_STATES else ""
            ended = f"Slurm job {job.job_id} ended {state}{on}"
            # Without a result: a signal (one that came while the job started), the memory
            # limit, a lost node, the time limit. A restart may cure those; not a job someone
            # cancelled, nor one whose process exited by itself (COMPLETED).
            final = state in _NOT_RESTARTED
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
        log_path = str(_rank0(job).paths.stdout) if job.submitted is not None else None
        return TrialOutcome(
            job.trial_id,
            result.get("error"),
            log_path,
            lost=result.get("lost"),
            raised_at=result.get("raised_at"),
        )

    def _job_return(self, job: _Job) -> JobReturn:
        result = self._result(job)
        config = job.config
        if config is None and not isinstance(result.get("job_return"), JobReturn):
            config = self.compose(job.trial_id, job.overrides)[0]  # rebuilt: never reported
        return job_return(result, job.overrides, config, job.dir)


def _submission_id(job_id: str) -> str:
    """The id ``sbatch`` returned for a job (an array task's array: ``12`` of ``12_3``)."""
    return job_id.split("_")[0]


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
