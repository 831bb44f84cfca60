"""A TPE-style density model for new trials' hyperparameters (BOHB's, Falkner et al. 2018).

Pure Python (no numpy): the search layer installs with the standard library only.

Given the results at one rung, ranked best first, the model splits them into the good (the
best ``gamma`` share, at least :attr:`TpeSettings.min_good`: ``n_dims + 1`` unless set) and the
bad (the rest, at least as many; 2 with ``min_good`` set) and fits
a kernel density to each: a product kernel over the search space's dimensions, each mapped to
``[0, 1]`` (intervals linearly, log intervals in logs, integers as numbers rounded on the way
back) with a Gaussian kernel truncated to ``[0, 1]`` and Scott's bandwidth, and choices with an
Aitchison-Aitken kernel (the observed value with weight ``1 - bw``, the others share ``bw``). A
proposal draws :attr:`TpeSettings.candidates` points around good results (bandwidths widened by
``bandwidth_factor``) and keeps the one that maximises ``l(x) / g(x)``, the good density over
the bad. A share ``random_fraction`` of the proposals is left to random search, so that the
model never shuts a region out for good.

Examples
--------
>>> import random
>>> from detflow._search.space import Interval
>>> space = {"x": Interval(0.0, 1.0)}
>>> ranked = [{"x": i / 20} for i in range(20)]  # best first: small x is good
>>> model = DensityModel(space, ranked, TpeSettings(random_fraction=0.0))
>>> point = propose(model, random.Random(0))
>>> point is not None and point["x"] < 0.5
True
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from detflow._core.errors import ConfigError
from detflow._search.space import Choice, Interval, Space

__all__ = ["DensityModel", "TpeSettings", "min_observations", "propose"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_MIN_BAD = 2  # the fewest bad results with TpeSettings.min_good set


@dataclass(frozen=True)
class TpeSettings:
    """How the model proposes (BOHB's defaults where it has one).

    ``random_fraction``: the share of proposals drawn at random instead (``searcher.
    random_fraction``); ``gamma``: the share of results that are good; ``candidates``: points
    drawn per proposal; ``bandwidth_factor``: how much wider the kernels are when drawing;
    ``min_bandwidth``: the narrowest kernel; ``max_good`` / ``max_bad``: at most this many
    results in each density (the best good ones; bad ones evenly spaced by rank), which keeps
    a proposal's cost bounded however many trials ran; ``min_good``: the fewest good results
    (None: ``n_dims + 1`` good and as many bad, BOHB's rule; a count ``k``: at most ``k``
    good and 2 bad, a model fitted from ``k + 2`` results on, which bohb uses:
    bench/README.md).

    >>> TpeSettings().random_fraction
    0.3333333333333333
    >>> TpeSettings(random_fraction=2)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: searcher.random_fraction = 2 is not valid: expected \
a number from 0 to 1
    """

    random_fraction: float = 1 / 3
    gamma: float = 0.15
    candidates: int = 24
    bandwidth_factor: float = 3.0
    min_bandwidth: float = 1e-3
    max_good: int = 64
    max_bad: int = 128
    min_good: int | None = None

    def __post_init__(self) -> None:
        fraction = self.random_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, int | float)
            or not 0 <= fraction <= 1
        ):
            raise ConfigError("searcher.random_fraction", fraction, "a number from 0 to 1")
        if self.min_good is not None and self.min_good < 2:
            raise ValueError(f"TpeSettings.min_good must be at least 2, not {self.min_good}")

    def least(self, dims: int) -> tuple[int, int]:
        """The fewest (good, bad) results a model over ``dims`` searched dimensions is fitted
        on.

        >>> bohb = TpeSettings(min_good=3)
        >>> TpeSettings().least(7), bohb.least(7), bohb.least(1)
        ((8, 8), (3, 2), (2, 2))
        """
        if self.min_good is None:
            return dims + 1, dims + 1
        return min(self.min_good, dims + 1), _MIN_BAD


@dataclass(frozen=True)
class _Dim:
    """One searched dimension, mapped to ``[0, 1]`` (continuous) or to indices (a choice)."""

    key: str
    dim: Interval | Choice

    @property
    def categories(self) -> int:
        """How many values a choice has; 0 for an interval."""
        return len(self.dim.values) if isinstance(self.dim, Choice) else 0

    def encode(self, value: Any) -> float | None:
        """``value`` as a point of ``[0, 1]`` or a choice index; None if not in the space."""
        dim = self.dim
        if isinstance(dim, Choice):
            wanted = _canonical(value)
            for index, option in enumerate(dim.values):
                if _canonical(option) == wanted:
                    return float(index)
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            return None
        if dim.log:
            if value <= 0:
                return None
            low, high, x = math.log(dim.low), math.log(dim.high), math.log(value)
        else:  # halves: high - low may exceed float's range
            low, high, x = dim.low / 2, dim.high / 2, value / 2
        return min(max((x - low) / (high - low), 0.0), 1.0)

    def decode(self, u: float) -> Any:
        """The value of the space at ``u`` (a choice index, or a point of ``[0, 1]``)."""
        dim = self.dim
        if isinstance(dim, Choice):
            return dim.values[int(u)]
        if dim.log:
            try:
                value = math.exp(math.log(dim.low) * (1 - u) + math.log(dim.high) * u)
            except OverflowError:
                value = dim.high
        else:
            value = dim.low * (1 - u) + dim.high * u
        if dim.integer:
            return min(max(round(value), math.ceil(dim.low)), math.floor(dim.high))
        return min(max(value, dim.low), dim.high)


def _canonical(value: Any) -> str:
    """One spelling of a choice value, the same before and after a JSON round trip."""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _searched(space: Space) -> list[_Dim]:
    dims = []
    for key in sorted(space):
        dim = space[key]
        if not (isinstance(dim, Choice) and len(dim.values) == 1):  # a fixed value: not searched
            dims.append(_Dim(key, dim))
    return dims


def min_observations(space: Space, settings: TpeSettings | None = None) -> int:
    """The fewest results the model needs: its least good and bad (:meth:`TpeSettings.least`).

    >>> from detflow._search.space import Interval
    >>> space = {"a": Interval(0.0, 1.0), "b": Interval(0.0, 1.0)}
    >>> min_observations(space), min_observations(space, TpeSettings(min_good=3))
    (6, 5)
    """
    return sum((settings or TpeSettings()).least(len(_searched(space))))


class _Kde:
    """A product-kernel density over the encoded points (see the module's docstring)."""

    def __init__(self, dims: Sequence[_Dim], points: Sequence[Sequence[float]], floor: float):
        self.dims = dims
        self.points = points
        n = len(points)
        self.columns = [[p[d] for p in points] for d in range(len(dims))]
        self.bandwidths: list[float] = []
        for dim, column in zip(dims, self.columns, strict=True):
            if dim.categories:
                k = dim.categories
                self.bandwidths.append(max(floor, (k - 1) / k * n ** (-0.2)))
                continue
            mean = sum(column) / n
            std = math.sqrt(sum((x - mean) ** 2 for x in column) / n)
            self.bandwidths.append(max(floor, 1.06 * std * n ** (-0.2)))
        # Each point's log normaliser over the continuous dimensions (its truncation to [0, 1]).
        constants = [-math.log(n)] * n
        for dim, column, h in zip(dims, self.columns, self.bandwidths, strict=True):
            if not dim.categories:
                constants = [
                    c - math.log(h) - _LOG_SQRT_2PI - math.log(max(_mass(u, h), 1e-300))
                    for c, u in zip(constants, column, strict=True)
                ]
        self.constants = constants

    def log_density(self, x: Sequence[float]) -> float:
        terms = self.constants
        for d, (dim, column, h) in enumerate(
            zip(self.dims, self.columns, self.bandwidths, strict=True)
        ):
            xd = x[d]
            if dim.categories:
                same, other = math.log(1 - h), math.log(h / (dim.categories - 1))
                terms = [
                    t + (same if u == xd else other) for t, u in zip(terms, column, strict=True)
                ]
            else:
                w = 0.5 / (h * h)
                terms = [t - w * (xd - u) * (xd - u) for t, u in zip(terms, column, strict=True)]
        top = max(terms)
        return top + math.log(sum([math.exp(t - top) for t in terms]))

    def draw_near(self, point: Sequence[float], rng: random.Random, factor: float) -> list[float]:
        """A point drawn from the kernel around ``point``, continuous kernels ``factor`` wider."""
        drawn = []
        for d, dim in enumerate(self.dims):
            h = self.bandwidths[d]
            if dim.categories:
                if rng.random() < 1 - h:
                    drawn.append(point[d])
                else:
                    others = [i for i in range(dim.categories) if i != int(point[d])]
                    drawn.append(float(rng.choice(others)))
                continue
            value = point[d]
            for _ in range(16):  # a truncated normal by rejection; clipped if all 16 miss
                value = rng.gauss(point[d], h * factor)
                if 0.0 <= value <= 1.0:
                    break
            drawn.append(min(max(value, 0.0), 1.0))
        return drawn


def _mass(u: float, h: float) -> float:
    """The mass in ``[0, 1]`` of a normal kernel of width ``h`` at ``u``."""
    return _phi((1 - u) / h) - _phi(-u / h)


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


class DensityModel:
    """The good and bad densities fitted on ``ranked`` results (hyperparameters, best first).

    It is fitted on first use. Results whose values are not in ``space`` are left out;
    :attr:`fitted` is False with fewer than :func:`min_observations` results.

    >>> from detflow._search.space import Choice
    >>> space = {"opt": Choice(("sgd", "adam"))}
    >>> model = DensityModel(space, [{"opt": "adam"}] * 3 + [{"opt": "sgd"}] * 9, TpeSettings())
    >>> model.fitted, model.ratio({"opt": "adam"}) > model.ratio({"opt": "sgd"})
    (True, True)
    """

    def __init__(self, space: Space, ranked: Sequence[dict[str, Any]], settings: TpeSettings):
        self.space = space
        self.settings = settings
        self.dims = _searched(space)
        self._ranked = ranked
        self._fitted: bool | None = None  # fitted on first use

    def _encoded(self, ranks: Sequence[int]) -> list[list[float]]:
        points = []
        for rank in ranks:
            point = [dim.encode(self._ranked[rank].get(dim.key)) for dim in self.dims]
            if all(u is not None for u in point):
                points.append([float(u) for u in point if u is not None])
        return points

    @property
    def fitted(self) -> bool:
        """True when the results were enough to fit both densities."""
        if self._fitted is None:
            self._fitted = self._fit()
        return self._fitted

    def _fit(self) -> bool:
        """Fit on the good and bad results (only those used are encoded: a bounded cost)."""
        settings = self.settings
        least_good, least_bad = settings.least(len(self.dims))
        n = len(self._ranked)
        if not self.dims or n < least_good + least_bad:
            return False
        n_good = min(
            max(least_good, math.floor(settings.gamma * n)), n - least_bad, settings.max_good
        )
        bad_ranks: Sequence[int] = range(n_good, n)
        if len(bad_ranks) > settings.max_bad:  # evenly spaced by rank, best and worst kept
            step = (len(bad_ranks) - 1) / (settings.max_bad - 1)
            bad_ranks = [n_good + round(i * step) for i in range(settings.max_bad)]
        good, bad = self._encoded(range(n_good)), self._encoded(bad_ranks)
        if len(good) < least_good or len(bad) < least_bad:  # values outside the space left out
            return False
        self.good = _Kde(self.dims, good, settings.min_bandwidth)
        self.bad = _Kde(self.dims, bad, settings.min_bandwidth)
        return True

    def _log_ratio(self, x: Sequence[float]) -> float:
        return self.good.log_density(x) - self.bad.log_density(x)

    def ratio(self, hparams: dict[str, Any]) -> float:
        """``l(x) / g(x)`` at ``hparams`` (larger: more like the good results)."""
        if not self.fitted:
            raise ValueError("the model has too few results to be fitted")
        point = [dim.encode(hparams.get(dim.key)) for dim in self.dims]
        if any(u is None for u in point):
            raise ValueError(f"{hparams} is not a point of the search space")
        return math.exp(self._log_ratio([float(u) for u in point if u is not None]))

    def propose(self, rng: random.Random) -> dict[str, Any]:
        """The candidate of largest ``l(x) / g(x)`` among those drawn around good results."""
        if not self.fitted:
            raise ValueError("the model has too few results to be fitted")
        best: list[float] | None = None
        best_score = -math.inf
        for _ in range(self.settings.candidates):
            around = rng.choice(self.good.points)
            x = self.good.draw_near(around, rng, self.settings.bandwidth_factor)
            score = self._log_ratio(x)
            if best is None or score > best_score:
                best, best_score = x, score
        assert best is not None  # candidates >= 1
        chosen = {dim.key: dim.decode(u) for dim, u in zip(self.dims, best, strict=True)}
        fixed = {
            key: dim.values[0]
            for key, dim in self.space.items()
            if isinstance(dim, Choice) and len(dim.values) == 1
        }
        merged = {**chosen, **fixed}
        return {key: merged[key] for key in sorted(self.space)}


def propose(model: DensityModel, rng: random.Random) -> dict[str, Any] | None:
    """A model-based point, or None where the point should be drawn at random: a share
    ``random_fraction`` of the calls (decided by the first draw of ``rng``), or a model fitted
    on too few results.

    >>> from detflow._search.space import Interval
    >>> model = DensityModel({"x": Interval(0.0, 1.0)}, [], TpeSettings())
    >>> model.fitted, propose(model, random.Random(0))
    (False, None)
    """
    if rng.random() < model.settings.random_fraction:
        return None
    return model.propose(rng) if model.fitted else None
