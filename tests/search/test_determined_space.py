"""Determined's hyperparameter syntax: parsing, dimensions, grid points, sampling, one run."""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detflow._core.determined import (
    Hparam,
    find_dimensions,
    for_one_run,
    is_determined,
    parse_hparam,
    single_run_values,
)
from detflow._core.errors import ConfigError
from detflow._search.searchers import GridSearcher, RandomSearcher
from detflow._search.space import Choice, Interval, from_determined, grid_points, sample

HPARAMS: dict[str, Any] = {
    "global_batch_size": {"type": "categorical", "vals": [16, 32, 64]},
    "learning_rate": {"type": "log", "minval": -4.0, "maxval": -2.0, "base": 10},
    "layers": {"type": "int", "minval": 1, "maxval": 8},
    "dropout": {"type": "double", "minval": 0.2, "maxval": 0.5},
    "decay": {"type": "const", "val": 1e-6},
    "plain": 3,
    "optimizer": {"type": "adam", "momentum": {"type": "double", "minval": 0, "maxval": 1}},
}


def test_dimensions_by_dotted_key_consts_are_values() -> None:
    dims = find_dimensions(HPARAMS)
    assert list(dims) == [
        "hyperparameters.global_batch_size",
        "hyperparameters.learning_rate",
        "hyperparameters.layers",
        "hyperparameters.dropout",
        "hyperparameters.optimizer.momentum",  # inside a mapping of the user's own
    ]
    assert not is_determined(HPARAMS["optimizer"])  # type: adam is not Determined's
    assert parse_hparam("k", HPARAMS["decay"]) == (1e-6,)


def test_a_single_run_takes_consts_and_midpoints_and_says_so() -> None:
    values, notes = single_run_values(HPARAMS)
    assert values == {
        "global_batch_size": 16,
        "learning_rate": pytest.approx(1e-3),
        "layers": 5,  # (1 + 8) / 2 = 4.5, rounded half away from zero as Determined's Go
        "dropout": pytest.approx(0.35),
        "decay": 1e-6,
        "plain": 3,
        "optimizer": {"type": "adam", "momentum": 0.5},
    }
    assert isinstance(values["layers"], int) and isinstance(values["optimizer"]["momentum"], float)
    assert len(notes) == 5
    assert notes[1].startswith(
        "hyperparameters.learning_rate is a search dimension {type: log, minval: -4, maxval: -2, "
        "base: 10}: this single run uses its midpoint 0.001"
    )
    assert "python train.py -m" in notes[1]


def test_for_one_run_logs_each_midpoint(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="detflow"):
        assert for_one_run({"n": {"type": "int", "minval": 2, "maxval": 4}}) == {"n": 3}
    assert "hyperparameters.n is a search dimension" in caplog.text


@pytest.mark.parametrize(
    ("entry", "key", "expected"),
    [
        ({"type": "int", "minval": 1}, "hyperparameters.x", "with minval, maxval"),
        ({"type": "int", "minval": 1, "maxval": 2, "step": 1}, "hyperparameters.x", "count"),
        ({"type": "int", "minval": 1.5, "maxval": 2}, "hyperparameters.x.minval", "integer"),
        ({"type": "double", "minval": 2, "maxval": 1}, "hyperparameters.x", "minval <= maxval"),
        ({"type": "double", "minval": "a", "maxval": 1}, "hyperparameters.x.minval", "number"),
        ({"type": "log", "minval": 1, "maxval": 2, "base": 1}, "hyperparameters.x.base", "> 0"),
        ({"type": "log", "minval": 1, "maxval": 2, "base": -2}, "hyperparameters.x.base", "> 0"),
        ({"type": "double", "minval": 0, "maxval": 1, "count": 0}, "hyperparameters.x.count", ""),
        ({"type": "categorical", "vals": []}, "hyperparameters.x.vals", "non-empty"),
        ({"type": "categorical", "vals": "ab"}, "hyperparameters.x.vals", "non-empty"),
        ({"type": "const"}, "hyperparameters.x", "with val"),
    ],
)
def test_a_bad_entry_names_its_key(entry: dict[str, Any], key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        find_dimensions({"x": entry})
    assert info.value.key == key
    assert expected in info.value.expected
    assert "\n" not in str(info.value)


def test_grid_points_as_determineds_grid() -> None:
    # Determined's TestGrid and TestHyperparameterGridMethod
    assert Hparam("int", minval=0, maxval=20, count=3).grid() == (0, 10, 20)
    assert Hparam("int", minval=0, maxval=10, count=3).grid() == (0, 5, 10)
    assert len(Hparam("double", minval=0, maxval=2.0, count=5).grid() or ()) == 5
    assert len(Hparam("int", minval=0, maxval=20, count=7).grid() or ()) == 7
    assert Hparam("int", minval=0, maxval=2, count=10).grid() == (0, 1, 2)  # clamped
    log = Hparam("log", minval=-3.0, maxval=-2.0, base=10, count=2).grid()
    assert log == pytest.approx((1e-3, 1e-2))
    assert Hparam("double", minval=0, maxval=1, count=1).grid() == (0.5,)
    assert Hparam("int", minval=1, maxval=4, count=1).grid() == (3,)  # 2.5 -> 3


def test_grid_needs_a_count_and_names_the_key() -> None:
    hparam = parse_hparam("hyperparameters.lr", HPARAMS["learning_rate"])
    assert isinstance(hparam, Hparam)
    with pytest.raises(ConfigError) as info:
        from_determined("hyperparameters.lr", hparam, grid=True)
    assert info.value.key == "hyperparameters.lr" and "count" in info.value.expected


def test_a_grid_over_determined_entries() -> None:
    entries = {
        "n": {"type": "int", "minval": 0, "maxval": 20, "count": 3},
        "m": {"type": "categorical", "vals": ["a", "b"]},
    }
    space = {k: from_determined(k, v, grid=True) for k, v in find_dimensions(entries).items()}
    points = GridSearcher(space, 4).planned_hparams()
    assert points == grid_points(space)
    assert [(p["hyperparameters.m"], p["hyperparameters.n"]) for p in points] == [
        ("a", 0),
        ("a", 10),
        ("a", 20),
        ("b", 0),
        ("b", 10),
        ("b", 20),
    ]


def test_dimensions_for_sampling() -> None:
    dims = find_dimensions(HPARAMS)
    space = {k: from_determined(k, v, grid=False) for k, v in dims.items()}
    assert space["hyperparameters.global_batch_size"] == Choice((16, 32, 64))
    assert space["hyperparameters.learning_rate"] == Interval(1e-4, 1e-2, log=True)
    assert space["hyperparameters.layers"] == Interval(1, 8, integer=True)
    assert space["hyperparameters.dropout"] == Interval(0.2, 0.5)
    equal = parse_hparam("k", {"type": "int", "minval": 3, "maxval": 3})
    assert isinstance(equal, Hparam) and from_determined("k", equal, grid=False) == Choice((3,))


@settings(max_examples=200, deadline=None)
@given(
    low=st.integers(-8, 3),
    width=st.integers(1, 5),
    base=st.sampled_from([2, 10, math.e, 0.5]),
    ilow=st.integers(-100, 100),
    iwidth=st.integers(0, 50),
    seed=st.integers(0, 10**6),
)
def test_samples_stay_in_bounds_with_their_types(
    low: int, width: int, base: float, ilow: int, iwidth: int, seed: int
) -> None:
    entries = {
        "lr": {"type": "log", "minval": low, "maxval": low + width, "base": base},
        "n": {"type": "int", "minval": ilow, "maxval": ilow + iwidth},
        "d": {"type": "double", "minval": -1.5, "maxval": 2.5},
        "c": {"type": "categorical", "vals": ["relu", 3, [1, 2]]},
    }
    space = {k: from_determined(k, v, grid=False) for k, v in find_dimensions(entries).items()}
    point = sample(space, random.Random(seed))
    bounds = sorted((base**low, base ** (low + width)))
    assert bounds[0] * (1 - 1e-12) <= point["hyperparameters.lr"] <= bounds[1] * (1 + 1e-12)
    n = point["hyperparameters.n"]
    assert type(n) is int and ilow <= n <= ilow + iwidth
    assert -1.5 <= point["hyperparameters.d"] <= 2.5
    assert point["hyperparameters.c"] in (["relu", 3, [1, 2]])


def test_log_samples_are_log_uniform_over_the_exponents() -> None:
    space = {"lr": Interval(1e-4, 1e-1, log=True)}
    searcher = RandomSearcher(space, 1, max_trials=2000, seed=3)
    exponents = [math.log10(p["lr"]) for p in searcher.planned_hparams()]
    below = sum(e < -2.5 for e in exponents) / len(exponents)
    assert 0.45 < below < 0.55  # half the draws below the middle exponent, not near 0.0005


_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["const", "int", "double", "log", "categorical"]),
    values=st.dictionaries(
        st.sampled_from(["minval", "maxval", "base", "count", "vals", "val", "step"]),
        _JUNK,
        max_size=5,
    ),
    grid=st.booleans(),
    seed=st.integers(0, 100),
)
def test_any_entry_parses_or_is_one_config_error(
    kind: str, values: dict[str, Any], grid: bool, seed: int
) -> None:
    entry = {"type": kind, **values}
    try:
        dims = find_dimensions({"x": entry})
        single_run_values({"x": entry})
        for key, hparam in dims.items():
            dim = from_determined(key, hparam, grid=grid)
            sample({key: dim}, random.Random(seed))
    except ConfigError as exc:
        assert exc.key.startswith("hyperparameters.x")
        assert "\n" not in str(exc) and len(str(exc)) < 2000


_NUMBER = st.one_of(st.integers(-(10**30), 10**30), st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["int", "double", "log"]),
    low=_NUMBER,
    high=_NUMBER,
    base=st.one_of(st.none(), _NUMBER),
    count=st.one_of(st.none(), st.integers(-2, 20_000)),
    grid=st.booleans(),
)
def test_any_bounds_parse_or_are_one_config_error(
    kind: str, low: Any, high: Any, base: Any, count: Any, grid: bool
) -> None:
    entry: dict[str, Any] = {"type": kind, "minval": low, "maxval": high, "count": count}
    if kind == "log" and base is not None:
        entry["base"] = base
    try:
        (hparam,) = find_dimensions({"x": entry}).values()
        hparam.midpoint()
        dim = from_determined("hyperparameters.x", hparam, grid=grid)
        point = sample({"x": dim}, random.Random(0))["x"]
    except ConfigError as exc:
        assert exc.key.startswith("hyperparameters.x") and "\n" not in str(exc)
        return
    if kind == "int":
        assert type(point) is int and low <= point <= high
    elif not grid:
        assert math.isfinite(point)
