"""detflow's Hydra launcher plugins: ``detflow_local`` (and ``detflow_slurm``)."""
