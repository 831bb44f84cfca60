"""Fixtures of the end-to-end tests: the example CLI run for real in a temporary directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support import run_cli


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*overrides)`` runs train.py with ``hydra.run.dir`` under a temp directory."""

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)

    return call
