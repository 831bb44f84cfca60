"""The ``digits`` example: an MLP on scikit-learn's bundled 8x8 digits (no download)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from detflow import Run
from detflow.pytorch import TorchTrial, accuracy


def digits_datasets(
    seed: int, validation_share: float = 0.2
) -> tuple[TensorDataset, TensorDataset]:
    """Train and validation sets; the split is fixed by ``seed``."""
    images, labels = load_digits(return_X_y=True)
    inputs = torch.tensor(images / 16.0, dtype=torch.float32)
    targets = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(order) * validation_share)
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(inputs[train], targets[train]), TensorDataset(inputs[val], targets[val])


class DigitsTrial(TorchTrial):
    """:class:`TorchTrial` with ``seconds_per_batch`` (a slower model, for pre-emption demos)."""

    seconds_per_batch = 0.0

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        if self.seconds_per_batch:
            time.sleep(self.seconds_per_batch)
        return super().train_batch(batch)


def build_digits_trial(run: Run) -> TorchTrial:
    """An MLP with ``hidden`` units trained with SGD (``lr``, ``momentum``)."""
    hp = run.hparams
    train, val = digits_datasets(run.seed)
    hidden = int(hp.get("hidden", 128))
    torch.manual_seed(run.seed)  # torch was imported after init(): seed the weights here
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=float(hp["lr"]), momentum=float(hp.get("momentum", 0.0))
    )
    trial = DigitsTrial(
        run, model, optimizer, train, val, nn.functional.cross_entropy, metrics_fn=accuracy
    )
    trial.seconds_per_batch = float(hp.get("seconds_per_batch", 0.0))
    return trial
