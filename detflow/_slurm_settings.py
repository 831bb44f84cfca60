"""``hydra/launcher=detflow_slurm``'s options: one list, the plugin's schema and the launcher's.

Light on purpose (no submitit): Hydra's plugin discovery imports it.
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations at run time.
from dataclasses import dataclass, field
from typing import Any

from detflow._errors import ConfigError

__all__ = ["SlurmSettings"]


@dataclass
class SlurmSettings:
    """The launcher's options (``hydra.launcher.*``), checked when the launcher is made.

    The plugin's config schema is this class plus ``_target_``: the options are listed once.

    ``tasks_per_node`` and ``gpus_per_node`` left unset follow ``resources.slots_per_trial``
    (one task, and one GPU, per slot); set ``gpus_per_node=0`` on a cluster without GPUs.
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
        for name in ("time", "nodes", "array_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"hydra.launcher.{name}", value, "a positive integer")
        for name in ("tasks_per_node", "gpus_per_node", "gpus_per_task", "cpus_per_task"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"hydra.launcher.{name}", value, "null or an integer >= 0")
        for name in ("max_requeues", "signal_delay_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"hydra.launcher.{name}", getattr(self, name), "0 or more")
        for name in ("partition", "account", "qos", "mem", "constraint", "exclude"):
            value = getattr(self, name)
            if value is not None and ("\n" in str(value) or not str(value).strip()):
                raise ConfigError(f"hydra.launcher.{name}", value, "a non-empty single line")

    def parameters(self, slots: int) -> dict[str, Any]:
        """submitit's ``SlurmExecutor`` parameters for a trial with ``slots`` slots."""
        tasks = self.tasks_per_node
        if tasks is None:
            tasks = max(1, slots // self.nodes)
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
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params
