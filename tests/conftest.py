"""Fixtures every test folder shares; each folder's ``conftest.py`` adds its own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.support import REPO

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
