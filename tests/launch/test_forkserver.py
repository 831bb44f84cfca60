"""The local launcher's fork server: children, exit codes, kills, and the spawn fallback."""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from pathlib import Path

import cloudpickle

from detflow._launch.forkserver import ForkServer
from detflow._launch.process import die_with_parent
from tests.support import REPO


def _server(tmp_path: Path, module: str, body: str) -> ForkServer:
    """A fork server whose shared payload's task function lives in ``module``."""
    (tmp_path / f"{module}.py").write_text(body)
    shared = tmp_path / "launch.pkl"
    sys.path.insert(0, str(tmp_path))
    try:  # pickled by reference: the server imports the module
        payload = {"hydra_context": None, "task_function": __import__(module).task}
        shared.write_bytes(cloudpickle.dumps({**payload, "singleton_state": {}}))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    return ForkServer(shared, env, die_with_parent)


def _job(tmp_path: Path, name: str) -> list[str]:
    job = tmp_path / f"{name}.config.pkl"
    job.write_bytes(pickle.dumps({"not": "a hydra config"}))
    return [str(job), str(tmp_path / f"{name}.result.pkl")]


def test_a_child_writes_to_its_own_log_and_reports_its_exit_code(tmp_path: Path) -> None:
    server = _server(tmp_path, "plain_task", "def task(cfg):\n    return 0\n")
    assert server.usable
    try:
        # run_job fails on this config (no hydra context): the child logs it and exits 1.
        child = server.start(_job(tmp_path, "a"), dict(os.environ), tmp_path / "a.log")
        assert child.wait() == 1
        assert child.pid != os.getpid()
        assert "Traceback" in (tmp_path / "a.log").read_text()
    finally:
        server.close()


def test_a_killed_child_reports_the_signal(tmp_path: Path) -> None:
    server = _server(tmp_path, "killed_task", "def task(cfg):\n    return 0\n")
    try:
        child = server.start(_sleeping_job(tmp_path), dict(os.environ), tmp_path / "k.log")
        time.sleep(0.3)
        assert child.poll() is None
        child.kill()
        assert child.wait() == -signal.SIGKILL
    finally:
        server.close()


def test_closing_the_server_kills_its_children(tmp_path: Path) -> None:
    server = _server(tmp_path, "closing_task", "def task(cfg):\n    return 0\n")
    child = server.start(_sleeping_job(tmp_path), dict(os.environ), tmp_path / "s.log")
    time.sleep(0.5)
    assert _alive(child.pid)
    server.close()
    deadline = time.monotonic() + 10
    while _alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child.pid)


def test_a_server_that_cannot_fork_safely_says_spawn(tmp_path: Path) -> None:
    body = (
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(30,), daemon=True).start()\n"
        "def task(cfg):\n    return 0\n"
    )
    server = _server(tmp_path, "threaded_task", body)
    assert not server.usable
    server.close()


def _sleeping_job(tmp_path: Path) -> list[str]:
    """A job whose config takes a minute to unpickle: the child is busy until killed."""
    job = tmp_path / "sleep.config.pkl"
    job.write_bytes(pickle.dumps(_Sleep()))
    return [str(job), str(tmp_path / "sleep.result.pkl")]


class _Sleep:
    def __reduce__(self) -> tuple[object, tuple[float]]:
        return (time.sleep, (60.0,))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _exists(pid: int) -> bool:
    """Whether ``pid`` is any process at all, a zombie included."""
    return Path(f"/proc/{pid}").exists()


def test_a_signal_through_the_server_reaches_its_running_children(tmp_path: Path) -> None:
    server = _server(tmp_path, "signalled_task", "def task(cfg):\n    return 0\n")
    try:
        children = [
            server.start(_sleeping_job(tmp_path), dict(os.environ), tmp_path / f"{n}.log")
            for n in range(2)
        ]
        time.sleep(0.3)
        server.signal_children(signal.SIGTERM)
        assert [child.wait() for child in children] == [-signal.SIGTERM] * 2
    finally:
        server.close()


def test_a_child_ignores_sigint_and_sigusr2_until_its_job_handles_them(tmp_path: Path) -> None:
    """Ctrl-C goes to the whole process group: a trial must not die of it, nor of a stop
    request (SIGUSR2) that comes before its job installed the stop handler."""
    server = _server(tmp_path, "ignoring_task", "def task(cfg):\n    return 0\n")
    try:
        child = server.start(_sleeping_job(tmp_path), dict(os.environ), tmp_path / "i.log")
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGINT)
        server.signal_children(signal.SIGUSR2)
        time.sleep(0.3)
        assert child.poll() is None and _alive(child.pid)
        assert _alive(server.pid)
    finally:
        server.close()


def test_killing_the_server_leaves_no_child_not_even_a_zombie(tmp_path: Path) -> None:
    server = _server(tmp_path, "killed_server_task", "def task(cfg):\n    return 0\n")
    child = server.start(_sleeping_job(tmp_path), dict(os.environ), tmp_path / "z.log")
    time.sleep(0.3)
    server.kill()
    assert not _exists(child.pid) and not _exists(server.pid)
    assert child.poll() == -signal.SIGKILL
    server.close()  # a second close (or kill) is harmless
