"""``hydra/launcher=detflow_local``: trials as local processes, at most N at once.

Each trial may be given its own GPUs from a list (``CUDA_VISIBLE_DEVICES``). Offers Hydra's
blocking ``launch()`` and the non-blocking ``start()`` / ``wait()`` the sweeper uses.

Ctrl-C: trial processes ignore ``SIGINT`` (the terminal sends it to the whole process
group), so that a trial is never cut off in the middle of a write; the sweep driver decides.
:meth:`LocalProcesses.request_stop` (the driver's first Ctrl-C) sends the running trials
``SIGUSR2``, the stop request of :mod:`detflow._harness.preemption`: each checkpoints at its
next optimizer step and ends; no queued trial starts. :meth:`LocalProcesses.kill` (the
second) ends them at once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import cloudpickle
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from detflow._core.errors import ConfigError
from detflow._launch.base import TrialProcesses, script_directory, slots_per_trial
from detflow._launch.forkserver import ForkedProcess, ForkServer, task_modules
from detflow._launch.process import die_with_parent, free_port
from detflow._launch.worker import job_return, write_shared_payload
from detflow._search.driver import TrialOutcome

__all__ = ["LocalProcesses"]

log = logging.getLogger("detflow.launch")

_START_METHODS = ("fork_server", "spawn")
_MODULE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: How often a stop request is sent again to trials still running: one that had not yet
#: installed its handler (still starting) ignored the last one.
_STOP_REPEAT_SECONDS = 1.0


def _trial_preexec() -> None:
    """In a spawned trial process, before ``exec``: killed with this process (no orphan),
    Ctrl-C ignored (:mod:`detflow._launch.local`), ``SIGUSR2`` ignored until the job installs
    its stop handler (the default action would end the process)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


@dataclass
class _Job:
    trial_id: int
    overrides: list[str]
    config: DictConfig | None = None
    dir: Path = field(default_factory=Path)
    processes: list[subprocess.Popen[bytes] | ForkedProcess] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    outputs: list[IO[bytes]] = field(default_factory=list)
    error: str | None = None  # set when the job could not even start


class LocalProcesses(TrialProcesses["_Job"]):
    """Runs Hydra jobs as child processes of this one.

    Parameters
    ----------
    max_parallel:
        Jobs running at once (0: no limit beyond the sweep's ``max_concurrent_trials``).
    gpus:
        GPU ids to hand out; each job gets ``gpus_per_trial`` of them, exclusively.
    gpus_per_trial:
        GPUs per job; 0 takes ``resources.slots_per_trial`` when ``gpus`` is given.
    start_method:
        ``fork_server`` (a server that has imported the task's modules forks each trial, in
        milliseconds; Linux only, and it falls back to ``spawn`` when forking is not safe) or
        ``spawn`` (a fresh interpreter per trial, ~0.3 s more each).
    preload:
        Modules the fork server imports before it forks, besides the task function's
        module and what that imports at top level (:func:`task_modules`): each trial finds
        them imported (``torch``: ~2 s less per trial). A module whose import starts a
        thread or initialises CUDA makes forking unsafe: the launcher then warns, naming
        it, and forks from a server without the preload.
    """

    poll_seconds = 0.02

    def __init__(
        self,
        max_parallel: int = 0,
        gpus: list[int] | None = None,
        gpus_per_trial: int = 0,
        start_method: str = "fork_server",
        preload: list[str] | None = None,
    ) -> None:
        if max_parallel < 0:
            raise ConfigError(
                "hydra.launcher.max_parallel", max_parallel, "0 or a positive integer"
            )
        if gpus_per_trial < 0:
            raise ConfigError("hydra.launcher.gpus_per_trial", gpus_per_trial, "0 or more")
        if start_method not in _START_METHODS:
            raise ConfigError(
                "hydra.launcher.start_method", start_method, " or ".join(_START_METHODS)
            )
        preload = list(preload or [])
        for name in preload:
            if not (isinstance(name, str) and _MODULE_NAME.match(name)):
                raise ConfigError(
                    "hydra.launcher.preload",
                    preload,
                    "a list of module names to import, such as [torch, trials.digits]",
                )
            top = name.split(".")[0]
            if top not in sys.modules and importlib.util.find_spec(top) is None:
                raise ConfigError(
                    "hydra.launcher.preload",
                    name,
                    f"modules the trials can import (no module named {top!r} on the path)",
                )
        super().__init__()
        self.preload = preload
        if start_method == "fork_server" and not sys.platform.startswith("linux"):
            start_method = "spawn"  # macOS system libraries are not fork-safe; Windows: no fork
        self.max_parallel = max_parallel
        self.start_method = start_method
        self._fork_server: ForkServer | None = None
        self.free_gpus = list(gpus or [])
        self.gpus_per_trial = gpus_per_trial
        self.pending: deque[_Job] = deque()
        self.running: dict[int, _Job] = {}
        self.unstarted: list[_Job] = []  # jobs whose config could not be composed
        self._shared: Path | None = None
        self._stop_sent_at: float | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self._shared = None  # a new sweep: a new payload and a new fork server
        self._stop_requested, self._stop_sent_at = False, None
        if self._fork_server is not None:
            self._fork_server.close()
            self._fork_server = None
        if self.free_gpus and not self.gpus_per_trial:
            self.gpus_per_trial = slots_per_trial(config)
        if self.gpus_per_trial > len(self.free_gpus) and self.free_gpus:
            raise ConfigError(
                "hydra.launcher.gpus_per_trial",
                self.gpus_per_trial,
                f"at most the {len(self.free_gpus)} GPUs in hydra.launcher.gpus",
            )

    # -- the non-blocking interface the sweeper uses ----------------------------------------
    def start(self, trial_id: int, overrides: list[str]) -> None:
        """Queue ``trial_id``'s job; it starts as soon as a slot (and GPUs) are free."""
        self.pending.append(_Job(trial_id, list(overrides)))
        self._spawn_ready()

    def _poll(self) -> list[_Job]:
        ended = self._reap()
        if self._stop_requested:
            self._send_stop()
        else:
            self._spawn_ready()
        return ended

    def _busy(self) -> bool:
        if self._stop_requested:  # queued jobs will not start
            return bool(self.running or self.unstarted)
        return bool(self.running or self.pending or self.unstarted)

    # -- Ctrl-C ---------------------------------------------------------------------------------
    def request_stop(self) -> str | None:
        """Ask the running trials to checkpoint at their next step and end; start no more.

        Safe in a signal handler: it only sets a flag. The next :meth:`wait` sends the
        trials ``SIGUSR2`` (again every second while they run) and returns their outcomes as
        they end, then an empty list once none runs: queued jobs stay unstarted.
        """
        self._stop_requested = True
        return None

    def kill(self) -> None:
        """End every trial process at once (``SIGKILL``) and wait for them; start no more."""
        self._stop_requested = True
        if self._fork_server is not None:
            self._fork_server.kill()  # it kills and reaps its children first
        for job in self.running.values():
            for process in job.processes:
                if isinstance(process, subprocess.Popen):
                    process.kill()
        for job in self.running.values():
            for process in job.processes:
                if isinstance(process, subprocess.Popen):
                    process.wait()
            for output in job.outputs:
                output.close()

    def _send_stop(self) -> None:
        """``SIGUSR2`` to every running trial process, at most once a second."""
        now = time.monotonic()
        if self._stop_sent_at is not None and now - self._stop_sent_at < _STOP_REPEAT_SECONDS:
            return
        self._stop_sent_at = now
        if self._fork_server is not None:
            self._fork_server.signal_children(signal.SIGUSR2)
        for job in self.running.values():
            for process in job.processes:
                if isinstance(process, subprocess.Popen):
                    process.send_signal(signal.SIGUSR2)  # none once it has been reaped

    # -- internals ------------------------------------------------------------------------------
    def _spawn_ready(self) -> None:
        while self.pending:
            if self.max_parallel and len(self.running) >= self.max_parallel:
                return
            if self.gpus_per_trial and len(self.free_gpus) < self.gpus_per_trial:
                return
            job = self.pending.popleft()
            job.gpus = [self.free_gpus.pop(0) for _ in range(self.gpus_per_trial)]
            try:
                self._spawn(job)
            except Exception as exc:  # composition failed: this job fails, the others go on
                lines = str(exc).strip().splitlines() or [type(exc).__name__]
                job.error = f"{type(exc).__name__}: {' '.join(lines[:3])}"
                self.free_gpus.extend(job.gpus)
                self.unstarted.append(job)
                continue
            self.running[job.trial_id] = job

    def _spawn(self, job: _Job) -> None:
        config, job.dir = self.compose(job.trial_id, job.overrides)
        job.config = config
        job.dir.mkdir(parents=True, exist_ok=True)
        files = self._files(job)
        files["job"].write_bytes(cloudpickle.dumps(config))
        env = dict(os.environ)
        # The child imports the task's modules as this process did: same script directory.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (script_directory(), os.environ.get("PYTHONPATH", "")) if p
        )
        if job.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in job.gpus)
        slots = slots_per_trial(config)
        if slots > 1:  # one process per slot, torch.distributed over the environment
            env.update(
                WORLD_SIZE=str(slots),
                LOCAL_WORLD_SIZE=str(slots),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(free_port()),
            )
        for rank in range(slots):
            log_path = files["log"] if rank == 0 else files["log"].with_suffix(f".rank{rank}.log")
            result = files["result"] if rank == 0 else files["result"].with_suffix(f".{rank}.pkl")
            result.unlink(missing_ok=True)  # an earlier attempt's outcome is not this one's
            rank_env = {**env, "RANK": str(rank), "LOCAL_RANK": str(rank)} if slots > 1 else env
            server = self._server(env)
            if server is not None:
                job.processes.append(
                    server.start([str(files["job"]), str(result)], rank_env, log_path)
                )
                continue
            output = open(log_path, "ab")  # noqa: SIM115 - closed when the job ends
            job.outputs.append(output)
            job.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "detflow._launch.worker",
                        str(self._shared_payload()),
                        str(files["job"]),
                        str(result),
                    ],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=rank_env,
                    preexec_fn=_trial_preexec,
                )
            )

    def _server(self, env: dict[str, str]) -> ForkServer | None:
        """The sweep's fork server, started on first use; ``None``: spawn processes."""
        if self.start_method != "fork_server":
            return None
        if self._fork_server is None:
            self._fork_server = self._start_server(env)
            if self._fork_server is None:
                self.start_method = "spawn"
        return self._fork_server

    def _start_server(self, env: dict[str, str]) -> ForkServer | None:
        """A usable fork server, warm (the task's modules and ``preload`` imported) if
        forking stays safe after them; ``None``: spawn processes."""
        assert self.task_function is not None
        preload = [*task_modules(self.task_function), *self.preload]
        server = ForkServer(self._shared_payload(), env, _trial_preexec, preload)
        for name, error in server.failed_preloads.items():
            log.warning("fork server: cannot import %s (%s); each trial imports it", name, error)
        if server.unsafe_preload is not None:
            server.close()
            log.warning(
                "fork server: after importing %s, %s: forking is no longer safe; trials "
                "fork from a server without the preloaded modules and import them themselves"
                "%s",
                server.unsafe_preload,
                server.why,
                " (remove it from hydra.launcher.preload)"
                if server.unsafe_preload in self.preload
                else "",
            )
            server = ForkServer(self._shared_payload(), env, _trial_preexec)
        if not server.usable:
            server.close()
            return None
        return server

    def _shared_payload(self) -> Path:
        if self._shared is None:
            assert self.config is not None
            self._shared = write_shared_payload(
                self.private_dir(), self.hydra_context, self.task_function
            )
        return self._shared

    def _files(self, job: _Job) -> dict[str, Path]:
        directory = self.private_dir()
        return {
            "job": directory / f"{job.trial_id}.config.pkl",
            "result": directory / f"{job.trial_id}.result.pkl",
            "log": job.dir / "output.log",
        }

    def _reap(self) -> list[_Job]:
        ended, self.unstarted = self.unstarted, []
        for trial_id, job in list(self.running.items()):
            codes = [p.poll() for p in job.processes]
            if any(code not in (None, 0) for code in codes):
                for process in job.processes:  # one slot failed: the others cannot go on
                    if process.poll() is None:
                        process.kill()
                codes = [p.wait() for p in job.processes]
            if any(code is None for code in codes):
                continue
            del self.running[trial_id]
            self.free_gpus.extend(job.gpus)
            for output in job.outputs:
                output.close()
            ended.append(job)
        return ended

    def _result(self, job: _Job) -> dict[str, Any]:
        if job.error is not None:
            return {"status": "FAILED", "error": job.error, "value": None}
        # Rank 0's outcome, else (it was stopped because another rank failed first) the
        # outcome of the first rank that wrote one: the error the user needs to see.
        rank0 = self._files(job)["result"]
        paths = [rank0, *(rank0.with_suffix(f".{r}.pkl") for r in range(1, len(job.processes)))]
        for path in paths:
            try:
                with open(path, "rb") as handle:
                    value = pickle.load(handle)
            except (OSError, EOFError, pickle.UnpicklingError):
                continue
            assert isinstance(value, dict)
            if path == rank0 or value.get("status") == "FAILED":
                return value
        # No outcome from any rank. Killed by a signal (the memory limit's SIGKILL, a kill
        # from outside) it ended without a result, which a restart may cure; an exit status
        # is the process's own doing (sys.exit, os._exit in the trial's code).
        code = job.processes[0].returncode if job.processes else None
        code = -1 if code is None else code
        why = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
        return {
            "status": "FAILED",
            "error": f"the trial process died ({why})",
            "value": None,
            "lost": why if code < 0 else None,
        }

    def _outcome(self, job: _Job) -> TrialOutcome:
        result = self._result(job)
        log = str(self._files(job)["log"])
        return TrialOutcome(
            job.trial_id,
            result.get("error"),
            log,
            lost=result.get("lost"),
            raised_at=result.get("raised_at"),
        )

    def _job_return(self, job: _Job) -> JobReturn:
        return job_return(self._result(job), job.overrides, job.config, job.dir)
