"""Shared fixtures: the repository root and a way to run the example CLI for real."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.version import VersionBase
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent

# Property tests explore the same examples on every run: a red CI is a bug, never a seed.
# (HYPOTHESIS_PROFILE=explore searches afresh, for hunting bugs by hand.)
settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def repo() -> Path:
    return REPO


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


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*overrides)`` runs train.py with ``hydra.run.dir`` under a temp directory."""

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)

    return call


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
