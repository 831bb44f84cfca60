"""A fork server for ``hydra/launcher=detflow_local``: trial processes in milliseconds.

A fresh Python that imports Hydra, detflow and the task's modules takes ~0.3 s before the
trial's first line runs. The fork server pays that once per sweep: it imports everything a
job needs (the sweep's pickled Hydra context and task function), then forks one child per
trial. A child sets its own environment (``CUDA_VISIBLE_DEVICES``, ``RANK``, ...) and output
file before it runs the job, so nothing of one trial leaks into the next.

Warm trials: before it forks, the server also imports the modules the launcher names
(:func:`task_modules`: the task function's module and what that imports at top level, then
``hydra.launcher.preload``, then what such a library imports only on first use,
:data:`LAZY_IMPORTS`), so a trial of a torch model finds torch imported (~2 s less per
trial). Nothing runs but imports: no CUDA call, no tensor.

Forking is only safe while the server is single-threaded and has not initialised CUDA. The
server checks both after loading the task's modules, and again after each preloaded one;
when the task's own modules fail it answers ``spawn`` and the launcher starts plain
processes instead (as it does on platforms without ``fork``); when a preloaded module does,
it answers ``unsafe`` naming that module, and the launcher warns and starts a server
without the preload.

Protocol, one JSON object a line: the server first says ``{"state": "ready", "failed":
[...]}`` (the preloads that did not import, each with its error), ``{"state": "spawn",
"why": ...}`` or ``{"state": "unsafe", "module": ..., "why": ...}``; the launcher writes
``{"args": [job file, result file], "env": {...}, "log": path}``; the server answers
``{"pid": N}`` for each request, and ``{"ended": N, "code": C}`` when a child exits (``C``
negative: killed by signal ``-C``). ``{"signal": S}`` asks the server to send signal ``S``
to every child it has not yet reaped (no answer): only the server knows which pids are
still its children, so a pid the system reused is never signalled.

Signals: the server ignores ``SIGINT`` (the terminal's Ctrl-C is the sweep driver's to
handle) and ``SIGUSR2``; a child ignores ``SIGINT`` too, and ignores ``SIGUSR2`` until the
job installs its stop handler (the launcher repeats a stop request until the child ends).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import select
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["ForkServer", "ForkedProcess", "task_modules"]

_READY = "ready"
_SPAWN = "spawn"
_UNSAFE = "unsafe"

#: Modules a library imports only on first use, which every trial of it uses: preloaded too
#: once the library is. (torch imports ``torch._dynamo``, ~1 s, when the first optimizer is
#: built.)
LAZY_IMPORTS: dict[str, tuple[str, ...]] = {"torch": ("torch._dynamo",)}


def task_modules(task_function: Callable[..., Any]) -> list[str]:
    """The modules a fork server imports for ``task_function``'s trials: its own module
    (unless it is the script, ``__main__``), then every module it imports at top level,
    as this process has them (standard library left out).

    The function is unwrapped first (``@detflow.main``, ``functools.wraps``).

    >>> from detflow._launch.local import LocalProcesses
    >>> task_modules(LocalProcesses.start)[:3]
    ['detflow._launch.local', 'cloudpickle', 'hydra.core.utils']
    """
    function = inspect.unwrap(task_function)
    module_name = getattr(function, "__module__", None)
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    names: list[str] = []

    def add(name: object) -> None:
        if not isinstance(name, str) or name in names or name == "__main__":
            return
        if name.split(".")[0] in sys.stdlib_module_names or name not in sys.modules:
            return
        names.append(name)

    add(module_name)
    for value in vars(module).values() if module is not None else ():
        if isinstance(value, types.ModuleType):
            add(value.__name__)
        elif isinstance(value, (type, types.FunctionType)):
            add(getattr(value, "__module__", None))
    return names


class ForkedProcess:
    """A trial process forked by the server: ``Popen``'s ``poll``/``wait``/``kill``."""

    def __init__(self, server: ForkServer, pid: int) -> None:
        self._server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._server.collect(timeout=0)
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            self._server.collect(timeout=0.05)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """The launcher's handle on one fork server process (one per sweep).

    ``usable`` is false when the server could not fork safely; start plain processes then.
    ``preload``: modules it imports before it forks (:func:`task_modules`, then
    ``hydra.launcher.preload``). ``unsafe_preload`` names the module after whose import
    forking was no longer safe (the server is then not usable: start one without the
    preload), with ``why``; ``failed_preloads`` the modules that did not import, each with
    its error (the trials import them themselves).
    """

    def __init__(
        self, shared: Path, env: dict[str, str], preexec: Any, preload: Sequence[str] = ()
    ) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "detflow._launch.forkserver", str(shared), *preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            preexec_fn=preexec,
            bufsize=0,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._to: IO[bytes] = self._process.stdin
        self._from = self._process.stdout.fileno()
        self._buffer = b""
        self._children: dict[int, ForkedProcess] = {}
        self._closed = False
        first = self._message(timeout=None) or {}
        self.usable = first.get("state") == _READY
        self.why: str | None = first.get("why")
        self.unsafe_preload: str | None = first.get("module")
        self.failed_preloads: dict[str, str] = dict(first.get("failed") or {})

    def start(self, worker_args: list[str], env: dict[str, str], log: Path) -> ForkedProcess:
        """Fork a child that runs the job: ``worker_args`` are the job and result files."""
        request = {"args": worker_args, "env": env, "log": str(log)}
        self._to.write(json.dumps(request).encode() + b"\n")
        while True:
            message = self._message(timeout=None)
            if message is None or "state" in message:
                raise OSError("the fork server died")
            if "pid" in message:
                child = ForkedProcess(self, int(message["pid"]))
                self._children[child.pid] = child
                return child
            self._note(message)

    def signal_children(self, signum: int) -> None:
        """Send ``signum`` to every child still running (through the server)."""
        if not self._closed and self._process.poll() is None and self._children:
            with contextlib.suppress(OSError):  # the server died: so did its children
                self._to.write(json.dumps({"signal": int(signum)}).encode() + b"\n")

    def kill(self) -> None:
        """Kill every child at once (``SIGKILL``) and stop the server, which reaps them first:
        no process is left, not even a zombie."""
        self.signal_children(signal.SIGKILL)
        self.close()

    @property
    def pid(self) -> int:
        """The server process's pid."""
        return self._process.pid

    def collect(self, timeout: float) -> None:
        """Take in every exit the server has reported (waiting up to ``timeout`` for one)."""
        while (message := self._message(timeout)) is not None:
            if "state" in message:  # the server died
                return
            self._note(message)
            timeout = 0

    def close(self) -> None:
        """Stop the server; children still running are killed (and reaped) by it."""
        if self._closed:
            return
        self._closed = True
        if self._process.poll() is None:
            self._to.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        # Through the file object that owns the descriptor: closing the bare descriptor
        # would leave it to close again, later, a number by then another server's pipe.
        assert self._process.stdout is not None
        self._process.stdout.close()
        self._dead()

    def _dead(self) -> None:
        """The server is gone: so is every child it had (killed, or by ``PDEATHSIG``)."""
        for child in self._children.values():
            if child.returncode is None:
                child.returncode = -signal.SIGKILL
        self._children.clear()

    def _note(self, message: dict[str, Any]) -> None:
        child = self._children.pop(int(message["ended"]), None)
        if child is not None:
            child.returncode = int(message["code"])

    def _message(self, timeout: float | None) -> dict[str, Any] | None:
        """The next message; ``None`` when none came within ``timeout`` seconds."""
        while b"\n" not in self._buffer:
            if self._closed:
                return {"state": "dead"}
            if not select.select([self._from], [], [], timeout)[0]:
                return None
            chunk = os.read(self._from, 1 << 16)
            if not chunk:  # the server died, and every child with it (PDEATHSIG)
                self._dead()
                return {"state": "dead"}
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: dict[str, Any] = json.loads(line)
        return message


# -- the server process -------------------------------------------------------------------------
def _serve(shared_path: Path, preload: Sequence[str] = ()) -> int:
    """Import the task's modules and ``preload``, then fork a child per request line on
    stdin; report pids and exits on stdout.

    Single-threaded: one ``select`` over stdin and a wake-up pipe that ``SIGCHLD`` writes to.
    """
    from detflow._launch import worker as _worker

    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # the task's own prints must not reach the protocol stream
    shared = _worker.load_shared(shared_path)
    why = _fork_unsafe_because()
    if why is not None:
        out.write(json.dumps({"state": _SPAWN, "why": why}).encode() + b"\n")
        return 0
    failed: dict[str, str] = {}
    for name in _with_lazy_imports(preload):
        try:
            importlib.import_module(name)
        except Exception as exc:  # the trials import it themselves (and report the error)
            said = str(exc).strip().splitlines() or [""]
            failed[name] = f"{type(exc).__name__}: {said[0]}".rstrip(": ")
            continue
        why = _fork_unsafe_because()
        if why is not None:
            message = {"state": _UNSAFE, "module": name, "why": why}
            out.write(json.dumps(message).encode() + b"\n")
            return 0
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # a child's, once its job handles it
    out.write(json.dumps({"state": _READY, "failed": failed}).encode() + b"\n")
    stdin, pending, running = sys.stdin.fileno(), b"", 0
    children: set[int] = set()  # forked, not yet reaped: pids that are still ours
    while True:
        readable = select.select([stdin, wake_read], [], [])[0]
        if wake_read in readable:
            while True:
                try:
                    if not os.read(wake_read, 512):
                        break
                except BlockingIOError:
                    break
        while running:  # every child that has exited, whichever woke us
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            running -= 1
            children.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            out.write(json.dumps({"ended": pid, "code": code}).encode() + b"\n")
        if stdin not in readable:
            continue
        chunk = os.read(stdin, 1 << 16)
        if not chunk:  # the launcher closed us: no child outlives the server, none unreaped
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            for child in children:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child, 0)
            return 0
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            request = json.loads(line)
            if "signal" in request:  # to the children not yet reaped (zombies at worst)
                for child in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, int(request["signal"]))
                continue
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child, measured by the launcher tests
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd in (wake_read, wake_write, out.fileno()):
                    os.close(fd)
                os.dup2(os.open(os.devnull, os.O_RDONLY), stdin)
                os._exit(_child(shared, request))
            running += 1
            children.add(pid)
            out.write(json.dumps({"pid": pid}).encode() + b"\n")


def _child(shared: dict[str, Any], request: dict[str, Any]) -> int:  # pragma: no cover
    from detflow._launch import worker as _worker
    from detflow._launch.process import die_with_parent

    die_with_parent()
    # Ctrl-C reaches the whole process group: the driver asks its trials to stop instead
    # (SIGUSR2: ignored, as in the server, until the job installs its stop handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.clear()
    os.environ.update(request["env"])
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    try:
        job, result = (Path(arg) for arg in request["args"])
        code = _worker.run_loaded(shared, job, result)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # a child must never return into the server's loop
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _with_lazy_imports(preload: Sequence[str]) -> Iterator[str]:
    """``preload``, and after it the :data:`LAZY_IMPORTS` of each library it (or the task's
    modules) imported; computed as the imports go, since the task's modules may import torch.

    >>> list(_with_lazy_imports(["json"]))[:1]
    ['json']
    """
    names = list(preload)
    yield from names
    for library, extras in LAZY_IMPORTS.items():
        if library in sys.modules:
            yield from (extra for extra in extras if extra not in names)


def _fork_unsafe_because() -> str | None:
    """Why forking this process now would be unsafe: a thread besides the main one (its
    locks could be held in the child forever), or CUDA initialised (a forked child could
    not use it); ``None`` when it is safe."""
    if threading.active_count() > 1:
        others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
        return f"a thread is running ({', '.join(others)})"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    initialized = getattr(cuda, "is_initialized", None)
    if callable(initialized) and initialized():
        return "CUDA is initialised (torch.cuda)"
    return None


if __name__ == "__main__":
    exit_code = _serve(Path(sys.argv[1]), sys.argv[2:])
    sys.stdout.flush()
    sys.stderr.flush()
    # At once, without the interpreter's teardown: with torch preloaded that takes a while,
    # and the launcher waits for the server when a sweep stops (a second Ctrl-C included).
    os._exit(exit_code)
