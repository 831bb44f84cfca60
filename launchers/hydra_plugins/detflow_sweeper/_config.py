"""The sweeper's config schema, in a module Hydra's plugin scanner does not re-execute."""

# No `from __future__ import annotations`: OmegaConf reads these annotations at run time.
from dataclasses import dataclass


@dataclass
class DetflowSweeperConf:
    """The sweeper takes its settings from the experiment's ``searcher`` section."""

    _target_: str = "hydra_plugins.detflow_sweeper.sweeper.DetflowSweeper"
