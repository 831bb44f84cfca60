"""A launcher's trial process: run one Hydra job, report its outcome.

``python -m detflow._launch.worker SHARED JOB RESULT`` (local launcher): ``SHARED`` holds the
pickled Hydra context, task function and Hydra's global state (written once per sweep),
``JOB`` the job's config; the outcome is written to ``RESULT``. The Slurm launcher calls
:func:`run_job_outcome` inside its submitit job, on a config the node composes itself
(:func:`compose_job`, from the sweep's master config in ``SHARED``).
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import traceback
from pathlib import Path
from typing import Any

import cloudpickle
from hydra.core.utils import JobReturn, JobStatus

from detflow._core.errors import DetflowError
from detflow._harness import preemption
from detflow._harness.session import failure_batch


def load_shared(shared_path: Path) -> dict[str, Any]:
    """What :func:`write_shared_payload` wrote (this imports the task's modules)."""
    with open(shared_path, "rb") as handle:
        shared: dict[str, Any] = pickle.load(handle)
    return shared


def run_job_outcome(shared: Path | dict[str, Any], config: Any) -> dict[str, Any]:
    """Run the job with ``SIGUSR2`` as a stop request; return its outcome.

    ``shared`` is the path :func:`write_shared_payload` returned, or its loaded content. The
    outcome holds ``status`` (COMPLETED or FAILED), ``error`` (the exception's last line),
    ``traceback``, ``raised_at`` (for an exception of the user's code, not one of detflow's
    own errors: the batch count where it was raised, see
    :func:`~detflow._harness.session.failure_batch`; else ``None``) and Hydra's
    ``job_return``.
    """
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    if not isinstance(shared, dict):
        shared = load_shared(shared)
    Singleton.set_state(shared["singleton_state"])
    setup_globals()
    preemption.install_stop_handler()
    ret = run_job(
        hydra_context=shared["hydra_context"],
        task_function=shared["task_function"],
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
    outcome: dict[str, Any] = {
        "status": "COMPLETED",
        "error": None,
        "traceback": None,
        "raised_at": None,
    }
    if ret.status == JobStatus.FAILED:
        exc = ret._return_value
        text = "".join(traceback.format_exception(exc))
        logging.getLogger("detflow").error("trial failed:\n%s", text)
        lines = str(exc).strip().splitlines() or [""]
        outcome.update(
            status="FAILED",
            error=f"{type(exc).__name__}: {lines[-1]}".rstrip(": "),
            traceback=text,
            raised_at=None if _detflows(exc) else failure_batch() or 0,
        )
        ret._return_value = RuntimeError(outcome["error"])  # the original may not pickle
    else:
        try:
            cloudpickle.dumps(ret.return_value)
        except Exception:
            ret.return_value = None
    outcome["job_return"] = ret
    return outcome


def _detflows(exc: BaseException | None) -> bool:
    """Whether ``exc`` is (or was caused by) one of detflow's own errors: a config error, a
    non-finite loss, a corrupt checkpoint, a full disk: deterministic, never retried."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DetflowError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def job_return(
    result: dict[str, Any], overrides: list[str], config: Any, working_dir: Path
) -> JobReturn:
    """Hydra's ``JobReturn`` of a job from its outcome (rebuilt when the job never reported)."""
    returned = result.get("job_return")
    if isinstance(returned, JobReturn):
        return returned
    ret = JobReturn(
        overrides=overrides, cfg=config, hydra_cfg=None, working_dir=str(working_dir), task_name=""
    )
    if result.get("status") == "COMPLETED":
        ret.status = JobStatus.COMPLETED
        ret.return_value = result.get("value")
    else:
        ret.status = JobStatus.FAILED
        ret.return_value = RuntimeError(result.get("error") or "failed")
    return ret


def write_shared_payload(
    directory: Path,
    hydra_context: Any,
    task_function: Any,
    *,
    master_config: Any = None,
) -> Path:
    """Pickle what every job of a sweep shares (once), for :func:`run_job_outcome`; with
    ``master_config`` (the sweep's config) a job can compose its own (:func:`compose_job`).

    Written atomically (a temporary file, then renamed): a job that starts while a resumed
    sweep writes it again reads the old file or the new one, never half of one.
    """
    from hydra.core.singleton import Singleton

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "launch.pkl"
    payload = {
        "hydra_context": hydra_context,
        "task_function": task_function,
        "singleton_state": Singleton.get_state(),
        "master_config": master_config,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(cloudpickle.dumps(payload))
    tmp.replace(path)
    return path


def compose_job(shared: dict[str, Any], trial_id: int, overrides: list[str]) -> Any:
    """The job's config, composed where it runs: the sweep's master config (in ``shared``,
    see :func:`write_shared_payload`) with the job's Hydra ``overrides``, and its job id
    and number, as the launchers' :meth:`~detflow._launch.base.TrialProcesses.compose` does
    in the driver."""
    from hydra.core.singleton import Singleton
    from omegaconf import open_dict

    master = shared.get("master_config")
    if master is None:
        raise ValueError("the launch file holds no master config: written by an older detflow")
    Singleton.set_state(shared["singleton_state"])  # the ConfigStore's entries, first
    config = shared["hydra_context"].config_loader.load_sweep_config(master, list(overrides))
    with open_dict(config):
        config.hydra.job.id = str(trial_id)
        config.hydra.job.num = trial_id
    return config


def run(shared_path: Path, job_path: Path, result_path: Path) -> int:
    """The local launcher's child: 0 when the job completed."""
    return run_loaded(load_shared(shared_path), job_path, result_path)


def run_loaded(shared: dict[str, Any], job_path: Path, result_path: Path) -> int:
    """:func:`run` with the shared payload already loaded (a fork server's child)."""
    with open(job_path, "rb") as handle:
        config = pickle.load(handle)
    outcome = run_job_outcome(shared, config)
    tmp = result_path.with_suffix(".tmp")
    tmp.write_bytes(cloudpickle.dumps(outcome))  # by value: Hydra re-defines plugin classes
    tmp.replace(result_path)
    return 0 if outcome["status"] == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])))
