"""Helpers the tests share: the repository root, the example CLI run for real, Hydra isolation."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.version import VersionBase

REPO = Path(__file__).resolve().parent.parent


def run_cli(
    args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python train.py ARGS`` from the repository, output under ``cwd``."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR") if (env or {}).get("HYDRA_FULL_ERROR") is None else None
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_driver(args: list[str], *, cwd: Path, log: Path) -> subprocess.Popen[str]:
    """Start ``python train.py ARGS`` in the background, its output going to ``log``."""
    with open(log, "w") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def isolated_hydra() -> Iterator[None]:
    """Snapshot the ConfigStore and clear GlobalHydra; restore both on the way out."""
    # Hydra imports its plugins (which register their own configs) once per process: do it
    # before the snapshot, so restoring the snapshot keeps the plugins' configs.
    Plugins.instance()
    store = ConfigStore.instance()
    saved = copy.deepcopy(store.repo)
    # initialize_config_dir(version_base=...) sets Hydra's process-wide version base, which
    # decides defaults such as hydra.job.chdir for every later Hydra app in this process.
    version_base = VersionBase.instance().getbase()
    GlobalHydra.instance().clear()
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        store.repo = saved
        VersionBase.instance().version_base = version_base


#: Mounting a tmpfs needs root: without it the disk-full tests skip, except in CI (root
#: there, as for the Slurm tests), where a failed mount fails the test.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 and os.environ.get("CI") != "true",
    reason="mounting a tmpfs needs root: run as root",
)
