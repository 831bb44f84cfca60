"""``hydra/launcher=detflow_slurm``'s options: one list, the plugin's schema and the launcher's.

Light on purpose (no submitit): Hydra's plugin discovery imports it.
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations at run time.
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from detflow._core.errors import ConfigError

__all__ = ["SlurmSettings"]


@dataclass
class SlurmSettings:
    """The launcher's options (``hydra.launcher.*``), checked when the launcher is made.

    The plugin's config schema is this class plus ``_target_``: the options are listed once.

    ``tasks_per_node`` and ``gpus_per_node`` left unset follow ``resources.slots_per_trial``
    (one task, and one GPU, per slot); set ``gpus_per_node=0`` on a cluster without GPUs.

    What reaches the sbatch script is quoted or refused, never run by the shell: every string
    that goes into an ``#SBATCH`` line (``partition``, ``account``, ``qos``, ``mem``,
    ``constraint``, ``exclude``, ``additional_parameters`` values) and every ``srun_args``
    entry must be one printable line (no newline, carriage return, NUL or other control
    character) and is shell-quoted; ``additional_parameters`` keys are sbatch option names,
    ``[a-z][a-z0-9_-]*`` without leading dashes (``_`` is written ``-``), and never an option
    detflow writes itself (:data:`OWNED_OPTIONS`, or a prefix sbatch would read as one: it
    takes ``--arr`` for ``--array``): each of those has a launcher option of its own.
    ``time`` is in minutes, at most :data:`MAX_TIME_MINUTES` (365 days; Slurm's own
    ``INFINITE`` is the partition's limit, not a number). ``python`` is a command with
    arguments, split into words as a shell
    would (quotes honoured) and written back quoted: no variables, ``~``, globs or operators
    are expanded (write ``${oc.env:HOME}/venv/bin/python``, which OmegaConf resolves).
    ``setup`` lines are the one exception: they are shell by design, written as given.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: int = 60
    nodes: int = 1
    tasks_per_node: int | None = None
    gpus_per_node: int | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    wckey: str | None = None
    setup: list[str] = field(default_factory=list)
    srun_args: list[str] = field(default_factory=list)
    use_srun: bool = True
    python: str | None = None
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    array_parallelism: int = 256
    max_requeues: int = 100
    signal_delay_s: int = 90
    dry_run: bool = False
    submitit_folder: str = ".detflow/slurm/%j"

    def __post_init__(self) -> None:
        if not _is_int(self.time) or not 1 <= self.time <= MAX_TIME_MINUTES:
            raise ConfigError(
                "hydra.launcher.time",
                self.time,
                f"a positive integer of minutes, at most {MAX_TIME_MINUTES} (365 days)",
            )
        for name in ("nodes", "array_parallelism"):
            value = getattr(self, name)
            if not _is_int(value) or not 1 <= value <= _MAX_COUNT:
                raise ConfigError(
                    f"hydra.launcher.{name}", value, f"a positive integer, at most {_MAX_COUNT}"
                )
        for name in ("tasks_per_node", "gpus_per_node", "gpus_per_task", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or not 0 <= value <= _MAX_COUNT):
                raise ConfigError(
                    f"hydra.launcher.{name}",
                    value,
                    f"null or an integer >= 0, at most {_MAX_COUNT}",
                )
        for name, most in (("max_requeues", _MAX_COUNT), ("signal_delay_s", _MAX_SIGNAL_DELAY)):
            value = getattr(self, name)
            if not _is_int(value) or not 0 <= value <= most:
                raise ConfigError(
                    f"hydra.launcher.{name}", value, f"an integer, 0 or more, at most {most}"
                )
        for name in ("use_srun", "dry_run"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"hydra.launcher.{name}", getattr(self, name), "true or false")
        for name in ("partition", "account", "qos", "mem", "constraint", "exclude", "wckey"):
            value = getattr(self, name)
            if value is not None:
                check_line(f"hydra.launcher.{name}", value)
        check_line("hydra.launcher.submitit_folder", self.submitit_folder)
        for name in ("setup", "srun_args"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"hydra.launcher.{name}", value, "a list of strings")
        for index, arg in enumerate(self.srun_args):
            check_line(f"hydra.launcher.srun_args[{index}]", arg, empty=True)
        if self.python is not None:
            self.python = _command(self.python)
        if not isinstance(self.additional_parameters, dict):
            raise ConfigError(
                "hydra.launcher.additional_parameters",
                self.additional_parameters,
                "a mapping of sbatch option names to values",
            )
        for key, value in self.additional_parameters.items():
            where = f"hydra.launcher.additional_parameters.{key}"
            check_option_name(key)
            if value is True or (_is_int(value) and not isinstance(value, bool)):
                continue
            if isinstance(value, float) and math.isfinite(value):
                continue
            if not isinstance(value, str):
                raise ConfigError(where, value, "a string, a number, or true for a bare flag")
            check_line(where, value)

    def parameters(self, slots: int) -> dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters for a trial with ``slots`` slots: one task
        per slot, as many on each node, or a :class:`ConfigError` naming the key to change.

        >>> SlurmSettings(nodes=2).parameters(4)["ntasks_per_node"]
        2
        >>> SlurmSettings(nodes=2).parameters(3)
        Traceback (most recent call last):
        ...
        detflow._core.errors.ConfigError: hydra.launcher.nodes = 2 is not valid: expected a \
divisor of resources.slots_per_trial (3): one task per slot, as many on each node
        """
        tasks = self.tasks_per_node
        if tasks is None:
            if slots % self.nodes:
                raise ConfigError(
                    "hydra.launcher.nodes",
                    self.nodes,
                    f"a divisor of resources.slots_per_trial ({slots}): one task per slot, "
                    "as many on each node",
                )
            tasks = slots // self.nodes
        elif tasks * self.nodes != slots:
            raise ConfigError(
                "hydra.launcher.tasks_per_node",
                tasks,
                f"resources.slots_per_trial ({slots}) / hydra.launcher.nodes ({self.nodes}): "
                "one task per slot",
            )
        gpus = self.gpus_per_node
        if gpus is None and self.gpus_per_task is None:
            gpus = tasks
        srun_args = list(self.srun_args)
        if tasks * self.nodes > 1 and not any(
            a.startswith("--kill-on-bad-exit") for a in srun_args
        ):
            srun_args.append("--kill-on-bad-exit=1")  # one slot failed: end the others too
        params: dict[str, Any] = {
            "time": self.time,
            "nodes": self.nodes,
            "ntasks_per_node": tasks,
            "signal_delay_s": self.signal_delay_s,
            "array_parallelism": self.array_parallelism,
            "use_srun": self.use_srun,
            "setup": list(self.setup),
            "srun_args": srun_args,
            "additional_parameters": dict(self.additional_parameters),
        }
        optional = {
            "partition": self.partition,
            "account": self.account,
            "qos": self.qos,
            "gpus_per_node": gpus or None,
            "gpus_per_task": self.gpus_per_task,
            "cpus_per_task": self.cpus_per_task,
            "mem": self.mem,
            "constraint": self.constraint,
            "exclude": self.exclude,
            "wckey": self.wckey,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


#: sbatch option names as ``additional_parameters`` keys (submitit writes ``_`` as ``-``):
#: sbatch's long options are lower case and begin with a letter.
_OPTION = re.compile(r"[a-z][a-z0-9_-]*")

#: The longest ``hydra.launcher.time``, in minutes: 365 days. Slurm takes larger numbers but
#: wraps them (``--time=600000000`` is read as 18984 days); its ``INFINITE`` is no number.
MAX_TIME_MINUTES = 365 * 24 * 60
#: Slurm keeps counts (nodes, tasks, GPUs, CPUs, array throttles) in 32 bits.
_MAX_COUNT = 2**31 - 1
#: ``--signal=USR2@N``: sbatch takes a warning time of at most 65535 seconds.
_MAX_SIGNAL_DELAY = 65535

_LOGS = "hydra.launcher.submitit_folder (the jobs' logs are written there)"
#: The sbatch options detflow (or submitit for it) writes itself, each with the launcher
#: option to set instead. Given in ``additional_parameters`` they would be written a second
#: time or replace detflow's: ``array`` would run copies of a trial, ``signal`` end
#: checkpoint-on-pre-emption, ``output``/``error``/``open-mode`` move or truncate the log
#: detflow reads, ``no-requeue`` make a pre-empted job unable to requeue itself.
OWNED_OPTIONS: dict[str, str] = {
    "array": "searcher.max_concurrent_trials and hydra.launcher.array_parallelism",
    "signal": "hydra.launcher.signal_delay_s",
    "output": _LOGS,
    "error": _LOGS,
    "open-mode": _LOGS,
    "job-name": "hydra.job.name",
    "requeue": "hydra.launcher.max_requeues",
    "no-requeue": "hydra.launcher.max_requeues=0",
    "time": "hydra.launcher.time",
    "nodes": "hydra.launcher.nodes",
    "ntasks-per-node": "hydra.launcher.tasks_per_node",
    "ntasks": "hydra.launcher.tasks_per_node and hydra.launcher.nodes",
    "gpus-per-node": "hydra.launcher.gpus_per_node",
    "gpus-per-task": "hydra.launcher.gpus_per_task",
    "gpus": "hydra.launcher.gpus_per_node and hydra.launcher.nodes",
    "cpus-per-task": "hydra.launcher.cpus_per_task",
    "partition": "hydra.launcher.partition",
    "account": "hydra.launcher.account",
    "qos": "hydra.launcher.qos",
    "mem": "hydra.launcher.mem",
    "constraint": "hydra.launcher.constraint",
    "exclude": "hydra.launcher.exclude",
    "wckey": "hydra.launcher.wckey",
}


def check_option_name(key: Any) -> None:
    """A :class:`ConfigError` unless ``key`` may be an ``additional_parameters`` key.

    Refused: anything but a lower-case sbatch option name written without leading dashes,
    in either spelling (``job_name`` and ``job-name``), that names one of
    :data:`OWNED_OPTIONS` or abbreviates one (sbatch reads ``--sig`` as ``--signal``).

    >>> check_option_name("mail_type")
    >>> try:
    ...     check_option_name("sig")
    ... except ConfigError as exc:
    ...     print(str(exc).split("itself: ")[1])
    --sig abbreviates --signal, detflow's, use hydra.launcher.signal_delay_s instead
    """
    where = "hydra.launcher.additional_parameters"
    if not isinstance(key, str):
        raise ConfigError(where, key, "sbatch option names (strings, e.g. mail_type)")
    bare = key.lstrip("-")
    name = bare.replace("_", "-")
    owned = [o for o in OWNED_OPTIONS if o == name] or [
        o for o in OWNED_OPTIONS if name and o.startswith(name)
    ]
    if owned:
        options = " or ".join(f"--{o}" for o in owned)
        said = f"{options} is" if owned == [name] else f"--{name} abbreviates {options},"
        fix = " or ".join(dict.fromkeys(OWNED_OPTIONS[o] for o in owned))
        dashes = " (and write option names without leading dashes)" if bare != key else ""
        raise ConfigError(
            where,
            key,
            f"an sbatch option detflow does not write itself: {said} detflow's, "
            f"use {fix} instead{dashes}",
        )
    if bare != key and _OPTION.fullmatch(bare):
        raise ConfigError(
            where, key, f"sbatch option names without leading dashes: {bare}, not {key}"
        )
    if not _OPTION.fullmatch(key):
        raise ConfigError(
            where,
            key,
            "sbatch option names in lower case: a letter, then letters, digits, '_' and '-' "
            "(e.g. mail_type), without leading dashes",
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_line(key: str, value: Any, *, empty: bool = False) -> None:
    """A :class:`ConfigError` naming ``key`` unless ``value`` is one printable line.

    A newline in a value would end its ``#SBATCH`` line and start a line the shell runs;
    ``str.isprintable`` refuses every line break and control character (NUL included).
    """
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable() or (not empty and not text.strip()):
        expected = "a single line of printable characters (no newline or control character)"
        raise ConfigError(key, value, expected if empty else f"a non-empty {expected[2:]}")


def _command(python: Any) -> str:
    """``python`` split into words as a shell would and written back quoted (``shlex``)."""
    key = "hydra.launcher.python"
    check_line(key, python)
    try:
        words = shlex.split(str(python))
    except ValueError as exc:  # No closing quotation, ...
        raise ConfigError(key, python, f"a command and its arguments ({exc})") from None
    if not words:
        raise ConfigError(key, python, "a command and its arguments")
    return shlex.join(words)
