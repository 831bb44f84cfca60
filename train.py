"""The example entry point: ``python train.py +experiment=digits_mlp``.

The same script, unchanged, runs locally, in a sweep (``-m``) and on Slurm.
"""

from __future__ import annotations

from typing import Any

import conf
import detflow
from trials import build_trial

conf.register()


@detflow.main(config_path="conf", config_name="config")
def train(cfg: Any) -> float | None:
    """Build the trial the config names and train it for the configured length."""
    run = detflow.init(cfg, hparams={"momentum": 0.9})
    result = run.fit(build_trial(cfg.trial, run))
    return result.validation.get(run.experiment.searcher.metric)


if __name__ == "__main__":
    train()
