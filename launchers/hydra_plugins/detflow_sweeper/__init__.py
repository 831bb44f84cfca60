"""detflow's Hydra sweeper plugin: ``hydra/sweeper=detflow``."""
