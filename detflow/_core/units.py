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

from detflow._core.counts import MAX_INT, check_count
from detflow._core.errors import ConfigError
from detflow._core.text import shown

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
# ASCII digits only: ``\d`` would also read "٣ epochs" (Arabic-Indic 3) as 3 epochs.
_LENGTH_RE = re.compile(r"^\s*([+-]?[0-9]+)\s*([A-Za-z_]+)\s*$")
# What the searcher writes for a rung: an int, a fraction or a decimal; never an exponent
# (``Fraction("1e999999999")`` would compute a billion-digit number).
_TARGET_RE = re.compile(r"^\s*\+?([0-9]+(?:/[0-9]+|\.[0-9]*)?|\.[0-9]+)\s+([A-Za-z_]+)\s*$")
#: The largest amount a length may have: counters (records, batches, ...) are 64-bit.
MAX_AMOUNT = MAX_INT
_TOO_LARGE = f"an amount of at most {MAX_AMOUNT} (2**63 - 1)"
#: Every spelling of a unit (compared lower-cased, spaces stripped): plural and singular.
_SPELLINGS = {
    "records": Unit.RECORDS,
    "record": Unit.RECORDS,
    "batches": Unit.BATCHES,
    "batch": Unit.BATCHES,
    "steps": Unit.STEPS,
    "step": Unit.STEPS,
    "epochs": Unit.EPOCHS,
    "epoch": Unit.EPOCHS,
}


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
    detflow._core.errors.ConfigError: searcher.max_length = '0 epochs' is not valid: ...
    """
    if isinstance(raw, Length):
        return raw
    if isinstance(raw, str):
        match = _LENGTH_RE.match(raw)
        if match is None:
            raise ConfigError(key, raw, _ACCEPTED)
        amount_text, unit_text = match.groups()
        try:
            amount: Any = int(amount_text)
        except ValueError:  # more digits than int() reads (sys.get_int_max_str_digits())
            raise ConfigError(key, raw, _TOO_LARGE) from None
    elif isinstance(raw, Mapping):
        if len(raw) != 1:
            raise ConfigError(key, shown(_plain(raw)), f"exactly one unit: {_ACCEPTED}")
        ((unit_text, amount),) = raw.items()
    else:
        raise ConfigError(key, shown(raw), _ACCEPTED)
    unit = _unit(unit_text)
    written = raw if isinstance(raw, str) else shown(_plain(raw))
    if unit is None or isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ConfigError(key, written, _ACCEPTED)
    if amount > MAX_AMOUNT:
        raise ConfigError(key, written, _TOO_LARGE)
    return Length(amount, unit)


def parse_target(text: str, key: str = "target") -> Length:
    """A length whose amount may be a fraction, as the searcher's rungs write it.

    >>> parse_target("5/16 epochs")
    Length(value=Fraction(5, 16), unit=<Unit.EPOCHS: 'epochs'>)
    >>> parse_target("600 records").value
    600
    """
    expected = "'<positive fraction> <unit>', e.g. '5/16 epochs'"
    match = _TARGET_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ConfigError(key, shown(text), expected)
    amount_text, unit_text = match.groups()
    unit = _unit(unit_text)
    try:
        amount = Fraction(amount_text)
    except (ValueError, ZeroDivisionError):  # n/0, or more digits than int() reads
        amount = Fraction(0)
    if unit is None or amount <= 0:
        raise ConfigError(key, text, expected)
    return Length(int(amount) if amount.denominator == 1 else amount, unit)


def _unit(text: Any) -> Unit | None:
    """The unit spelled ``text`` (plural or singular, any case, spaces around), or None."""
    if not isinstance(text, str):
        return None
    return _SPELLINGS.get(text.strip().lower())


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
            check_count(name, getattr(self, name))
        if self.batches_per_epoch is not None:
            check_count(
                "batches_per_epoch", self.batches_per_epoch, expected="a positive integer or None"
            )

    @classmethod
    def from_records_per_epoch(
        cls, global_batch_size: int, aggregation_frequency: int, records_per_epoch: int
    ) -> BatchMath:
        """Geometry whose epoch is ``ceil(records_per_epoch / global_batch_size)`` batches."""
        check_count("records_per_epoch", records_per_epoch, expected="a positive integer or null")
        # Checked before dividing by it: a 0, a float or a Decimal must not get that far.
        check_count("global_batch_size", global_batch_size, expected="a positive integer")
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
