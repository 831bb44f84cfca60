"""Search-space dimensions: validation, sampling and grids."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from detflow._core.errors import ConfigError
from detflow._search.space import Choice, Interval, Space, grid_points, sample


@pytest.mark.parametrize(
    ("low", "high", "log", "integer", "expected"),
    [
        (1.0, 1.0, False, False, "low < high"),
        (2.0, 1.0, False, False, "low < high"),
        (0.0, 1.0, True, False, "low > 0"),
        (-1.0, 1.0, True, False, "low > 0"),
        (0.2, 0.8, False, True, "at least one integer"),
        (0.0, math.inf, False, False, "finite"),
    ],
)
def test_interval_rejects_bad_bounds(
    low: float, high: float, log: bool, integer: bool, expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        Interval(low, high, log=log, integer=integer)


def test_choice_needs_a_value() -> None:
    with pytest.raises(ConfigError, match="at least one value"):
        Choice(())


def test_sample_is_reproducible_and_in_sorted_key_order() -> None:
    space: Space = {
        "z": Choice(("a", "b", "c")),
        "a": Interval(1e-5, 1.0, log=True),
        "m": Interval(1, 100, integer=True),
    }
    first = sample(space, random.Random(3))
    assert list(first) == ["a", "m", "z"]
    assert first == sample(space, random.Random(3))
    reordered: Space = {key: space[key] for key in ("m", "z", "a")}
    assert sample(reordered, random.Random(3)) == first
    assert sample(space, random.Random(4)) != first


def test_choice_samples_cover_values() -> None:
    rng = random.Random(0)
    seen = {sample({"x": Choice((1, 2, 3))}, rng)["x"] for _ in range(200)}
    assert seen == {1, 2, 3}


def test_log_interval_is_log_uniform() -> None:
    rng = random.Random(0)
    values = [sample({"x": Interval(1e-4, 1.0, log=True)}, rng)["x"] for _ in range(4000)]
    below = sum(v < 1e-2 for v in values) / len(values)
    assert 0.45 < below < 0.55  # half the decades lie below 1e-2


@st.composite
def intervals(draw: st.DrawFn) -> Interval:
    log = draw(st.booleans())
    integer = draw(st.booleans())
    low = draw(st.floats(min_value=1e-6 if log else -1e6, max_value=1e6))
    high = draw(st.floats(min_value=-1e6, max_value=1e7))
    assume(low < high)
    assume(not integer or math.ceil(low) <= math.floor(high))
    return Interval(low, high, log=log, integer=integer)


@given(dim=intervals(), seed=st.integers(0, 2**32))
def test_interval_samples_stay_in_bounds(dim: Interval, seed: int) -> None:
    value = sample({"x": dim}, random.Random(seed))["x"]
    assert dim.low <= value <= dim.high
    if dim.log:
        assert value > 0
    if dim.integer:
        assert isinstance(value, int)
    else:
        assert isinstance(value, float)


def test_grid_is_cartesian_product_in_sorted_key_order() -> None:
    space: Space = {
        "lr": Choice((0.05, 0.1)),
        "bs": Choice((16, 32, 64)),
        "opt": Choice(("sgd",)),
    }
    points = grid_points(space)
    assert len(points) == 6
    assert points == [
        {"bs": bs, "lr": lr, "opt": "sgd"} for bs in (16, 32, 64) for lr in (0.05, 0.1)
    ]
    assert grid_points(dict(reversed(space.items()))) == points


def test_grid_of_nothing_is_one_empty_point() -> None:
    assert grid_points({}) == [{}]


def test_grid_rejects_intervals_naming_the_key() -> None:
    space: Space = {"bs": Choice((16, 32)), "hyperparameters.lr": Interval(0.01, 0.1)}
    with pytest.raises(ConfigError, match=r"choice\(\.\.\.\) or range\(\.\.\.\)") as info:
        grid_points(space)
    assert info.value.key == "hyperparameters.lr"
