"""Warm trials: the fork server imports the task's modules and ``hydra.launcher.preload``
before it forks, and stays safe to fork (no thread, no CUDA) or says which module was not."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from detflow._core.errors import ConfigError
from detflow._launch.forkserver import ForkServer, task_modules
from detflow._launch.local import LocalProcesses
from detflow._launch.process import die_with_parent
from tests.support import REPO

#: A module that appends the pid of the process importing it to the file ``$MARKER``.
MARKED = (
    "import os\n"
    "with open(os.environ['MARKER'], 'a') as handle:\n"
    "    handle.write(f'{os.getpid()}\\n')\n"
    "def marker():\n"
    "    return 1\n"
)
THREADED = (
    "import threading, time\n"
    "threading.Thread(target=time.sleep, args=(30,), name='poller', daemon=True).start()\n"
)


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Path]:
    """A folder on ``sys.path`` for this test's modules; they are forgotten afterwards."""
    folder = tmp_path / "modules"
    folder.mkdir()
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            if (getattr(sys.modules[name], "__file__", None) or "").startswith(str(folder)):
                sys.modules.pop(name, None)


def _shared(tmp_path: Path) -> Path:
    """A shared payload whose task function imports nothing of the test's modules."""
    shared = tmp_path / "launch.pkl"
    payload: dict[str, object] = {"hydra_context": None, "task_function": len}
    payload["singleton_state"] = {}
    shared.write_bytes(cloudpickle.dumps(payload))
    return shared


def _env(modules: Path, marker: Path) -> dict[str, str]:
    path = os.pathsep.join([str(modules), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "MARKER": str(marker)}


def _importing_job(tmp_path: Path, module: str) -> list[str]:
    """A job file whose unpickling imports ``module`` (unless the process has it already)."""
    job = tmp_path / "job.config.pkl"
    job.write_bytes(pickle.dumps(__import__(module).marker))
    return [str(job), str(tmp_path / "job.result.pkl")]


def test_task_modules_are_its_module_and_what_it_imports_at_top_level(modules: Path) -> None:
    (modules / "helper_a.py").write_text("X = 1\n")
    (modules / "helper_b.py").write_text("def build():\n    return 2\n")
    (modules / "my_task.py").write_text(
        "import json\nimport helper_a\nfrom helper_b import build\n"
        "def task(cfg):\n    return helper_a.X + build()\n"
    )
    import my_task  # type: ignore[import-not-found]

    wrapped = functools.wraps(my_task.task)(lambda cfg: my_task.task(cfg))  # @detflow.main's
    assert task_modules(wrapped) == ["my_task", "helper_a", "helper_b"]  # json: stdlib


def test_a_script_task_preloads_what_the_script_imports(modules: Path) -> None:
    (modules / "helper_c.py").write_text("Y = 3\n")
    script = {"__name__": "__main__"}
    exec("import os\nimport helper_c\ndef task(cfg):\n    return helper_c.Y\n", script)
    main = sys.modules["__main__"]
    saved = dict(vars(main))
    try:
        vars(main).clear()  # the task's module is the script: not importable again
        vars(main).update(script)
        assert task_modules(script["task"]) == ["helper_c"]  # type: ignore[arg-type]
    finally:
        vars(main).clear()
        vars(main).update(saved)


@pytest.mark.parametrize("preload", [True, False])
def test_a_forked_trial_finds_the_preloaded_modules_imported(
    tmp_path: Path, modules: Path, preload: bool
) -> None:
    (modules / "heavy_mod.py").write_text(MARKED)
    marker = tmp_path / "imported-by"
    env = _env(modules, marker)
    os.environ["MARKER"] = str(tmp_path / "this-process")
    try:
        job = _importing_job(tmp_path, "heavy_mod")
    finally:
        del os.environ["MARKER"]
    server = ForkServer(_shared(tmp_path), env, die_with_parent, ["heavy_mod"] if preload else [])
    assert server.usable and server.failed_preloads == {}
    try:
        child = server.start(job, env, tmp_path / "child.log")
        child.wait()  # the job itself fails (no Hydra config): only its imports matter
    finally:
        server.close()
    pids = [int(line) for line in marker.read_text().split()]
    # Imported once: by the server before it forked, or by the child that needed it.
    assert pids == [server.pid] if preload else pids == [child.pid]


def test_a_preload_that_starts_a_thread_is_named_and_the_server_not_used(
    tmp_path: Path, modules: Path
) -> None:
    (modules / "threaded_mod.py").write_text(THREADED)
    env = _env(modules, tmp_path / "marker")
    server = ForkServer(_shared(tmp_path), env, die_with_parent, ["json", "threaded_mod"])
    try:
        assert not server.usable
        assert server.unsafe_preload == "threaded_mod"
        assert server.why is not None and "poller" in server.why
    finally:
        server.close()


def test_a_preload_that_does_not_import_is_reported_and_skipped(
    tmp_path: Path, modules: Path
) -> None:
    (modules / "broken_mod.py").write_text("raise RuntimeError('no GPU driver here')\n")
    env = _env(modules, tmp_path / "marker")
    server = ForkServer(_shared(tmp_path), env, die_with_parent, ["broken_mod"])
    try:
        assert server.usable
        assert server.failed_preloads == {"broken_mod": "RuntimeError: no GPU driver here"}
    finally:
        server.close()


def test_the_launcher_warns_and_forks_without_an_unsafe_preload(
    tmp_path: Path, modules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (modules / "threaded_mod2.py").write_text(THREADED)
    launcher = LocalProcesses(preload=["threaded_mod2"])
    launcher.task_function = len
    launcher._shared = _shared(tmp_path)
    with caplog.at_level(logging.WARNING, logger="detflow.launch"):
        server = launcher._start_server(_env(modules, tmp_path / "marker"))
    assert server is not None and server.usable  # a second server, without the preload
    server.close()
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "after importing threaded_mod2, a thread is running (poller)" in warning
    assert "hydra.launcher.preload" in warning


@pytest.mark.parametrize(
    ("preload", "named"),
    [(["torch nn"], "['torch nn']"), (["no_such_module_anywhere"], "no_such_module_anywhere")],
)
def test_preload_takes_importable_module_names(preload: list[str], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LocalProcesses(preload=preload)
    assert caught.value.key == "hydra.launcher.preload"
    assert named in str(caught.value)
