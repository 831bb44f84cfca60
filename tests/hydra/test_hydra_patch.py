"""The patches of Hydra's internals are pinned to the Hydra versions they were read against."""

from __future__ import annotations

import inspect

import hydra
import hydra._internal.hydra as hydra_internal
from hydra._internal import utils as hydra_utils
from hydra.core import utils as hydra_core_utils

from detflow._hydra.hydra_patch import CHECKED_HYDRA_VERSIONS


def test_the_installed_hydra_is_one_the_patches_were_checked_against() -> None:
    """A new Hydra release fails here until someone has read the two functions patched."""
    major_minor = ".".join(hydra.__version__.split(".")[:2])
    assert major_minor in CHECKED_HYDRA_VERSIONS, (
        f"hydra {hydra.__version__}: read hydra/_internal/utils.py:run_and_report and "
        f"hydra/_internal/hydra.py:Hydra.run (its run_job call), then add {major_minor!r} "
        "to CHECKED_HYDRA_VERSIONS"
    )


def test_run_and_report_takes_the_one_function_it_runs() -> None:
    assert list(inspect.signature(hydra_utils.run_and_report).parameters) == ["func"]


def test_hydra_run_calls_run_job_by_its_module_name_with_keywords() -> None:
    """The run-directory patch replaces ``hydra._internal.hydra.run_job`` and reads its
    ``config``, ``job_dir_key`` and ``job_subdir_key`` keywords."""
    assert hydra_internal.run_job is hydra_core_utils.run_job  # type: ignore[attr-defined]
    source = inspect.getsource(hydra_internal.Hydra.run)
    assert "run_job(" in source
    for keyword in ("config=cfg", 'job_dir_key="hydra.run.dir"', "job_subdir_key=None"):
        assert keyword in source
    parameters = inspect.signature(hydra_core_utils.run_job).parameters
    assert {"config", "job_dir_key", "job_subdir_key"} <= set(parameters)
