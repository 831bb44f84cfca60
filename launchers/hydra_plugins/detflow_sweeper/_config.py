"""The sweeper's config schema, in a module Hydra's plugin scanner does not re-execute."""

# No `from __future__ import annotations`: OmegaConf reads these annotations at run time.
from dataclasses import dataclass, field

from detflow._hydra.detach import DriverSettings


@dataclass
class DetflowSweeperConf:
    """The sweeper takes its settings from the experiment's ``searcher`` section;
    ``detach``: run the driver as a Slurm job of its own (``driver``: that job's request)."""

    _target_: str = "hydra_plugins.detflow_sweeper.sweeper.DetflowSweeper"
    detach: bool = False
    driver: DriverSettings = field(default_factory=DriverSettings)
