"""Determined AI's hyperparameter syntax, read as detflow reads its own values.

Pure Python (the standard library only). In ``hyperparameters`` an entry may be written as
Determined wrote it::

    lr: {type: log, minval: -4, maxval: -1, base: 10}    # 10**-4 .. 10**-1, log-uniform
    layers: {type: int, minval: 1, maxval: 8}            # an int in [1, 8]
    dropout: {type: double, minval: 0.1, maxval: 0.5, count: 3}   # count: grid points
    act: {type: categorical, vals: [relu, tanh]}
    seed_offset: {type: const, val: 3}                   # a plain value: 3

Nested mappings of them work too (``optimizer: {lr: {type: log, ...}}`` is the dimension
``hyperparameters.optimizer.lr``). A ``const`` is its value everywhere. Every other entry is a
dimension of the search space (``python train.py -m``: the sweeper turns it into a
:class:`~detflow._search.space.Choice` or :class:`~detflow._search.space.Interval`); a single
run (no ``-m``) trains at its midpoint, the value Determined's grid takes for ``count: 1``
(``int``: the rounded middle, ``double``: the middle, ``log``: ``base`` to the middle
exponent, ``categorical``: the first of ``vals``), and says so in one line.

Examples
--------
>>> dims = find_dimensions({"lr": {"type": "log", "minval": -4, "maxval": -2},
...                         "gbs": 32, "opt": {"m": {"type": "double", "minval": 0, "maxval": 1}}})
>>> sorted(dims)
['hyperparameters.lr', 'hyperparameters.opt.m']
>>> dims["hyperparameters.lr"].midpoint()
0.001
>>> values, notes = single_run_values({"n": {"type": "const", "val": 3}, "x": 1.5})
>>> values, notes
({'n': 3, 'x': 1.5}, [])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detflow._core.errors import ConfigError
from detflow._core.text import Verbatim, shown

__all__ = [
    "DETERMINED_TYPES",
    "Hparam",
    "find_dimensions",
    "for_one_run",
    "is_determined",
    "parse_hparam",
    "single_run_values",
]

#: The values of ``type`` that make a mapping a Determined hyperparameter.
DETERMINED_TYPES = ("const", "int", "double", "log", "categorical")
_KEYS = {
    "const": ("val",),
    "int": ("minval", "maxval", "count"),
    "double": ("minval", "maxval", "count"),
    "log": ("minval", "maxval", "base", "count"),
    "categorical": ("vals",),
}
_REQUIRED = {
    "const": ("val",),
    "int": ("minval", "maxval"),
    "double": ("minval", "maxval"),
    "log": ("minval", "maxval"),
    "categorical": ("vals",),
}


def is_determined(value: Any) -> bool:
    """Whether ``value`` is written in Determined's syntax: a mapping whose ``type`` is one of
    :data:`DETERMINED_TYPES` (a mapping of the user's own with another ``type`` is not).

    >>> is_determined({"type": "int", "minval": 1, "maxval": 3}), is_determined({"type": "adam"})
    (True, False)
    """
    return isinstance(value, Mapping) and value.get("type") in DETERMINED_TYPES


@dataclass(frozen=True)
class Hparam:
    """One Determined hyperparameter that is a search dimension (every type but ``const``).

    ``minval`` / ``maxval`` are the bounds (``log``: exponents of ``base``), ``count`` the
    number of grid points, ``vals`` a categorical's values.

    Examples
    --------
    >>> Hparam("int", minval=0, maxval=20, count=3).grid()
    (0, 10, 20)
    >>> Hparam("log", minval=-3, maxval=-1, base=10).midpoint()
    0.01
    >>> Hparam("categorical", vals=("relu", "tanh")).midpoint()
    'relu'
    """

    type: str
    minval: float = 0.0
    maxval: float = 0.0
    base: float = 10.0
    count: int | None = None
    vals: tuple[Any, ...] = ()

    def midpoint(self) -> Any:
        """The value a single run takes: Determined's grid point for ``count: 1``."""
        if self.type == "categorical":
            return self.vals[0]
        if self.type == "int":  # exact for any size: a float would round 2**52 + 1
            total = self.minval + self.maxval
            half, odd = divmod(total, 2)
            return half + (1 if odd and total > 0 else 0)
        middle = (self.minval + self.maxval) / 2
        if self.type == "log":
            return self.base**middle
        return middle

    def grid(self) -> tuple[Any, ...] | None:
        """The points a grid search takes, as Determined's grid placed them (evenly over
        ``[minval, maxval]``, ``log``: evenly over the exponents; an ``int`` never more
        points than integers); None without a ``count`` (``categorical``: its ``vals``)."""
        if self.type == "categorical":
            return self.vals
        if self.count is None:
            return None
        count = self.count
        if self.type == "int":
            count = min(count, int(self.maxval - self.minval) + 1)
        if count == 1:
            return (self.midpoint(),)
        points: list[Any] = []
        for i in range(count):
            if self.type == "int":
                points.append(
                    _round_half_away(self.minval + (i * (self.maxval - self.minval)) / (count - 1))
                )
                continue
            exponent = self.minval + i * (self.maxval - self.minval) / (count - 1)
            points.append(self.base**exponent if self.type == "log" else exponent)
        return tuple(points)

    def describe(self) -> str:
        """The entry as Determined wrote it, in one line.

        >>> Hparam("log", minval=-4, maxval=-1).describe()
        '{type: log, minval: -4, maxval: -1, base: 10}'
        """
        if self.type == "categorical":
            return f"{{type: categorical, vals: {list(self.vals)!r}}}"
        parts = [
            f"type: {self.type}",
            f"minval: {_num(self.minval)}",
            f"maxval: {_num(self.maxval)}",
        ]
        if self.type == "log":
            parts.append(f"base: {_num(self.base)}")
        if self.count is not None:
            parts.append(f"count: {self.count}")
        return "{" + ", ".join(parts) + "}"


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _round_half_away(value: float) -> int:
    """Round to the nearest integer, halves away from zero (Go's ``math.Round``, which
    Determined's grid used; Python's ``round`` rounds halves to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


#: The largest bound an entry may have (a counter's range), and the most grid points.
MAX_BOUND = 2**63 - 1
MAX_COUNT = 10_000


def _number(key: str, entry: Mapping[str, Any], name: str, *, integer: bool) -> Any:
    value = entry[name]
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    expected = "an integer" if integer else "a finite number"
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{key}.{name}", shown(value), expected)
    if isinstance(value, int) and abs(value) > MAX_BOUND:
        raise ConfigError(f"{key}.{name}", shown(value), f"{expected} of at most 2**63 - 1")
    if not math.isfinite(value):
        raise ConfigError(f"{key}.{name}", value, expected)
    return value


def parse_hparam(key: str, entry: Mapping[str, Any]) -> Hparam | tuple[Any]:
    """Read one Determined entry: a :class:`Hparam`, or ``(value,)`` for a ``const``.

    A key the type does not take, a missing or ill-typed bound, ``minval > maxval``, a
    ``base`` <= 0 or of 1, a ``count`` < 1 or an empty ``vals`` is a :class:`ConfigError`
    naming ``key``.

    >>> parse_hparam("hyperparameters.n", {"type": "const", "val": [1, 2]})
    ([1, 2],)
    >>> parse_hparam("hyperparameters.lr", {"type": "log", "minval": -1})
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: hyperparameters.lr = {type: log, minval: -1} is not \
valid: expected Determined's {type: log} with minval, maxval (base, count optional)
    """
    kind = str(entry["type"])
    allowed = _KEYS[kind]
    required = _REQUIRED[kind]
    optional = [k for k in allowed if k not in required]
    expected = f"Determined's {{type: {kind}}} with {', '.join(required)}" + (
        f" ({', '.join(optional)} optional)" if optional else ""
    )
    extra = [str(k) for k in entry if k != "type" and k not in allowed]
    missing = [k for k in required if k not in entry]
    if extra or missing:
        raise ConfigError(key, Verbatim(_written(entry)), expected)
    if kind == "const":
        return (entry["val"],)
    if kind == "categorical":
        vals = entry["vals"]
        if isinstance(vals, (str, bytes, Mapping)) or not isinstance(vals, Sequence) or not vals:
            raise ConfigError(f"{key}.vals", vals, "a non-empty list of values")
        return Hparam("categorical", vals=tuple(vals))
    integer = kind == "int"
    low = _number(key, entry, "minval", integer=integer)
    high = _number(key, entry, "maxval", integer=integer)
    if low > high:
        raise ConfigError(key, Verbatim(_written(entry)), "minval <= maxval")
    count = entry.get("count")
    if count is not None and (
        isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT
    ):
        raise ConfigError(f"{key}.count", shown(count), f"1 to {MAX_COUNT} (grid points), or null")
    base = 10.0
    if kind == "log":
        base = entry.get("base", 10)
        if base is None:
            base = 10
        if isinstance(base, bool) or not isinstance(base, (int, float)) or base <= 0 or base == 1:
            raise ConfigError(f"{key}.base", base, "a number > 0 other than 1")
        base, low, high = float(base), float(low), float(high)  # never a huge int power
        try:
            base**low, base**high
        except OverflowError:
            raise ConfigError(
                key, Verbatim(_written(entry)), "base**minval, base**maxval as floats"
            ) from None
    return Hparam(kind, minval=low, maxval=high, base=base, count=count)


def _written(entry: Mapping[str, Any]) -> str:
    """The entry as Determined's YAML would show it, in one line."""
    shown_values = (v if isinstance(v, str) else repr(shown(v)) for v in entry.values())
    return "{" + ", ".join(f"{k}: {v}" for k, v in zip(entry, shown_values, strict=True)) + "}"


def find_dimensions(
    hparams: Mapping[str, Any], prefix: str = "hyperparameters"
) -> dict[str, Hparam]:
    """Every Determined entry of ``hparams`` that is a search dimension, by dotted key
    (``prefix.a.b``), in the order written; nested mappings are searched, ``const`` values
    are not dimensions.

    >>> find_dimensions({"a": {"type": "categorical", "vals": [1, 2]}, "b": {"c": 1}})
    {'hyperparameters.a': Hparam(type='categorical', minval=0.0, maxval=0.0, base=10.0, \
count=None, vals=(1, 2))}
    """
    found: dict[str, Hparam] = {}
    for name, value in hparams.items():
        key = f"{prefix}.{name}"
        if is_determined(value):
            parsed = parse_hparam(key, value)
            if isinstance(parsed, Hparam):
                found[key] = parsed
        elif isinstance(value, Mapping):
            found.update(find_dimensions(value, key))
    return found


def single_run_values(
    hparams: Mapping[str, Any], prefix: str = "hyperparameters"
) -> tuple[dict[str, Any], list[str]]:
    """``hparams`` with every Determined entry replaced by a plain value: a ``const`` by its
    ``val``, a dimension by its :meth:`Hparam.midpoint`; and one line for each dimension so
    replaced (the value a single run, no ``-m``, trains at).

    >>> values, notes = single_run_values({"lr": {"type": "double", "minval": 0.1, "maxval": 0.3}})
    >>> values
    {'lr': 0.2}
    >>> print(notes[0])
    hyperparameters.lr is a search dimension {type: double, minval: 0.1, maxval: 0.3}: this \
single run uses its midpoint 0.2 (python train.py -m ... searches it)
    """
    out: dict[str, Any] = {}
    notes: list[str] = []
    for name, value in hparams.items():
        key = f"{prefix}.{name}"
        if is_determined(value):
            parsed = parse_hparam(key, value)
            if isinstance(parsed, Hparam):
                out[name] = parsed.midpoint()
                notes.append(
                    f"{key} is a search dimension {parsed.describe()}: this single run uses "
                    f"its midpoint {out[name]!r} (python train.py -m ... searches it)"
                )
            else:
                out[name] = parsed[0]
        elif isinstance(value, Mapping):
            out[name], inner = single_run_values(value, key)
            notes.extend(inner)
        else:
            out[name] = value
    return out, notes


def for_one_run(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`single_run_values`, its lines logged as warnings (``detflow`` logger): what
    ``load_config`` makes of Determined's entries in a run's ``hyperparameters``.

    >>> for_one_run({"act": {"type": "const", "val": "relu"}, "lr": 0.1})
    {'act': 'relu', 'lr': 0.1}
    """
    values, notes = single_run_values(hparams)
    for note in notes:
        logging.getLogger("detflow").warning("%s", note)
    return values
