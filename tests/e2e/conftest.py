"""Fixtures of the end-to-end tests: the example CLI run for real in a temporary directory."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import run_cli


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``cli(*overrides)`` runs train.py with ``hydra.run.dir`` under a temp directory."""

    def call(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env)

    return call


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, int], Path]]:
    """``tmpfs(dir, kib)`` mounts a tmpfs of ``kib`` KiB on ``dir``; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(where: Path, kib: int) -> Path:
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"the disk-full tests need a tmpfs: mount failed: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        if subprocess.run(["umount", str(where)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=False)
