"""Unknown keys: each named in one line, with the key meant or the detflow way."""

from __future__ import annotations

from typing import Any

import pytest

from detflow._core.errors import ConfigError
from detflow._core.experiment import Experiment
from detflow._core.keys import UnknownKeys, check_known_keys, did_you_mean

BASE: dict[str, Any] = {"hyperparameters": {"global_batch_size": 8}}

REFUSED = [
    # (config, the keys named, a phrase of the hint)
    ({"searcher": {"max_trial": 5}}, ["searcher.max_trial"], "did you mean searcher.max_trials?"),
    ({"searcher": {"bogus": 1}}, ["searcher.bogus"], "searcher takes"),
    (
        {"resources": {"slot_per_trial": 2}},
        ["resources.slot_per_trial"],
        "did you mean resources.slots_per_trial?",
    ),
    ({"resources": {"slots": 2}}, ["resources.slots"], "use resources.slots_per_trial"),
    (
        {"optimizations": {"aggregation_frequence": 2}},
        ["optimizations.aggregation_frequence"],
        "did you mean optimizations.aggregation_frequency?",
    ),
    (
        {"reproducibility": {"experiment_seed": 42}},
        ["reproducibility.experiment_seed"],
        "Determined's key: use seed",
    ),
    ({"entrypoint": "model_def:Trial"}, ["entrypoint"], "your training script"),
    ({"environment": {"image": "x"}}, ["environment.image"], "hydra.launcher.setup"),
    ({"bind_mounts": []}, ["bind_mounts"], "shared file system"),
    ({"seeds": 3}, ["seeds"], "did you mean seed?"),
    ({"hyperparameter": {}}, ["hyperparameter"], "did you mean hyperparameters?"),
    ({"searcher": {"budget": 10}}, ["searcher.budget"], "Determined's key"),
]


@pytest.mark.parametrize(("extra", "keys", "hint"), REFUSED, ids=[r[1][0] for r in REFUSED])
def test_an_unknown_key_is_refused_naming_it_and_the_way(
    extra: dict[str, Any], keys: list[str], hint: str
) -> None:
    with pytest.raises(UnknownKeys) as caught:
        Experiment.from_mapping({**BASE, **extra})
    assert list(caught.value.hints) == keys
    text = str(caught.value)
    assert "\n" not in text and hint in text and all(k in text for k in keys)
    assert isinstance(caught.value, ConfigError) and caught.value.exit_code == 2


def test_every_unknown_key_is_named_in_the_one_line() -> None:
    with pytest.raises(UnknownKeys) as caught:
        check_known_keys({"seeds": 1, "searcher": {"max_trial": 2, "metrc": "x"}})
    assert str(caught.value).startswith("unknown keys seeds (did you mean seed?), ")
    assert list(caught.value.hints) == ["seeds", "searcher.max_trial", "searcher.metrc"]


@pytest.mark.parametrize(
    "cfg",
    [
        {"trial": "mlp"},  # keys of the user's own root config
        {"data": {"path": "/d"}, "model": {"hidden": 8}, "environment": "dev"},
        {"searcher": {"max_trials": 3, "divisor": 2}},
        {"optimizations": {"aggregation_frequency": 2}},
    ],
)
def test_the_users_own_keys_and_the_schemas_pass(cfg: dict[str, Any]) -> None:
    check_known_keys(cfg)


def test_did_you_mean_lists_the_keys_when_nothing_is_near() -> None:
    assert did_you_mean("zzz", ["b", "a"], "resources.") == "resources takes a, b"
