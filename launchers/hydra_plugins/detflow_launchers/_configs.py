"""Launcher config schemas, in a module Hydra's plugin scanner does not re-execute.

(The scanner re-runs every module of ``hydra_plugins`` whose name does not start with
``_``; a dataclass defined there would become a new class, and configs typed with the old
one would no longer pickle.)
"""

# No `from __future__ import annotations`: OmegaConf reads these annotations at run time.
from dataclasses import dataclass, field

from detflow._launch.slurm_settings import SlurmSettings


@dataclass
class DetflowLocalConf:
    """``max_parallel``: jobs at once (0: the sweep decides); ``gpus``: ids to hand out;
    ``start_method``: ``fork_server`` (fast) or ``spawn`` (a fresh interpreter per trial);
    ``preload``: modules the fork server imports before forking, besides the task's own."""

    _target_: str = "hydra_plugins.detflow_launchers.local.DetflowLocalLauncher"
    max_parallel: int = 0
    gpus: list[int] = field(default_factory=list)
    gpus_per_trial: int = 0
    start_method: str = "fork_server"
    preload: list[str] = field(default_factory=list)


@dataclass
class DetflowSlurmConf(SlurmSettings):
    """The options of :class:`detflow._launch.slurm_settings.SlurmSettings`, with Hydra's target."""

    _target_: str = "hydra_plugins.detflow_launchers.slurm.DetflowSlurmLauncher"
