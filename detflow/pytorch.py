"""PyTorch helper: a :class:`~detflow.Trial` from a model, an optimizer and datasets.

Imported only when used (``from detflow.pytorch import TorchTrial``); the core of detflow
does not need torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from detflow._run import Run
from detflow._trial import Trial

__all__ = ["TorchTrial", "accuracy"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricsFn = Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Share of rows whose arg-max output is the target.

    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    {'accuracy': 0.5}
    """
    return {"accuracy": (outputs.argmax(dim=-1) == targets).float().mean().item()}


class TorchTrial(Trial):
    """Trains ``model`` with ``optimizer`` on ``(inputs, targets)`` datasets.

    The optimizer steps once every ``aggregation_frequency`` batches with the gradients
    averaged over them; the learning-rate ``scheduler`` (if any) steps with it. Each epoch's
    shuffle is seeded by the experiment's seed and the epoch, so a resumed run sees the same
    batches as an uninterrupted one.

    Examples
    --------
    >>> import tempfile
    >>> import detflow
    >>> from torch.utils.data import TensorDataset
    >>> run = detflow.init({"hyperparameters": {"global_batch_size": 4},
    ...                     "searcher": {"max_length": "3 batches"}}, run_dir=tempfile.mkdtemp())
    >>> data = TensorDataset(torch.randn(12, 3), torch.randint(0, 2, (12,)))
    >>> model = nn.Linear(3, 2)
    >>> trial = TorchTrial(run, model, torch.optim.SGD(model.parameters(), lr=0.1), data, data,
    ...                    nn.functional.cross_entropy, metrics_fn=accuracy)
    >>> run.fit(trial).counters.batches
    3
    """

    def __init__(
        self,
        run: Run,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_data: Dataset[Any],
        validation_data: Dataset[Any],
        loss_fn: LossFn,
        *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        metrics_fn: MetricsFn | None = None,
        device: str | torch.device | None = None,
        num_workers: int = 0,
    ) -> None:
        self.run = run
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_dataset = train_data
        self.validation_dataset = validation_data
        self.loss_fn = loss_fn
        self.metrics_fn = metrics_fn
        self.num_workers = num_workers
        self._pending = 0  # batches whose gradients wait for the next optimizer step

    def _loader(self, dataset: Dataset[Any], shuffle: bool, epoch: int) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(self.run.seed * 1_000_003 + epoch)
        return DataLoader(
            dataset,
            batch_size=self.run.per_slot_batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
        )

    def training_data(self, epoch: int) -> Iterable[Any]:
        return self._loader(self.train_dataset, shuffle=True, epoch=epoch)

    def validation_data(self) -> Iterable[Any]:
        return self._loader(self.validation_dataset, shuffle=False, epoch=0)

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        inputs, targets = (t.to(self.device, non_blocking=True) for t in batch)
        self.model.train()
        outputs = self.model(inputs)
        loss = self.loss_fn(outputs, targets)
        (loss / self.run.aggregation_frequency).backward()  # type: ignore[no-untyped-call]
        self._pending += 1
        if self._pending == self.run.aggregation_frequency:
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.scheduler is not None:
                self.scheduler.step()
            self._pending = 0
        return {"loss": loss.item()}

    @torch.no_grad()
    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        inputs, targets = (t.to(self.device, non_blocking=True) for t in batch)
        self.model.eval()
        outputs = self.model(inputs)
        metrics = {"loss": self.loss_fn(outputs, targets).item()}
        if self.metrics_fn is not None:
            metrics.update(self.metrics_fn(outputs, targets))
        return metrics

    def batch_size(self, batch: Any) -> int:
        return len(batch[0])

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "pending": self._pending,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._pending = int(state.get("pending", 0))
        torch.set_rng_state(state["torch_rng"])
