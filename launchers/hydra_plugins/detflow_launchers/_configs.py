"""Launcher config schemas, in a module Hydra's plugin scanner does not re-execute.

(The scanner re-runs every module of ``hydra_plugins`` whose name does not start with
``_``; a dataclass defined there would become a new class, and configs typed with the old
one would no longer pickle.)
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations at run time.
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DetflowLocalConf:
    """``max_parallel``: jobs at once (0: the sweep decides); ``gpus``: ids to hand out."""

    _target_: str = "hydra_plugins.detflow_launchers.local.DetflowLocalLauncher"
    max_parallel: int = 0
    gpus: list[int] = field(default_factory=list)
    gpus_per_trial: int = 0


@dataclass
class DetflowSlurmConf:
    """Slurm through submitit; unset ``tasks_per_node``/``gpus_per_node`` follow
    ``resources.slots_per_trial``. ``time`` is in minutes. ``dry_run`` prints the sbatch
    script(s) and submits nothing. ``max_requeues`` bounds pre-emption requeues."""

    _target_: str = "hydra_plugins.detflow_launchers.slurm.DetflowSlurmLauncher"
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
