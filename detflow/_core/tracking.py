"""``tracking``: where a run's reports go besides ``metrics.jsonl`` (design section 2)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from detflow._core.errors import ConfigError

__all__ = ["DEFAULT_TRACKING", "Tracking", "parse_tracking"]


class Tracking(Enum):
    """One entry of ``tracking``."""

    #: TensorBoard event files in ``<run dir>/tensorboard`` (on by default)
    TENSORBOARD = "tensorboard"
    #: an MLflow run per trial, to ``MLFLOW_TRACKING_URI`` (extra ``mlflow``)
    MLFLOW = "mlflow"


#: ``tracking`` when the config does not set it.
DEFAULT_TRACKING = (Tracking.TENSORBOARD,)

_ACCEPTED = ", ".join(t.value for t in Tracking)


def parse_tracking(value: Any) -> tuple[Tracking, ...]:
    """``tracking``: a list of tracker names, each once (an empty list: none).

    >>> parse_tracking(["tensorboard", "mlflow"])
    (<Tracking.TENSORBOARD: 'tensorboard'>, <Tracking.MLFLOW: 'mlflow'>)
    >>> parse_tracking("mlflow")
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: tracking = 'mlflow' is not valid: expected a list of \
tracker names, each one of tensorboard, mlflow (e.g. [tensorboard, mlflow])
    >>> parse_tracking(["wandb"])
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: tracking = ['wandb'] is not valid: expected a list of \
tracker names, each one of tensorboard, mlflow (e.g. [tensorboard, mlflow])
    """
    expected = f"a list of tracker names, each one of {_ACCEPTED} (e.g. [tensorboard, mlflow])"
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigError("tracking", value, expected)
    names = list(value)
    known = {t.value: t for t in Tracking}
    if any(not isinstance(n, str) or n not in known for n in names):
        raise ConfigError("tracking", names, expected)
    if len(set(names)) != len(names):
        raise ConfigError("tracking", names, f"{expected}, each once")
    return tuple(known[n] for n in names)
