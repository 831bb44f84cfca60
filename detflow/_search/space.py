"""Search-space dimensions, random sampling and grid enumeration.

Pure Python: nothing here knows of Hydra, OmegaConf or torch. A :data:`Space` maps a dotted
config key (``"hyperparameters.lr"``) to a :class:`Choice` or an :class:`Interval`.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any, TypeAlias

from detflow._core.determined import Hparam
from detflow._core.errors import ConfigError
from detflow._core.text import Verbatim

__all__ = [
    "Choice",
    "Dimension",
    "Interval",
    "Space",
    "from_determined",
    "grid_points",
    "sample",
]


@dataclass(frozen=True)
class Choice:
    """A discrete dimension: one of ``values``, in the order given.

    Examples
    --------
    >>> Choice((16, 32, 64)).values
    (16, 32, 64)
    """

    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.values) == 0:
            raise ConfigError("choice", self.values, "at least one value")


@dataclass(frozen=True)
class Interval:
    """A continuous dimension ``[low, high]``, log-uniform if ``log``, whole numbers if ``integer``.

    Examples
    --------
    >>> Interval(1e-4, 1e-1, log=True)
    Interval(low=0.0001, high=0.1, log=True, integer=False)
    >>> Interval(1.0, 0.5)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: interval = (1.0, 0.5) is not valid: expected low < high
    """

    low: float
    high: float
    log: bool = False
    integer: bool = False

    def __post_init__(self) -> None:
        bounds = (self.low, self.high)
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ConfigError("interval", bounds, "finite bounds")
        if not self.low < self.high:
            raise ConfigError("interval", bounds, "low < high")
        if self.log and self.low <= 0:
            raise ConfigError("interval", bounds, "low > 0 for a log interval")
        if self.integer and math.ceil(self.low) > math.floor(self.high):
            raise ConfigError("interval", bounds, "at least one integer in [low, high]")


Dimension: TypeAlias = Choice | Interval
#: The most points a grid may have: every one is validated, then trained.
MAX_GRID_POINTS = 100_000


Space: TypeAlias = dict[str, Dimension]


def _draw(dim: Dimension, rng: random.Random) -> Any:
    if isinstance(dim, Choice):
        return rng.choice(dim.values)
    if dim.integer and not dim.log:
        return rng.randint(math.ceil(dim.low), math.floor(dim.high))
    if dim.log:
        try:
            value = math.exp(_uniform(math.log(dim.low), math.log(dim.high), rng))
        except OverflowError:  # exp(log(x)) a hair above the largest float
            value = dim.high
    else:
        value = _uniform(dim.low, dim.high, rng)
    if dim.integer:
        return min(max(round(value), math.ceil(dim.low)), math.floor(dim.high))
    return min(max(value, dim.low), dim.high)  # exp(log(x)) may stray by an ulp


def _uniform(low: float, high: float, rng: random.Random) -> float:
    """``rng.uniform(low, high)``, also where ``high - low`` exceeds float's range
    (``interval(-1e308, 1e308)``: ``uniform`` would give inf, or nan when it draws 0)."""
    u = rng.random()
    span = high - low
    if math.isfinite(span):
        return low + span * u  # exactly what rng.uniform computes
    return low * (1.0 - u) + high * u


def sample(space: Space, rng: random.Random) -> dict[str, Any]:
    """Draw one point: uniform choices, uniform or log-uniform intervals, keys in sorted order.

    Integer intervals give ``int`` values inside ``[low, high]`` (uniform over the integers,
    or a log-uniform draw rounded to the nearest one).

    Examples
    --------
    >>> space = {"lr": Interval(1e-4, 1e-1, log=True), "bs": Choice((16, 32))}
    >>> sample(space, random.Random(0)) == sample(space, random.Random(0))
    True
    >>> sorted(sample(space, random.Random(0)))
    ['bs', 'lr']
    """
    return {key: _draw(space[key], rng) for key in sorted(space)}


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every combination of the choices: keys in sorted order, the last key varying fastest.

    Raises :class:`ConfigError` naming the first key whose dimension is an interval, or
    ``searcher.space`` when the grid has more than :data:`MAX_GRID_POINTS` points.

    Examples
    --------
    >>> grid_points({"b": Choice((1, 2)), "a": Choice(("x", "y"))})
    [{'a': 'x', 'b': 1}, {'a': 'x', 'b': 2}, {'a': 'y', 'b': 1}, {'a': 'y', 'b': 2}]
    >>> grid_points({})
    [{}]
    """
    keys = sorted(space)
    columns: list[tuple[Any, ...]] = []
    for key in keys:
        dim = space[key]
        if isinstance(dim, Interval):
            raise ConfigError(
                key,
                dim,
                "discrete choices for a grid search, such as choice(...) or range(...)",
            )
        columns.append(dim.values)
    size = math.prod(len(column) for column in columns)
    if size > MAX_GRID_POINTS:  # a few ranges multiply into more points than memory holds
        raise ConfigError(
            "searcher.space",
            Verbatim(f"{' x '.join(str(len(c)) for c in columns)} = {size} grid points"),
            f"a grid of at most {MAX_GRID_POINTS} points (sample it: searcher.name=random)",
        )
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*columns)]


def from_determined(key: str, hparam: Hparam, *, grid: bool) -> Dimension:
    """The dimension a Determined hyperparameter (:mod:`detflow._core.determined`) spans.

    ``categorical`` is a :class:`Choice` of its ``vals``. For a grid search (``grid``),
    ``int`` / ``double`` / ``log`` are a :class:`Choice` of the ``count`` points Determined's
    grid placed (a :class:`ConfigError` naming ``key`` without a ``count``); for every other
    search they are an :class:`Interval` (``count`` unused, as in Determined): ``int`` whole
    numbers in ``[minval, maxval]``, ``double`` uniform, ``log`` log-uniform over
    ``[base**minval, base**maxval]`` (the bounds are exponents).

    Examples
    --------
    >>> from_determined("hyperparameters.lr", Hparam("log", minval=-4, maxval=-1), grid=False)
    Interval(low=0.0001, high=0.1, log=True, integer=False)
    >>> from_determined("hyperparameters.n", Hparam("int", minval=1, maxval=5, count=3), grid=True)
    Choice(values=(1, 3, 5))
    >>> from_determined("hyperparameters.n", Hparam("int", minval=1, maxval=5), grid=False)
    Interval(low=1, high=5, log=False, integer=True)
    """
    if hparam.type == "categorical":
        return Choice(hparam.vals)
    if grid:
        points = hparam.grid()
        if points is None:
            raise ConfigError(
                key,
                Verbatim(hparam.describe()),
                f"a count for a grid search (the number of points over "
                f"[minval, maxval]), e.g. {{type: {hparam.type}, ..., count: 3}}",
            )
        return Choice(points)
    if hparam.minval == hparam.maxval:
        return Choice((hparam.midpoint(),))
    if hparam.type == "int":
        return Interval(hparam.minval, hparam.maxval, integer=True)
    if hparam.type == "log":
        low, high = sorted((hparam.base**hparam.minval, hparam.base**hparam.maxval))
        try:
            return Interval(low, high, log=True)
        except ConfigError as exc:  # bounds that underflow to 0 or collapse into one float
            raise ConfigError(key, Verbatim(hparam.describe()), exc.expected) from None
    return Interval(float(hparam.minval), float(hparam.maxval))
