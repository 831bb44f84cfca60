"""The trial protocol: what a user's training code gives the harness (no torch here)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sized
from typing import Any

__all__ = ["Trial", "batch_size", "records_in"]


class Trial(ABC):
    """A model, its data and how to train and evaluate it on one batch.

    Implement :meth:`training_data`, :meth:`train_batch`, :meth:`state_dict` and
    :meth:`load_state_dict`; implement :meth:`validation_data` and :meth:`evaluate_batch`
    (the harness aggregates and counts them) or override :meth:`evaluate` yourself.

    Examples
    --------
    >>> class Counter(Trial):
    ...     def __init__(self): self.total = 0.0
    ...     def training_data(self, epoch): return [[1.0, 2.0], [3.0]]
    ...     def train_batch(self, batch):
    ...         self.total += sum(batch)
    ...         return {"loss": 1.0 / self.total}
    ...     def validation_data(self): return [[0.0]]
    ...     def evaluate_batch(self, batch): return {"loss": 1.0 / self.total}
    ...     def state_dict(self): return {"total": self.total}
    ...     def load_state_dict(self, state): self.total = state["total"]
    >>> Counter().epoch_length()
    2
    """

    @abstractmethod
    def training_data(self, epoch: int) -> Iterable[Any]:
        """One pass over the training data; its order may depend only on the seed and ``epoch``."""

    @abstractmethod
    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        """Train on one batch; return metrics including ``loss`` (a number)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training exactly (weights, optimizer, RNG)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def validation_data(self) -> Iterable[Any]:
        """The validation batches that :meth:`evaluate_batch` scores."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement validation_data() and evaluate_batch(), "
            "or evaluate()"
        )

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        """Metrics of one validation batch; the harness averages them weighted by records."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement evaluate_batch() or evaluate()"
        )

    def evaluate(self) -> Mapping[str, Any] | None:
        """Metrics over the whole validation set; ``None`` lets the harness evaluate per batch."""
        return None

    def epoch_length(self) -> int | None:
        """Batches in one epoch, when the training data can tell (``len`` of it)."""
        data = self.training_data(0)
        return len(data) if isinstance(data, Sized) else None

    def batch_size(self, batch: Any) -> int:
        """Records in ``batch``: its length, or its first element's (``(inputs, targets)``)."""
        if isinstance(batch, (tuple, list)) and batch and not isinstance(batch[0], (int, float)):
            return batch_size(batch[0])
        return batch_size(batch)


def records_in(batch: Any) -> int:
    """Records in ``batch`` as :meth:`Trial.batch_size` counts them (a loop's default).

    >>> records_in([0.5, 1.5, 2.5]), records_in(([[1, 2], [3, 4]], [0, 1])), records_in({"x": [1]})
    (3, 2, 1)
    """
    # One rule, kept in the method that fit() calls per batch (a call less there).
    return Trial.batch_size(None, batch)  # type: ignore[arg-type]  # self is not used


def batch_size(batch: Any) -> int:
    """Records in one batch: ``len()``, else the first dimension of ``.shape``."""
    if type(batch) is list:  # the common plain-Python case, checked first: it is per batch
        return len(batch)
    shape = getattr(batch, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    if isinstance(batch, Mapping) and batch:
        return batch_size(next(iter(batch.values())))
    return len(batch)
