"""A dependency-free trial: noisy gradient descent on a quadratic, a real learning curve.

Each batch holds ``per_slot_batch_size`` noisy samples of the gradient of
``f(w) = sum_i c_i (w_i - 1)^2``; the optimizer steps once per ``aggregation_frequency``
batches. Hyperparameters: ``lr`` (required), ``dims`` (8), ``noise`` (1.0),
``records_per_epoch`` of the synthetic data set (256), ``fail_at_batch`` (make the loss nan
there, to test failure handling), ``seconds_per_batch`` (sleep, to play a slower model in
pre-emption demos and tests).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

from detflow import Run, Trial


class QuadraticTrial(Trial):
    """Noisy quadratic: validation loss falls as training goes on, faster with a good lr."""

    def __init__(self, run: Run) -> None:
        hp = run.hparams
        self.run = run
        self.lr = float(hp["lr"])
        self.dims = int(hp.get("dims", 8))
        self.noise = float(hp.get("noise", 1.0))
        self.records = int(hp.get("records_per_epoch", 256))
        self.fail_at = int(hp.get("fail_at_batch", 0))
        self.seconds_per_batch = float(hp.get("seconds_per_batch", 0.0))
        self.curvature = [1.0 + i / max(1, self.dims - 1) for i in range(self.dims)]
        self.w = [0.0] * self.dims
        self.grad = [0.0] * self.dims
        self.pending = 0
        self.batches = 0

    def training_data(self, epoch: int) -> Iterable[Any]:
        rng = random.Random(f"{self.run.seed}:{epoch}")
        size = self.run.per_slot_batch_size
        sizes = [size] * (self.records // size) + (
            [self.records % size] if self.records % size else []
        )
        return [[rng.gauss(0.0, self.noise) for _ in range(n)] for n in sizes]

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        self.batches += 1
        if self.seconds_per_batch:
            time.sleep(self.seconds_per_batch)
        noise = sum(batch) / len(batch)
        loss = self._loss()
        if self.fail_at and self.batches >= self.fail_at:
            return {"loss": math.nan}
        for i, c in enumerate(self.curvature):
            self.grad[i] += 2 * c * (self.w[i] - 1.0) + noise
        self.pending += 1
        if self.pending == self.run.aggregation_frequency:
            for i in range(self.dims):
                self.w[i] -= self.lr * self.grad[i] / self.pending
                self.grad[i] = 0.0
            self.pending = 0
        return {"loss": loss + noise * noise}

    def _loss(self) -> float:
        return sum(c * (w - 1.0) ** 2 for c, w in zip(self.curvature, self.w, strict=False))

    def validation_data(self) -> Iterable[Any]:
        return [[0.0] * 4, [0.0] * 4, [0.0] * 2]

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        loss = self._loss()
        return {"loss": loss if math.isfinite(loss) else 1e300}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w, "grad": self.grad, "pending": self.pending, "batches": self.batches}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = [float(x) for x in state["w"]]
        self.grad = [float(x) for x in state["grad"]]
        self.pending = int(state["pending"])
        self.batches = int(state["batches"])
