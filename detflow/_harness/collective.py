"""What the harness needs from the processes of a multi-slot trial (``slots_per_trial > 1``).

The harness is torch-free; :mod:`detflow.pytorch` provides the implementation over
``torch.distributed``. A single-process trial has no collective at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Collective"]


class Collective(Protocol):
    """Collective operations every rank calls at the same points of training."""

    rank: int
    world_size: int

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (e.g. a stop request)."""

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks."""
