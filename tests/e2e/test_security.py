"""Security (issue #8, item 4): no code from data, no shell from options, no code from files.

1. An AST scan of the product (``detflow/``, ``launchers/``, ``conf/``, ``trials/``,
   ``train.py``): no ``eval``/``exec``/``compile``/``__import__``, no ``os.system``, no
   ``shell=True``, no unpickling or ``torch.load`` without ``weights_only=True`` but for an
   allow-list of (file, function) pairs, each with its reason. The launchers' own job files
   live in a private (0700) directory, checked here too.
2. sbatch quoting: hostile strings in every option that reaches the script are refused in one
   line naming the key, or quoted: rendered through the launcher's dry run (no submission),
   every ``#SBATCH`` line stays one directive and the command line parses, with ``shlex``,
   to the intended argv.
3. Checkpoints: a ``trial.pkl`` is read by an unpickler that resolves only containers,
   scalars and numpy arrays; ``trial.pt`` by ``torch.load(weights_only=True)``; a
   ``__reduce__`` payload is refused and never runs; counters and meta are JSON.
"""

from __future__ import annotations

import ast
import collections
import json
import os
import pickle
import re
import shlex
import stat
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from hydra.types import HydraContext
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

import conf
import detflow
from detflow import ConfigError
from detflow._harness.checkpoint import CheckpointStore, _read_trial_state
from detflow._hydra.sweeper import _render
from detflow._launch.base import private_directory
from detflow._launch.local import LocalProcesses, _Job
from detflow._launch.slurm import BLOCKED_START, SHELL_START, SlurmTrials, settings_from
from detflow._launch.slurm_settings import OWNED_OPTIONS, SlurmSettings
from tests.support import REPO, isolated_hydra

README = REPO / "README.md"

# --- 1. no code from data: an AST scan -------------------------------------------------------

SCANNED = ["detflow", "launchers", "conf", "trials", "train.py"]
BUILTINS = {"eval", "exec", "compile", "__import__"}
#: Calls that run what they read: ``name`` as the scan resolves it (imports followed).
UNPICKLERS = {
    f"{module}.{name}"
    for module in ("pickle", "_pickle", "cloudpickle", "dill", "marshal", "joblib")
    for name in ("load", "loads", "Unpickler")
} | {"shelve.open", "pandas.read_pickle", "yaml.unsafe_load", "yaml.full_load"}
SHELLS = {"os.system", "os.popen", "posix.system"}

#: (file, function, call) -> why it is safe. The scan fails on any other finding, and on an
#: entry that no longer matches anything (so the list never outlives its reasons).
ALLOWED: dict[tuple[str, str, str], str] = {
    ("detflow/_launch/worker.py", "load_shared", "pickle.load"): (
        "the sweep's launch.pkl (Hydra context, task function), written by this user's own "
        "driver into <sweep dir>/.detflow, which private_directory() makes 0700"
    ),
    ("detflow/_launch/worker.py", "run_loaded", "pickle.load"): (
        "the job's config, written by the local launcher into <sweep dir>/.detflow (0700)"
    ),
    ("detflow/_launch/local.py", "LocalProcesses._result", "pickle.load"): (
        "the trial's outcome, written by the launcher's own child into <sweep dir>/.detflow (0700)"
    ),
}


@dataclass(frozen=True)
class Finding:
    path: str
    function: str
    call: str
    line: int

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.path, self.function, self.call)


@dataclass
class _Scanner(ast.NodeVisitor):
    """Finds dangerous calls; ``model.eval()`` and ``re.compile`` are not ``eval``/``compile``
    (names are resolved through the module's imports), comments and strings are not code."""

    path: str
    findings: list[Finding] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            else:
                top = alias.name.split(".")[0]
                self.aliases[top] = top

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            self.aliases[alias.asname or alias.name] = f"{node.module or ''}.{alias.name}"

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _name(self, func: ast.expr) -> str | None:
        if isinstance(func, ast.Name):
            return self.aliases.get(func.id, func.id)
        if isinstance(func, ast.Attribute):
            base = self._name(func.value)
            return None if base is None else f"{base}.{func.attr}"
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self._name(node.func)
        keywords = {k.arg: k.value for k in node.keywords if k.arg is not None}
        flagged: str | None = None
        if name is not None:
            bare = name.removeprefix("builtins.")
            if bare in BUILTINS and (name == bare or name.startswith("builtins.")):
                flagged = bare
            elif name in SHELLS | UNPICKLERS or name.startswith(("os.exec", "os.spawn")):
                flagged = name
            elif name == "torch.load" and not _is_true(keywords.get("weights_only")):
                flagged = "torch.load"
            elif name in ("numpy.load", "np.load") and _is_true(keywords.get("allow_pickle")):
                flagged = "numpy.load(allow_pickle=True)"
            elif name == "yaml.load" and not _safe_loader(keywords.get("Loader")):
                flagged = "yaml.load"
        if "shell" in keywords and not _is_false(keywords["shell"]):
            flagged = f"{name}(shell=...)"
        if flagged is not None:
            function = ".".join(self.scope) or "<module>"
            self.findings.append(Finding(self.path, function, flagged, node.lineno))
        self.generic_visit(node)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


def _safe_loader(node: ast.expr | None) -> bool:
    text = ast.unparse(node) if node is not None else ""
    return text.split(".")[-1] in ("SafeLoader", "CSafeLoader")


def scan_source(source: str, path: str) -> list[Finding]:
    scanner = _Scanner(path)
    scanner.visit(ast.parse(source, filename=path))
    return scanner.findings


def product_files(root: Path = REPO) -> list[Path]:
    files: list[Path] = []
    for entry in SCANNED:
        target = root / entry
        files += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return files


def scan(root: Path = REPO) -> list[Finding]:
    findings: list[Finding] = []
    for path in product_files(root):
        findings += scan_source(path.read_text(), path.relative_to(root).as_posix())
    return findings


def test_the_product_calls_nothing_that_runs_code_from_data() -> None:
    assert len(product_files()) > 30  # the scan sees the product
    findings = scan()
    unexpected = [f for f in findings if f.key not in ALLOWED]
    assert not unexpected, "\n".join(
        f"{f.path}:{f.line} in {f.function}: {f.call}" for f in unexpected
    )
    stale = set(ALLOWED) - {f.key for f in findings}
    assert not stale, f"allow-list entries that match nothing any more: {sorted(stale)}"


@pytest.mark.parametrize(
    "source",
    [
        "eval('1')",
        "exec('x = 1')",
        "compile('1', 'f', 'eval')",
        "__import__('os')",
        "import builtins\nbuiltins.eval('1')",
        "import os\nos.system('ls')",
        "from os import system as run\nrun('ls')",
        "import os\nos.execv('/bin/sh', ['sh'])",
        "import subprocess\nsubprocess.run('ls', shell=True)",
        "from subprocess import Popen\nPopen('ls', shell=1)",
        "import subprocess as sp\nsp.check_output('ls', shell=flag)",
        "import pickle\npickle.loads(b'')",
        "from pickle import load\nload(f)",
        "import cloudpickle as cp\ncp.loads(b'')",
        "import marshal\nmarshal.loads(b'')",
        "import torch\ntorch.load('x')",
        "import torch\ntorch.load('x', weights_only=False)",
        "import numpy as np\nnp.load('x', allow_pickle=True)",
        "import yaml\nyaml.load(text, Loader=yaml.Loader)",
        "def f():\n    class A:\n        def g(self):\n            return eval('1')",
    ],
)
def test_the_scan_finds_each_kind_of_call(source: str) -> None:
    assert scan_source(source, "probe.py"), source


@pytest.mark.parametrize(
    "source",
    [
        "model.eval()",
        "self.model.eval()",
        "import re\nre.compile('x')",
        "# eval('1')\nx = 'eval(1)'",
        "'''exec('x')'''",
        "import torch\ntorch.load('x', weights_only=True)",
        "import subprocess\nsubprocess.run(['ls'])",
        "import subprocess\nsubprocess.run(['ls'], shell=False)",
        "import json\njson.loads('1')",
        "unpickler.load()",
        "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    ],
)
def test_the_scan_leaves_harmless_calls_alone(source: str) -> None:
    assert scan_source(source, "probe.py") == []


def test_an_eval_added_to_the_product_fails_the_scan() -> None:
    """What adding ``eval(`` to a product file does to the scan (on a copy of its source)."""
    path = REPO / "detflow" / "_core" / "units.py"
    source = path.read_text() + "\n\ndef _probe(text: str) -> object:\n    return eval(text)\n"
    findings = scan_source(source, "detflow/_core/units.py")
    assert [(f.function, f.call) for f in findings] == [("_probe", "eval")]
    assert ("detflow/_core/units.py", "_probe", "eval") not in ALLOWED


def test_the_launchers_job_directory_is_private(tmp_path: Path) -> None:
    """Where the allow-listed pickles live: made 0700 whatever the umask or what was there."""
    sweep = tmp_path / "sweep"
    (sweep / ".detflow").mkdir(parents=True, mode=0o755)
    os.chmod(sweep / ".detflow", 0o777)
    launcher = LocalProcesses()
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    files = launcher._files(_Job(0, []))
    assert files["job"].parent == sweep / ".detflow"
    assert stat.S_IMODE((sweep / ".detflow").stat().st_mode) == 0o700
    shared = launcher._shared_payload()
    assert shared.parent == sweep / ".detflow"
    fresh = tmp_path / "fresh" / "a" / ".detflow"
    old = os.umask(0)
    try:
        assert stat.S_IMODE(private_directory(fresh).stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_a_planted_link_for_the_job_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o777)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / ".detflow").symlink_to(elsewhere)
    with pytest.raises(PermissionError, match="link"):
        private_directory(tmp_path / "sweep" / ".detflow")


# --- 2. sbatch quoting: the launcher's dry run with hostile strings ---------------------------

#: Shell and sbatch metacharacters, quotes, non-ASCII; and the characters that break lines.
PRINTABLE_HOSTILE = " '\"$()`;&|<>\\*?![]{}~#=,:@+-./_é中" + string.ascii_letters
LINE_BREAKERS = "\t\n\r\x00\x0b\x85\u2028"
hostile_text = st.one_of(
    st.text(st.sampled_from(PRINTABLE_HOSTILE), min_size=1, max_size=16),
    st.text(st.sampled_from(PRINTABLE_HOSTILE + LINE_BREAKERS), min_size=1, max_size=16),
)
#: The classics, one by one.
CLASSICS = [
    "a b",
    "it's",
    'say "hi"',
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "x; touch /tmp/pwned",
    "x && reboot",
    "x\ntouch /tmp/pwned",
    "x\rtouch",
    "nul\x00byte",
    "$HOME",
    "*",
    "--partition=evil",
    "#SBATCH --evil",
    "é中",
]
hostile = st.one_of(st.sampled_from(CLASSICS), hostile_text)
STRING_OPTIONS = ("partition", "account", "qos", "mem", "constraint", "exclude")


def printable_line(text: str) -> bool:
    return text.isprintable() and bool(text.strip())


@pytest.fixture(scope="module")
def app() -> Iterator[None]:
    """The example app's config dir, initialised for in-process composition."""
    with isolated_hydra():
        conf.register()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            yield


def _no_task(cfg: DictConfig) -> None:  # the dry run never calls it
    raise AssertionError("a dry run ran the task")


@dataclass
class Rendered:
    script: str
    folder: str
    job_name: str
    array: bool


def render(settings: SlurmSettings, sweep_dir: str, job_name: str, jobs: int = 1) -> Rendered:
    """The sbatch script ``hydra.launcher.dry_run=true`` prints, composed in process."""
    cfg = compose(
        "config",
        overrides=[
            "+experiment=quadratic",
            "hydra/launcher=detflow_slurm",
            f"hydra.sweep.dir={_render(sweep_dir)}",
            f"hydra.job.name={_render(job_name)}",
        ],
        return_hydra_config=True,
    )
    context = HydraContext(
        config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks(cfg)
    )
    trials = SlurmTrials(settings)
    trials.setup(hydra_context=context, task_function=_no_task, config=cfg)
    (script,) = trials.sbatch_scripts([(i, []) for i in range(jobs)])
    folder = Path(str(cfg.hydra.sweep.dir)).absolute() / settings.submitit_folder
    return Rendered(script, str(folder), str(cfg.hydra.job.name), jobs > 1)


def check_script(rendered: Rendered, settings: SlurmSettings) -> None:
    """No line injected; every directive and the command line parse to the intended words."""
    lines = rendered.script.split("\n")
    assert lines[:3] == ["#!/bin/bash", "", "# Parameters"], lines[:3]
    end = lines.index("", 3)
    directives: dict[str, str | None] = {}
    for line in lines[3:end]:
        assert line.startswith("#SBATCH --"), line
        words = shlex.split(line.removeprefix("#SBATCH "))
        assert len(words) == 1, line  # one directive, its value one word
        name, eq, value = words[0].removeprefix("--").partition("=")
        assert re.fullmatch(r"[A-Za-z0-9-]+", name), line
        directives[name] = value if eq else None
    assert lines[end + 1] == "# setup"
    assert lines[end + 2].startswith("export PYTHONPATH=")
    assert lines[end + 3 : end + 3 + len(settings.setup)] == settings.setup
    command = end + 3 + len(settings.setup)
    assert lines[command:] == [
        "",
        "# command",
        "export SUBMITIT_EXECUTOR=slurm",
        lines[command + 3],
        "",
    ], lines[command:]

    # The directives: each option's value intact.
    expected: dict[str, str | None] = {"job-name": rendered.job_name}
    for name in STRING_OPTIONS:
        option = getattr(settings, name)
        if option is not None:
            expected[name] = str(option)
    for key, extra in settings.additional_parameters.items():
        expected[key.replace("_", "-")] = None if extra is True else str(extra)
    pattern = "%A_%a" if rendered.array else "%j"
    folder = rendered.folder.replace("%j", pattern)
    expected["output"] = f"{folder}/{pattern}_0_log.out"
    expected["error"] = f"{folder}/{pattern}_0_log.err"
    for name, intended in expected.items():
        assert directives.get(name, "<missing>") == intended, (name, directives.get(name))

    # The command: srun's options and the python command, word for word.
    python = shlex.split(settings.python) if settings.python else [sys.executable]
    srun_args = settings.parameters(1)["srun_args"]
    assert shlex.split(lines[command + 3]) == [
        "srun",
        "--unbuffered",
        "--output",
        f"{folder}/{pattern}_%t_log.out",
        "--error",
        f"{folder}/{pattern}_%t_log.err",
        *srun_args,
        *["/bin/sh", "-c", SHELL_START],  # SIGUSR2 held while the job starts (detflow's)
        *python,
        *["-S", "-c", BLOCKED_START],
        "-u",
        "-m",
        "submitit.core._submit",
        rendered.folder,
    ]


@dataclass
class Hostile:
    """Which options get which hostile string (None: left as it was)."""

    options: dict[str, str]
    extra_key: str | None
    extra_value: str | bool | int | None
    srun_args: list[str]
    python: str | None
    folder: str | None
    sweep: str
    job_name: str


@st.composite
def hostile_settings(draw: st.DrawFn) -> Hostile:
    names = draw(st.lists(st.sampled_from(STRING_OPTIONS), unique=True, max_size=3))
    # ``${`` would be an OmegaConf interpolation in Hydra's overrides; ``%`` an sbatch pattern.
    path_text = hostile.map(lambda t: t.replace("${", "$ {").replace("%", "_"))
    return Hostile(
        options={name: draw(hostile) for name in names},
        extra_key=draw(st.one_of(st.none(), st.sampled_from(["mail_type", "gres"]), hostile)),
        extra_value=draw(st.one_of(st.just(True), st.integers(0, 9), hostile)),
        srun_args=draw(st.lists(hostile, max_size=2)),
        python=draw(st.one_of(st.none(), hostile, st.just("env -u X 'my python'"))),
        folder=draw(st.one_of(st.none(), path_text.map(lambda t: f"{t}/%j"))),
        sweep=draw(st.one_of(st.just("plain"), path_text)),
        job_name=draw(st.one_of(st.just("train"), path_text)),
    )


def should_refuse(h: Hostile) -> bool:
    """The rule SlurmSettings and the launcher keep (the oracle for refusals)."""
    bad = any(not printable_line(v) for v in h.options.values())
    if h.extra_key is not None:
        # An sbatch option name in lower case, not one detflow writes itself or a prefix of one
        # (sbatch reads an unambiguous prefix as the option).
        name = h.extra_key.replace("_", "-")
        bad |= not re.fullmatch(r"[a-z][a-z0-9_-]*", h.extra_key)
        bad |= any(option.startswith(name) for option in OWNED_OPTIONS)
        bad |= isinstance(h.extra_value, str) and not printable_line(h.extra_value)
    bad |= any(not a.isprintable() for a in h.srun_args)
    if h.python is not None:
        try:
            bad |= not printable_line(h.python) or not shlex.split(h.python)
        except ValueError:
            bad = True
    if h.folder is not None:
        bad |= not printable_line(h.folder)
    return bad or not h.sweep.isprintable() or not h.job_name.isprintable()


REFUSED_KEYS = (
    *(f"hydra.launcher.{name}" for name in STRING_OPTIONS),
    "hydra.launcher.additional_parameters",
    "hydra.launcher.srun_args",
    "hydra.launcher.python",
    "hydra.launcher.submitit_folder",
    "hydra.sweep.dir",
    "hydra.job.name",
)


@settings(
    max_examples=100,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)
@given(hostile_settings(), st.sampled_from([1, 2]))
@example(
    Hostile({"partition": "x\ntouch /tmp/pwned #"}, None, None, [], None, None, "s", "train"), 1
)
@example(Hostile({}, "evil\n#SBATCH --x", "1", [], None, None, "s", "train"), 1)
@example(Hostile({}, "mail_type", "a\nb", [], None, None, "s", "train"), 1)
@example(Hostile({}, None, None, ["$(reboot)", "; rm -rf ~"], None, None, "s", "train"), 2)
@example(Hostile({}, None, None, [], "python; touch /tmp/pwned", None, "s", "train"), 1)
@example(Hostile({}, None, None, [], "python 'unclosed", None, "s", "train"), 1)
@example(Hostile({}, None, None, [], None, "x\ntouch /tmp/pwned #/%j", "s", "train"), 1)
@example(Hostile({}, None, None, [], None, None, "x\ntouch /tmp/pwned #", "train"), 1)
@example(Hostile({}, None, None, [], None, None, "s", "x\ntouch /tmp/pwned #"), 1)
@example(Hostile({"account": "it's $(id) `id`; id"}, None, None, [], None, None, "a b", "j"), 2)
def test_hostile_options_are_refused_or_quoted_in_the_sbatch_script(
    app: None, h: Hostile, jobs: int
) -> None:
    extra = {} if h.extra_key is None else {h.extra_key: h.extra_value}
    values: dict[str, Any] = {
        **h.options,
        "additional_parameters": extra,
        "srun_args": h.srun_args,
        "setup": ["module load cuda"],
        "dry_run": True,
        "gpus_per_node": 0,
    }
    if h.python is not None:
        values["python"] = h.python
    if h.folder is not None:
        values["submitit_folder"] = h.folder
    sweep = str(Path("/tmp/detflow security") / h.sweep.lstrip("/"))
    try:
        settings = settings_from(values)
        rendered = render(settings, sweep, h.job_name, jobs)
    except ConfigError as exc:
        event("refused")
        message = str(exc)
        assert len(message.splitlines()) == 1 and "\n" not in message, message
        assert message.startswith(tuple(f"{key}" for key in REFUSED_KEYS)), message
        assert " is not valid: expected " in message
        assert should_refuse(h), f"refused a safe value: {message}"
        return
    except (HydraException, OmegaConfBaseException):
        event("Hydra's own grammar refused the sweep dir or job name")
        return
    event("rendered")
    assert not should_refuse(h), rendered.script
    check_script(rendered, settings)


def test_the_python_command_is_split_into_words_and_quoted() -> None:
    settings = SlurmSettings(python="singularity exec 'my image.sif' python;id")
    assert settings.python == "singularity exec 'my image.sif' 'python;id'"
    assert shlex.split(settings.python) == ["singularity", "exec", "my image.sif", "python;id"]


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"partition": "gpu\n#SBATCH --uid=0"}, "hydra.launcher.partition"),
        ({"mem": "16G\x00"}, "hydra.launcher.mem"),
        ({"exclude": "node1\rnode2"}, "hydra.launcher.exclude"),
        ({"additional_parameters": {"mail type": "ALL"}}, "hydra.launcher.additional_parameters"),
        ({"additional_parameters": {"x\ny": 1}}, "hydra.launcher.additional_parameters"),
        ({"additional_parameters": {"comment": "a\nb"}}, "hydra.launcher.additional_parameters"),
        ({"additional_parameters": {"comment": None}}, "hydra.launcher.additional_parameters"),
        ({"srun_args": ["--x\n"]}, "hydra.launcher.srun_args"),
        ({"python": "python\n"}, "hydra.launcher.python"),
        ({"python": "'"}, "hydra.launcher.python"),
        ({"python": " "}, "hydra.launcher.python"),
        ({"submitit_folder": "a\nb/%j"}, "hydra.launcher.submitit_folder"),
        ({"tasks_per_node": True}, "hydra.launcher.tasks_per_node"),
        ({"signal_delay_s": "90"}, "hydra.launcher.signal_delay_s"),
    ],
)
def test_each_bad_option_is_named_in_one_line(values: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from(values)
    message = str(info.value)
    assert message.startswith(key) and "\n" not in message, message


def test_setup_lines_are_documented_as_shell() -> None:
    """``setup`` is the one option written as shell: the docstring and README say so."""
    doc = " ".join((SlurmSettings.__doc__ or "").split())
    assert "``setup`` lines are the one exception: they are shell by design" in doc
    readme = " ".join(README.read_text().split())
    assert "`setup` lines are shell by design" in readme


# --- 3. checkpoints: no code from files ---------------------------------------------------------


class _Payload:
    """Pickles as a call of ``target(*args)``: what a malicious checkpoint holds."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.target, self.args)


def _touch_command(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def _checkpoint(tmp_path: Path) -> tuple[CheckpointStore, Path]:
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.save({"batches": 4, "counters": {"batches": 4}}, {"w": [1.0]}, 0.5, True)
    return store, path


@pytest.mark.parametrize(
    ("payload", "refused"),
    [
        (lambda m: _Payload(os.system, _touch_command(m)), "system"),
        (lambda m: _Payload(eval, f"open({str(m)!r}, 'w')"), "builtins.eval"),
        (lambda m: _Payload(exec, f"open({str(m)!r}, 'w')"), "builtins.exec"),
        (lambda m: _Payload(subprocess.call, ["touch", str(m)]), "subprocess.call"),
        (lambda m: [{"deep": (1, _Payload(os.system, _touch_command(m)))}], "system"),
        (lambda m: _Payload(getattr, "text", "upper"), "builtins.getattr"),
    ],
    ids=["os.system", "eval", "exec", "subprocess", "nested", "getattr"],
)
def test_a_reduce_payload_in_trial_pkl_is_refused_and_never_runs(
    tmp_path: Path, payload: Callable[[Path], Any], refused: str
) -> None:
    store, path = _checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    (path / "trial.json").unlink()
    (path / "trial.pkl").write_bytes(pickle.dumps({"w": payload(marker)}))
    with pytest.raises(pickle.UnpicklingError) as info:
        _read_trial_state(path)
    message = str(info.value)
    assert str(path / "trial.pkl") in message and refused in message, message
    assert "\n" not in message
    with pytest.raises(Exception) as loading:  # the store refuses to resume from it too
        store.load()
    assert "trial.pkl" in str(loading.value)
    assert not marker.exists()


def test_counters_and_meta_are_json_and_a_json_state_writes_no_pickle(tmp_path: Path) -> None:
    """A real run through the harness: read what it wrote, don't assume."""
    run = detflow.init(
        {
            "name": "t",
            "hyperparameters": {"global_batch_size": 4},
            "searcher": {"name": "single", "max_length": "6 batches"},
            "min_checkpoint_period": "3 batches",
        },
        run_dir=tmp_path,
    )
    run.fit(_JsonTrial())
    checkpoints = sorted(p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints
    for path in checkpoints:
        meta = json.loads((path / "state.json").read_text())
        assert isinstance(meta, dict)
        assert set(meta["counters"]) >= {"records", "batches", "epochs"}
        assert all(type(v) is int for v in meta["counters"].values())
        assert json.loads((path / "trial.json").read_text())["seen"] == meta["counters"]["batches"]
        assert sorted(p.name for p in path.iterdir()) == ["state.json", "trial.json"]
    for pointer in ("latest.json", "best.json"):
        assert isinstance(json.loads((tmp_path / "checkpoints" / pointer).read_text()), dict)


class _JsonTrial(detflow.Trial):
    def __init__(self) -> None:
        self.seen = 0

    def training_data(self, epoch: int) -> list[list[int]]:
        return [[1, 2, 3, 4]] * 3

    def train_batch(self, batch: Any) -> dict[str, float]:
        self.seen += 1
        return {"loss": 1.0 / self.seen}

    def validation_data(self) -> list[list[int]]:
        return [[1, 2]]

    def evaluate_batch(self, batch: Any) -> dict[str, float]:
        return {"validation_loss": 0.5}

    def batch_size(self, batch: Any) -> int:
        return len(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])


#: Run where torch was never imported, so the store writes trial.pkl for a numpy state.
_NUMPY_ROUND_TRIP = r"""
import collections, json, sys
from pathlib import Path
import numpy as np
from detflow._harness.checkpoint import CheckpointStore

class Custom:
    pass

state = {
    "w": np.arange(6.0).reshape(2, 3),
    "i": np.array([1, 2], dtype=np.int64),
    "o": np.array([1, "a", None], dtype=object),
    "rec": np.zeros(2, dtype=[("x", "f4"), ("y", "i2")]),
    "scalar": np.float32(1.5),
    "ordered": collections.OrderedDict(a=1, b=(2, 3)),
    "set": {1, 2},
    "bytes": b"\x00\xff",
    "complex": 1 + 2j,
}
store = CheckpointStore(Path(sys.argv[1]))
path = store.save({"batches": 3, "counters": {"batches": 3}}, state, 0.25, True)
loaded = store.load().trial_state
same = all(
    np.array_equal(loaded[k], v) and loaded[k].dtype == v.dtype
    if isinstance(v, np.ndarray) else (loaded[k] == v and type(loaded[k]) is type(v))
    for k, v in state.items()
)
try:
    store.save({"batches": 6, "counters": {"batches": 6}}, {"c": Custom()}, 0.5, True)
    refused = None
except TypeError as exc:
    refused = str(exc)
print(json.dumps({
    "files": sorted(p.name for p in path.iterdir()),
    "same": same,
    "torch": "torch" in sys.modules,
    "refused": refused,
    "latest": json.loads((Path(sys.argv[1]) / "latest.json").read_text())["name"],
}))
"""


def test_a_numpy_state_round_trips_through_trial_pkl(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _NUMPY_ROUND_TRIP, str(tmp_path / "checkpoints")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["files"] == ["state.json", "trial.pkl"]
    assert result["same"] is True
    assert result["refused"] is not None and "__main__.Custom" in result["refused"]
    assert "\n" not in result["refused"]
    assert result["latest"] == "0000000003"  # the refused save left the previous checkpoint


def test_a_malicious_torch_checkpoint_is_refused_by_weights_only(tmp_path: Path) -> None:
    import torch

    store, path = _checkpoint(tmp_path)
    marker = tmp_path / "pwned"
    (path / "trial.json").unlink()
    torch.save({"w": _Payload(os.system, _touch_command(marker))}, path / "trial.pt")
    with pytest.raises(pickle.UnpicklingError) as info:
        _read_trial_state(path)
    message = str(info.value)
    assert str(path / "trial.pt") in message and "system" in message and "\n" not in message
    with pytest.raises(Exception, match=r"trial\.pt"):
        store.load()
    assert not marker.exists()


def test_numpy_arrays_and_tensors_round_trip_through_trial_pt(tmp_path: Path) -> None:
    """With torch imported the store writes trial.pt; weights_only must still read numpy."""
    import numpy as np
    import torch

    state: dict[str, Any] = {
        "t": torch.arange(3.0),
        "a": np.arange(4, dtype=np.int32),
        "s": np.float64(2.5),
        "o": collections.OrderedDict(x=torch.ones(2)),
    }
    store = CheckpointStore(tmp_path / "checkpoints")
    path = store.save({"batches": 2, "counters": {"batches": 2}}, state, None, True)
    assert sorted(p.name for p in path.iterdir()) == ["state.json", "trial.pt"]
    loaded = _read_trial_state(path)
    assert torch.equal(loaded["t"], state["t"])
    assert np.array_equal(loaded["a"], state["a"]) and loaded["a"].dtype == np.int32
    assert loaded["s"] == 2.5 and torch.equal(loaded["o"]["x"], torch.ones(2))
