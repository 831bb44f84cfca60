"""Is a real Slurm reachable (started by ``scripts/local-slurm.sh start``)?"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest


def slurm_available() -> bool:
    """``sinfo`` answers and ``sacct`` works (submitit reads job states through it)."""
    if shutil.which("sbatch") is None:
        return False
    try:
        for command in (["sinfo", "-h"], ["sacct", "-n", "-X", "-S", "now"]):
            subprocess.run(command, check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


AVAILABLE = slurm_available()
IN_CI = os.environ.get("CI") == "true"

#: On a laptop without Slurm these tests skip with this reason; in CI a missing Slurm fails.
needs_slurm = pytest.mark.skipif(
    not AVAILABLE and not IN_CI,
    reason="no running Slurm here: start one with `sudo bash scripts/local-slurm.sh start`",
)


@pytest.fixture(autouse=True)
def _slurm_must_run_in_ci() -> None:
    if IN_CI and not AVAILABLE:
        pytest.fail("CI must run the Slurm tests: scripts/local-slurm.sh start did not succeed")


#: Job states a run of a job ends in (``sacct`` State, first word).
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY"}


def accounted_runs(job: str, fields: str, timeout: float = 60) -> list[str]:
    """``sacct -P`` lines (``fields``, which must include ``State``) of each run of ``job``, once
    the last run's end is accounted: slurmdbd records an end a moment after the job has left
    ``squeue``, so a read right away can still say ``RUNNING``."""
    state = fields.split(",").index("State")
    deadline = time.monotonic() + timeout
    while True:
        runs = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-D", "-j", job, "-o", fields],
            capture_output=True,
            text=True,
        ).stdout.split()
        if runs and runs[-1].split("|")[state].split()[0] in _ENDED:
            return runs
        if time.monotonic() > deadline:
            return runs
        time.sleep(0.5)
