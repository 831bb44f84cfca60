"""``hydra/launcher=detflow_local`` passes the suites Hydra's own launchers pass."""

from __future__ import annotations

from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from pytest import mark


@mark.parametrize(
    "launcher_name, overrides",
    [("detflow_local", []), ("detflow_local", ["hydra.launcher.start_method=spawn"])],
    ids=["fork_server", "spawn"],
)
class TestDetflowLocalLauncher(LauncherTestSuite):
    """Hydra's launcher suite (sweeps, overrides, strict mode, custom resolvers), with trials
    forked by the fork server (the default) and spawned as fresh interpreters."""


@mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({"defaults": [{"override hydra/launcher": "detflow_local"}, "_self_"]}, ["-m"])],
)
class TestDetflowLocalLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real apps, output dirs, task names, working dirs."""
