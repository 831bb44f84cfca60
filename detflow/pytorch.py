"""PyTorch helper: a :class:`~detflow.Trial` from a model, an optimizer and datasets.

Imported only when used (``from detflow.pytorch import TorchTrial``); the core of detflow
does not need torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from detflow._harness.run import Run
from detflow._harness.trial import Trial

__all__ = ["TorchCollective", "TorchTrial", "accuracy", "init_distributed"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricsFn = Callable[[torch.Tensor, torch.Tensor], Mapping[str, float]]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Share of rows whose arg-max output is the target.

    >>> accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1]))
    {'accuracy': 0.5}
    """
    return {"accuracy": (outputs.argmax(dim=-1) == targets).float().mean().item()}


class TorchCollective:
    """:class:`~detflow._harness.collective.Collective` over ``torch.distributed``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()

    def any(self, flag: bool) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def sum(self, values: Sequence[float]) -> list[float]:
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(x) for x in tensor.tolist()]


def init_distributed(run: Run) -> torch.device:
    """Join the trial's process group (``RANK``/``WORLD_SIZE`` from the launcher) once.

    Backend ``nccl`` with GPUs, ``gloo`` without; returns this process's device and sets
    ``run.collective`` so the harness reduces counts and metrics over every slot.
    """
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if run.world_size > 1:
        if not dist.is_initialized():
            dist.init_process_group(
                backend="nccl" if device.type == "cuda" else "gloo",
                init_method="env://",
                rank=run.rank,
                world_size=run.world_size,
            )
        run.collective = TorchCollective(device)
    return device


class TorchTrial(Trial):
    """Trains ``model`` with ``optimizer`` on ``(inputs, targets)`` datasets.

    The optimizer steps once every ``aggregation_frequency`` batches with the gradients
    averaged over them; the learning-rate ``scheduler`` (if any) steps with it. Each epoch's
    shuffle is seeded by the experiment's seed and the epoch, so a resumed run sees the same
    batches as an uninterrupted one. With ``resources.slots_per_trial > 1`` the same code
    runs as one process per slot: the model is wrapped in ``DistributedDataParallel``, each
    slot takes its share of every global batch, and gradients are averaged over slots.

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
        self.device = torch.device(device) if device is not None else init_distributed(run)
        self.module = model.to(self.device)
        self.model: nn.Module = self.module
        if run.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids)
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_dataset = train_data
        self.validation_dataset = validation_data
        self.loss_fn = loss_fn
        self.metrics_fn = metrics_fn
        self.num_workers = num_workers
        self._pending = 0  # batches whose gradients wait for the next optimizer step

    def training_data(self, epoch: int) -> Iterable[Any]:
        # One permutation per (seed, epoch), dealt to the slots in turn: with N slots, global
        # batch i holds the same records as batch i of a one-slot run.
        sampler: DistributedSampler[Any] = DistributedSampler(
            self.train_dataset,
            self.run.world_size,
            self.run.rank,
            shuffle=True,
            seed=self.run.seed,
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            self.train_dataset,
            batch_size=self.run.per_slot_batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
        )

    def validation_data(self) -> Iterable[Any]:
        # Every record exactly once over the slots (no padding): the reduced metric is exact.
        shard: Dataset[Any] = self.validation_dataset
        if self.run.world_size > 1:
            size = len(shard)  # type: ignore[arg-type]
            shard = Subset(shard, list(range(self.run.rank, size, self.run.world_size)))
        return DataLoader(
            shard, batch_size=self.run.per_slot_batch_size, num_workers=self.num_workers
        )

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        inputs, targets = (t.to(self.device, non_blocking=True) for t in batch)
        self.model.train()
        syncs = self._pending + 1 == self.run.aggregation_frequency
        ddp = self.model if isinstance(self.model, DistributedDataParallel) else None
        # Gradients are all-reduced over slots only on the batch that steps the optimizer.
        with ddp.no_sync() if ddp is not None and not syncs else nullcontext():
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
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "pending": self._pending,
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self._pending = int(state.get("pending", 0))
        torch.set_rng_state(state["torch_rng"])
