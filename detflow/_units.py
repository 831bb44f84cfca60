"""Training lengths in records, batches, optimizer steps and epochs, converted exactly.

Pure Python: nothing here knows of Hydra, OmegaConf or torch.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from detflow._errors import ConfigError

__all__ = ["BatchMath", "Length", "Unit", "parse_length", "parse_target"]


class Unit(str, enum.Enum):
    """The unit a length is given in."""

    RECORDS = "records"
    BATCHES = "batches"
    STEPS = "steps"
    EPOCHS = "epochs"

    def __str__(self) -> str:
        return self.value


_UNIT_NAMES = ", ".join(u.value for u in Unit)
_ACCEPTED = f"'<positive int> <unit>' or {{<unit>: <positive int>}} with unit one of {_UNIT_NAMES}"
_LENGTH_RE = re.compile(r"^\s*([+-]?\d+)\s*([A-Za-z_]+)\s*$")


@dataclass(frozen=True)
class Length:
    """A training length: a positive amount in one :class:`Unit`.

    ``value`` is an ``int`` for lengths a user writes; the searcher may ask for fractions of
    a length (ASHA's lower rungs), which convert the same way.

    Examples
    --------
    >>> Length(600, Unit.RECORDS)
    Length(value=600, unit=<Unit.RECORDS: 'records'>)
    >>> str(Length(5, Unit.EPOCHS))
    '5 epochs'
    """

    value: int | Fraction
    unit: Unit

    def __str__(self) -> str:
        return f"{self.value} {self.unit.value}"

    def scaled(self, factor: Fraction) -> Length:
        """This length times ``factor``, kept exact.

        >>> str(Length(8, Unit.EPOCHS).scaled(Fraction(1, 4)))
        '2 epochs'
        """
        value = Fraction(self.value) * factor
        return Length(int(value) if value.denominator == 1 else value, self.unit)


def parse_length(raw: Any, key: str = "length") -> Length:
    """Read a length written as ``"600 records"`` or ``{"records": 600}``.

    ``key`` names the config key in the error a bad value raises.

    Examples
    --------
    >>> parse_length("600 records")
    Length(value=600, unit=<Unit.RECORDS: 'records'>)
    >>> parse_length({"epochs": 5}).unit
    <Unit.EPOCHS: 'epochs'>
    >>> parse_length("0 epochs", key="searcher.max_length")
    Traceback (most recent call last):
    ...
    detflow._errors.ConfigError: searcher.max_length = '0 epochs' is not valid: ...
    """
    if isinstance(raw, Length):
        return raw
    if isinstance(raw, str):
        match = _LENGTH_RE.match(raw)
        if match is None:
            raise ConfigError(key, raw, _ACCEPTED)
        amount_text, unit_text = match.groups()
        amount: Any = int(amount_text)
    elif isinstance(raw, Mapping):
        if len(raw) != 1:
            raise ConfigError(key, _plain(raw), f"exactly one unit: {_ACCEPTED}")
        ((unit_text, amount),) = raw.items()
    else:
        raise ConfigError(key, raw, _ACCEPTED)
    unit = _unit(unit_text)
    if unit is None or isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ConfigError(key, raw if isinstance(raw, str) else _plain(raw), _ACCEPTED)
    return Length(amount, unit)


def parse_target(text: str, key: str = "target") -> Length:
    """A length whose amount may be a fraction, as the searcher's rungs write it.

    >>> parse_target("5/16 epochs")
    Length(value=Fraction(5, 16), unit=<Unit.EPOCHS: 'epochs'>)
    >>> parse_target("600 records").value
    600
    """
    amount_text, _, unit_text = text.strip().partition(" ")
    unit = _unit(unit_text)
    try:
        amount = Fraction(amount_text)
    except (ValueError, ZeroDivisionError):
        amount = Fraction(0)
    if unit is None or amount <= 0:
        raise ConfigError(key, text, "'<positive fraction> <unit>', e.g. '5/16 epochs'")
    return Length(int(amount) if amount.denominator == 1 else amount, unit)


def _unit(text: Any) -> Unit | None:
    if not isinstance(text, str):
        return None
    text = text.strip().lower()
    for unit in Unit:
        if text in (unit.value, unit.value.removesuffix("s"), unit.value.removesuffix("es")):
            return unit
    return None


def _plain(raw: Mapping[Any, Any]) -> dict[Any, Any]:
    return {k: raw[k] for k in raw}


@dataclass(frozen=True)
class BatchMath:
    """Converts lengths to global batches for one trial's batch geometry.

    Parameters
    ----------
    global_batch_size:
        Records in one global batch (over all slots).
    aggregation_frequency:
        Batches per optimizer step; every target is a whole number of steps.
    batches_per_epoch:
        Batches in one pass over the training data, when known.

    Examples
    --------
    >>> math = BatchMath(global_batch_size=32, aggregation_frequency=1)
    >>> math.to_batches(parse_length("600 records"))
    19
    >>> math.describe(parse_length("600 records"), key="max_length")
    'max_length 600 records -> 19 batches (608 records) at global_batch_size 32'
    >>> BatchMath(32, aggregation_frequency=3).to_batches(parse_length("7 steps"))
    21
    >>> BatchMath(32, aggregation_frequency=4).to_batches(parse_length("10 batches"))
    12
    """

    global_batch_size: int
    aggregation_frequency: int = 1
    batches_per_epoch: int | None = None
    epoch_key: str = "records_per_epoch"

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "aggregation_frequency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(name, value, "a positive integer")
        epoch = self.batches_per_epoch
        if epoch is not None and (
            isinstance(epoch, bool) or not isinstance(epoch, int) or epoch <= 0
        ):
            raise ConfigError("batches_per_epoch", epoch, "a positive integer or None")

    @classmethod
    def from_records_per_epoch(
        cls, global_batch_size: int, aggregation_frequency: int, records_per_epoch: int
    ) -> BatchMath:
        """Geometry whose epoch is ``ceil(records_per_epoch / global_batch_size)`` batches."""
        if (
            isinstance(records_per_epoch, bool)
            or not isinstance(records_per_epoch, int)
            or (records_per_epoch <= 0)
        ):
            raise ConfigError("records_per_epoch", records_per_epoch, "a positive integer or null")
        return cls(
            global_batch_size,
            aggregation_frequency,
            -(-records_per_epoch // global_batch_size),
        )

    def exact_batches(self, length: Length, key: str = "length") -> Fraction:
        """The length in batches before any rounding (may be fractional)."""
        value = Fraction(length.value)
        if length.unit is Unit.RECORDS:
            return value / self.global_batch_size
        if length.unit is Unit.BATCHES:
            return value
        if length.unit is Unit.STEPS:
            return value * self.aggregation_frequency
        if self.batches_per_epoch is None:
            raise ConfigError(
                key,
                str(length),
                f"a length the data can measure: set {self.epoch_key} (the training data "
                "does not tell its length) or give the length in records, batches or steps",
            )
        return value * self.batches_per_epoch

    def to_batches(self, length: Length, key: str = "length") -> int:
        """Global batches to train for ``length``: never 0, always whole optimizer steps."""
        return self.to_steps(length, key) * self.aggregation_frequency

    def to_steps(self, length: Length, key: str = "length") -> int:
        """Optimizer steps for ``length``, rounded up, at least one."""
        batches = self.exact_batches(length, key)
        return max(1, math.ceil(batches / self.aggregation_frequency))

    def in_unit(self, batches: int, unit: Unit) -> Fraction:
        """Express a count of batches in ``unit`` (the inverse of :meth:`exact_batches`)."""
        if unit is Unit.RECORDS:
            return Fraction(batches * self.global_batch_size)
        if unit is Unit.BATCHES:
            return Fraction(batches)
        if unit is Unit.STEPS:
            return Fraction(batches, self.aggregation_frequency)
        if self.batches_per_epoch is None:
            raise ConfigError(self.epoch_key, None, "a positive integer to count epochs")
        return Fraction(batches, self.batches_per_epoch)

    def describe(self, length: Length, key: str = "length") -> str | None:
        """One line saying how rounding changed ``length``, or ``None`` when it is exact."""
        batches = self.to_batches(length, key)
        if self.exact_batches(length, key) == batches:
            return None
        return (
            f"{key} {length} -> {batches} batches ({batches * self.global_batch_size} records)"
            f" at global_batch_size {self.global_batch_size}"
            + (
                f", aggregation_frequency {self.aggregation_frequency}"
                if self.aggregation_frequency != 1
                else ""
            )
        )
