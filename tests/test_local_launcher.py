"""``hydra/launcher=detflow_local`` passes the suites Hydra's own launchers pass."""

from __future__ import annotations

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark


@mark.parametrize("launcher_name, overrides", [("detflow_local", [])])
class TestDetflowLocalLauncher(LauncherTestSuite):
    """Hydra's launcher suite: sweeps, overrides, strict mode, custom resolvers."""


@mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "detflow_local"}, "_self_"]}, ["-m"])],
)
class TestDetflowLocalLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real apps, output dirs, task names, working dirs."""
