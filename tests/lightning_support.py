"""A tiny LightningModule under detflow, for the Lightning tests: importable (the in-process
tests) and a training script (``python -m tests.lightning_support +experiment=tiny_lightning``).

Linear regression on 40 fixed records with dropout, SGD with momentum and a step-wise
learning-rate schedule (state in the model, the optimizer, the scheduler and torch's RNG:
what an exact resume must restore); it logs ``val_loss`` in ``validation_step``.
Hyperparameters: ``lr``, ``seconds_per_batch`` (sleep, to be killed mid-run).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import detflow
from detflow import ExperimentConfig, FitResult, Run, SearcherConfig
from detflow.lightning import fit

REPO = Path(__file__).resolve().parent.parent
SCRIPT = [sys.executable, "-m", "tests.lightning_support", "+experiment=tiny_lightning"]
#: 40 records, 4 a batch: 10 batches an epoch.
RECORDS = 40
QUIET = {"enable_model_summary": False}


def script_env(**extra: str) -> dict[str, str]:
    """The environment a test runs the script in (the repository and its Hydra plugins)."""
    path = os.pathsep.join([str(REPO), str(REPO / "launchers")])
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1", **extra}


class TinyRegression(pl.LightningModule):
    """``y = x @ w`` with dropout on the inputs; logs ``val_loss``."""

    def __init__(self, lr: float, seconds_per_batch: float = 0.0) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.dropout = torch.nn.Dropout(0.2)
        self.lr, self.seconds_per_batch = lr, seconds_per_batch
        self.optimizer_steps = 0
        self.losses: list[float] = []  # each batch's, as computed

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.seconds_per_batch:
            time.sleep(self.seconds_per_batch)
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(self.dropout(x)), y)
        self.losses.append(loss.item())
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        self.optimizer_steps += 1
        super().optimizer_step(*args, **kwargs)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("val_loss", loss, sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.5)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def loaders(run: Run) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """Shuffled training data (``run.per_slot_batch_size`` a batch) and validation data."""
    draw = torch.Generator().manual_seed(0)
    x = torch.randn(RECORDS, 3, generator=draw)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(RECORDS, 1, generator=draw)
    train = DataLoader(TensorDataset(x, y), batch_size=run.per_slot_batch_size, shuffle=True)
    return train, DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)


def train(run: Run) -> FitResult:
    """Build the module (seeded) and train it with ``detflow.lightning.fit``."""
    torch.manual_seed(run.seed)
    hp = run.hparams
    module = TinyRegression(float(hp["lr"]), float(hp.get("seconds_per_batch", 0.0)))
    train_data, validation_data = loaders(run)
    return fit(run, module, train_data, validation_data, **QUIET)


def experiment(**overrides: Any) -> ExperimentConfig:
    """The tests' experiment: 30 batches, validations every 10, checkpoints every 5."""
    values: dict[str, Any] = {
        "name": "tiny_lightning",
        "hyperparameters": {"global_batch_size": 4, "lr": 0.05, "seconds_per_batch": 0.0},
        "searcher": SearcherConfig(metric="val_loss", max_length="30 batches"),
        "min_validation_period": "10 batches",
        "min_checkpoint_period": "5 batches",
        **overrides,
    }
    return ExperimentConfig(**values)


def main() -> None:
    """``python -m tests.lightning_support +experiment=tiny_lightning``.

    The Hydra app is made here, not at import: ``@detflow.main`` (Hydra's ``main``) sets
    Hydra's process-wide version base when it decorates, which would change defaults such as
    ``hydra.job.chdir`` for every later Hydra app of a test process that imports this module.
    """

    @detflow.main()
    def app(cfg: Any) -> float | None:
        run = detflow.init(cfg)
        return train(run).validation.get(run.experiment.searcher.metric)

    detflow.register_experiment("tiny_lightning", experiment())
    app()


if __name__ == "__main__":
    main()
