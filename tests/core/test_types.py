"""A value from code, the command line or the searcher keeps the type the experiment declared."""

from __future__ import annotations

from typing import Any

import pytest

from detflow._core.errors import ConfigError
from detflow._core.merge import HparamLayers, check_types, merge_hparams

REFUSED = [
    ({"hidden": 16}, {"hidden": 12.5}, "an integer"),
    ({"hidden": 16}, {"hidden": "wide"}, "an integer"),
    ({"hidden": 16}, {"hidden": True}, "an integer"),
    ({"lr": 0.1}, {"lr": "abc"}, "a number"),
    ({"lr": 0.1}, {"lr": False}, "a number"),
    ({"nesterov": True}, {"nesterov": 1}, "true or false"),
    ({"opt": {"momentum": 0.9}}, {"opt": {"momentum": "high"}}, "a number"),
    ({"lr": "${df.scale:0.1,linear}"}, {"lr": "abc"}, "a number (what it scales to)"),
]


@pytest.mark.parametrize(("config", "override", "expected"), REFUSED)
def test_a_value_of_another_type_is_refused_naming_the_key(
    config: dict[str, Any], override: dict[str, Any], expected: str
) -> None:
    layers = HparamLayers(config=config, override=override)
    with pytest.raises(ConfigError) as caught:
        check_types(layers, merge_hparams(layers))
    assert caught.value.key.startswith("hyperparameters.")
    assert expected in caught.value.expected


ACCEPTED = [
    ({"lr": 0.1}, {"lr": 1}),  # an int where a float stands
    ({"hidden": 16}, {"hidden": 32}),
    ({"name": "sgd"}, {"name": 3}),  # strings take anything Hydra parses
    ({"lr": "${df.scale:0.1,linear}"}, {"lr": 0.2}),
    ({"lr": "${df.scale:0.1,linear}"}, {"lr": "${df.scale:0.2,sqrt}"}),
    ({"layers": [1, 2]}, {"layers": [3]}),
    ({}, {"new": 1.5}),  # nothing declared it
    ({"maybe": None}, {"maybe": 4}),
]


@pytest.mark.parametrize(("config", "override"), ACCEPTED)
def test_a_value_of_the_declared_kind_is_accepted(
    config: dict[str, Any], override: dict[str, Any]
) -> None:
    layers = HparamLayers(config=config, override=override)
    check_types(layers, merge_hparams(layers))


def test_the_searchers_and_codes_values_are_checked_too() -> None:
    for layers in (
        HparamLayers(config={"dims": 8}, searcher={"dims": 2.5}),
        HparamLayers(default={"dims": 8}, code={"dims": 2.5}),
    ):
        with pytest.raises(ConfigError, match=r"hyperparameters.dims = 2.5"):
            check_types(layers, merge_hparams(layers))
