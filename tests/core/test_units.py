"""Length units (design section 3): parsing, rejections, conversions, rounding."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from detflow import BatchMath, ConfigError, Length, Unit, parse_length

# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("600 records", Length(600, Unit.RECORDS)),
        ("5 epochs", Length(5, Unit.EPOCHS)),
        ("7 steps", Length(7, Unit.STEPS)),
        ("10 batches", Length(10, Unit.BATCHES)),
        ({"records": 600}, Length(600, Unit.RECORDS)),
        ({"epochs": 5}, Length(5, Unit.EPOCHS)),
        ("1 epoch", Length(1, Unit.EPOCHS)),
        ("1 record", Length(1, Unit.RECORDS)),
        ("3 step", Length(3, Unit.STEPS)),
        ({"epoch": 2}, Length(2, Unit.EPOCHS)),
        ("  600   records  ", Length(600, Unit.RECORDS)),
        ("600\trecords", Length(600, Unit.RECORDS)),
        ("600records", Length(600, Unit.RECORDS)),
        ("600 Records", Length(600, Unit.RECORDS)),
    ],
)
def test_parse_length_accepts_the_written_forms(raw: Any, expected: Length) -> None:
    assert parse_length(raw) == expected


@pytest.mark.parametrize("raw", ["2 batch", {"batch": 2}])
def test_singular_batch_is_accepted(raw: Any) -> None:
    """Singular unit names parse, ``batch`` included."""
    assert parse_length(raw) == Length(2, Unit.BATCHES)


def test_parse_length_returns_a_length_unchanged() -> None:
    length = Length(3, Unit.STEPS)
    assert parse_length(length) is length


def test_length_str_round_trips() -> None:
    for unit in Unit:
        length = Length(12, unit)
        assert parse_length(str(length)) == length


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("0 epochs", "'0 epochs'"),
        ("-3 records", "'-3 records'"),
        ({"epochs": 0}, "{'epochs': 0}"),
        ({"records": -600}, "{'records': -600}"),
        ("1.5 epochs", "'1.5 epochs'"),
        ({"epochs": 1.5}, "{'epochs': 1.5}"),
        ({"epochs": "5"}, "{'epochs': '5'}"),
        ("5 fortnights", "'5 fortnights'"),
        ({"fortnights": 5}, "{'fortnights': 5}"),
        ("epochs", "'epochs'"),
        ("5", "'5'"),
        ("", "''"),
        ("5 epochs 3 records", "'5 epochs 3 records'"),
        (True, "True"),
        ({"epochs": True}, "{'epochs': True}"),
        (5, "5"),
        (None, "None"),
        ({"epochs": 5, "records": 600}, "{'epochs': 5, 'records': 600}"),
        ({}, "{}"),
        ({5: "epochs"}, "{5: 'epochs'}"),
    ],
)
def test_parse_length_rejects_with_the_key_and_value(raw: Any, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_length(raw, key="searcher.max_length")
    message = str(info.value)
    assert message.startswith(f"searcher.max_length = {shown} is not valid")
    assert "records, batches, steps, epochs" in message
    assert "\n" not in message
    assert info.value.key == "searcher.max_length"


def test_two_key_mapping_says_exactly_one_unit() -> None:
    with pytest.raises(ConfigError, match="exactly one unit"):
        parse_length({"epochs": 5, "records": 600}, key="min_validation_period")


# --- conversions (design section 3's table) ------------------------------------------------


@pytest.mark.parametrize(
    ("length", "gbs", "a", "epoch", "batches"),
    [
        # records: ceil(N / gbs)
        ("600 records", 32, 1, None, 19),
        ("608 records", 32, 1, None, 19),
        ("609 records", 32, 1, None, 20),
        ("1 records", 32, 1, None, 1),
        ("32 records", 32, 1, None, 1),
        # batches: N
        ("10 batches", 32, 1, None, 10),
        # steps: N x A
        ("7 steps", 32, 3, None, 21),
        ("1 steps", 8, 4, None, 4),
        # epochs: N x E
        ("5 epochs", 32, 1, 57, 285),
        ("1 epochs", 32, 1, 1, 1),
        # then rounded up to whole optimizer steps (a multiple of A)
        ("10 batches", 32, 4, None, 12),
        ("600 records", 32, 2, None, 20),
        ("3 epochs", 32, 2, 5, 16),
        ("8 batches", 32, 4, None, 8),
    ],
)
def test_to_batches_follows_the_design_table(
    length: str, gbs: int, a: int, epoch: int | None, batches: int
) -> None:
    math_ = BatchMath(gbs, a, epoch)
    assert math_.to_batches(parse_length(length)) == batches
    assert math_.to_steps(parse_length(length)) == batches // a


def test_records_per_epoch_gives_e_as_ceil_of_records_over_gbs() -> None:
    geometry = BatchMath.from_records_per_epoch(32, 1, 1797)
    assert geometry.batches_per_epoch == math.ceil(1797 / 32) == 57
    assert geometry.to_batches(parse_length("2 epochs")) == 114
    assert BatchMath.from_records_per_epoch(32, 1, 64).batches_per_epoch == 2
    assert BatchMath.from_records_per_epoch(32, 1, 1).batches_per_epoch == 1


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100"])
def test_records_per_epoch_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(ConfigError) as info:
        BatchMath.from_records_per_epoch(32, 1, bad)
    assert str(info.value).startswith(f"records_per_epoch = {bad!r} is not valid")


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"global_batch_size": 0}, "global_batch_size"),
        ({"global_batch_size": -32}, "global_batch_size"),
        ({"global_batch_size": 32, "aggregation_frequency": 0}, "aggregation_frequency"),
        ({"global_batch_size": 32, "batches_per_epoch": 0}, "batches_per_epoch"),
        ({"global_batch_size": 32.0}, "global_batch_size"),
    ],
)
def test_batch_math_rejects_bad_geometry(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        BatchMath(**kwargs)
    assert str(info.value).startswith(f"{key} = ")


def test_the_design_rounding_line() -> None:
    line = BatchMath(32).describe(parse_length("600 records"), key="max_length")
    assert line == "max_length 600 records -> 19 batches (608 records) at global_batch_size 32"


def test_rounding_line_names_aggregation_frequency_when_it_rounds() -> None:
    line = BatchMath(32, 4).describe(parse_length("10 batches"), key="searcher.max_length")
    assert line == (
        "searcher.max_length 10 batches -> 12 batches (384 records) at global_batch_size 32,"
        " aggregation_frequency 4"
    )


@pytest.mark.parametrize("length", ["608 records", "10 batches", "3 steps", "2 epochs"])
def test_no_rounding_line_when_exact(length: str) -> None:
    assert BatchMath(32, 1, 10).describe(parse_length(length), key="max_length") is None


def test_epochs_without_epoch_length_name_records_per_epoch() -> None:
    geometry = BatchMath(32, 1, None)
    with pytest.raises(ConfigError) as info:
        geometry.to_batches(parse_length("5 epochs"), key="searcher.max_length")
    message = str(info.value)
    assert message.startswith("searcher.max_length = '5 epochs' is not valid")
    assert "records_per_epoch" in message
    # the other units need no epoch length
    assert geometry.to_batches(parse_length("600 records")) == 19


def test_in_unit_without_epoch_length_names_records_per_epoch() -> None:
    with pytest.raises(ConfigError, match="records_per_epoch"):
        BatchMath(32).in_unit(10, Unit.EPOCHS)


def test_in_unit_inverts_exact_batches() -> None:
    geometry = BatchMath(32, 2, 5)
    assert geometry.in_unit(19, Unit.RECORDS) == 608
    assert geometry.in_unit(20, Unit.STEPS) == 10
    assert geometry.in_unit(10, Unit.EPOCHS) == 2
    assert geometry.in_unit(7, Unit.BATCHES) == 7


def test_scaled_length_stays_exact() -> None:
    assert Length(8, Unit.EPOCHS).scaled(Fraction(1, 4)) == Length(2, Unit.EPOCHS)
    half = Length(3, Unit.EPOCHS).scaled(Fraction(1, 2))
    assert half.value == Fraction(3, 2)
    assert BatchMath(32, 1, 10).to_batches(half) == 15


# --- properties ----------------------------------------------------------------------------

geometries = st.builds(
    BatchMath,
    global_batch_size=st.integers(1, 4096),
    aggregation_frequency=st.integers(1, 16),
    batches_per_epoch=st.one_of(st.none(), st.integers(1, 10_000)),
)
lengths = st.builds(
    Length,
    value=st.one_of(
        st.integers(1, 10**7),
        st.fractions(min_value=Fraction(1, 1000), max_value=1000).filter(lambda f: f > 0),
    ),
    unit=st.sampled_from(list(Unit)),
)


@given(geometries, lengths)
def test_targets_are_whole_positive_steps_never_below_the_ask(
    geometry: BatchMath, length: Length
) -> None:
    assume(length.unit is not Unit.EPOCHS or geometry.batches_per_epoch is not None)
    a = geometry.aggregation_frequency
    batches = geometry.to_batches(length)
    exact = geometry.exact_batches(length)
    assert batches >= 1
    assert batches % a == 0
    assert batches == geometry.to_steps(length) * a
    assert batches >= exact
    assert batches - exact < a
    assert geometry.in_unit(batches, length.unit) >= length.value


@given(geometries, st.integers(1, 10**7), st.sampled_from(list(Unit)))
def test_parsed_strings_and_mappings_convert_alike(
    geometry: BatchMath, amount: int, unit: Unit
) -> None:
    assume(unit is not Unit.EPOCHS or geometry.batches_per_epoch is not None)
    text = parse_length(f"{amount} {unit.value}")
    mapping = parse_length({unit.value: amount})
    assert text == mapping
    assert geometry.to_batches(text) == geometry.to_batches(mapping)


@given(geometries, st.integers(1, 10**6), st.sampled_from(list(Unit)))
def test_describe_speaks_exactly_when_rounding_changed_the_figure(
    geometry: BatchMath, amount: int, unit: Unit
) -> None:
    assume(unit is not Unit.EPOCHS or geometry.batches_per_epoch is not None)
    length = Length(amount, unit)
    line = geometry.describe(length, key="searcher.max_length")
    exact = geometry.exact_batches(length) == geometry.to_batches(length)
    assert (line is None) == exact
    if line is not None:
        batches = geometry.to_batches(length)
        assert line.startswith(f"searcher.max_length {length} -> {batches} batches")


@given(st.integers(max_value=0), st.sampled_from(list(Unit)))
def test_non_positive_amounts_are_rejected(amount: int, unit: Unit) -> None:
    with pytest.raises(ConfigError, match=r"^searcher\.max_length = "):
        parse_length(f"{amount} {unit.value}", key="searcher.max_length")
    with pytest.raises(ConfigError, match=r"^searcher\.max_length = "):
        parse_length({unit.value: amount}, key="searcher.max_length")


@given(st.one_of(st.text(max_size=30), st.dictionaries(st.text(max_size=10), st.integers())))
def test_arbitrary_input_parses_or_raises_config_error(raw: Any) -> None:
    try:
        length = parse_length(raw, key="k")
    except ConfigError as exc:
        assert str(exc).startswith("k = ")
    else:
        assert isinstance(length.value, int) and length.value > 0
        assert isinstance(length.unit, Unit)
