"""``${df.expr:...}`` in a config: resolved after the merge, in dependency order, refused in
one line naming the key when it cannot be computed."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest
from omegaconf import OmegaConf

import detflow
from detflow import ConfigError, load_config
from tests.support import REPO


def config(**hparams: Any) -> dict[str, Any]:
    return {
        "hyperparameters": {"global_batch_size": 8, **hparams},
        "searcher": {"max_length": "2 batches"},
    }


def test_a_derived_value_follows_the_merged_value_of_its_input() -> None:
    cfg = config(width=16, hidden=detflow.derived("4 * width"))
    loaded = load_config(cfg, overrides=["hyperparameters.width=16"])
    assert loaded.experiment.hyperparameters["hidden"] == 64
    record = loaded.hparams["hyperparameters.hidden"]
    assert record.value == 64
    assert record.expression == "${df.expr:4 * width}"
    assert record.source.value == "config"  # the layer the expression came from
    assert loaded.hparams["hyperparameters.width"].source.value == "override"


def test_a_value_given_in_code_re_derives() -> None:
    cfg = config(width=8, hidden="${df.expr:4 * hyperparameters.width}")
    loaded = load_config(cfg, hparams={"width": 32})
    assert loaded.experiment.hyperparameters["hidden"] == 128


def test_derived_values_use_derived_and_scaled_values_in_dependency_order() -> None:
    cfg = config(
        base_batch_size=4,
        lr=detflow.scaled(0.1, "linear"),  # 0.2 at k = 2
        warmup="${df.expr:'int(1000 * lr)'}",
        heads=detflow.derived("hidden // 16"),  # before hidden: order does not matter
        hidden=detflow.derived("4 * width"),
        width=16,
        eval_batch=detflow.derived("2 * global_batch_size"),
        both=detflow.derived("min(heads, warmup) + max(lr, 1)"),
    )
    hp = load_config(cfg).experiment.hyperparameters
    assert (hp["lr"], hp["warmup"], hp["heads"], hp["hidden"]) == (0.2, 200, 4, 64)
    assert hp["eval_batch"] == 16 and hp["both"] == 5
    assert isinstance(hp["hidden"], int) and isinstance(hp["lr"], float)


def test_a_name_is_found_beside_the_key_then_outwards() -> None:
    cfg = config(width=2, model={"width": 3, "hidden": "${df.expr:width * global_batch_size}"})
    hp = load_config(cfg).experiment.hyperparameters
    assert hp["model"]["hidden"] == 24  # model.width, then hyperparameters.global_batch_size
    cfg = config(hidden="${df.expr:optimizations.aggregation_frequency * 4}")
    cfg["optimizations"] = {"aggregation_frequency": 2}
    assert load_config(cfg).experiment.hyperparameters["hidden"] == 8


def test_yaml_links_fields_the_same_way() -> None:
    yaml = """
    hyperparameters:
      global_batch_size: 8
      width: 16
      hidden: ${df.expr:4 * width}
      heads: ${df.expr:'max(hidden // 64, 1)'}
    searcher: {max_length: 2 batches}
    """
    cfg = OmegaConf.create(yaml.replace("\n    ", "\n"))
    hp = load_config(cfg, overrides=[]).experiment.hyperparameters
    assert (hp["hidden"], hp["heads"]) == (64, 1)


def _error(cfg: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(cfg, overrides=[])
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_cycle_is_refused_naming_the_chain() -> None:
    message = _error(config(width="${df.expr:hidden}", hidden="${df.expr:4 * width}"))
    assert "hidden -> width -> hidden" in message or "width -> hidden -> width" in message
    message = _error(config(width="${hyperparameters.hidden}", hidden="${df.expr:4 * width}"))
    assert "hidden -> width -> hidden" in message
    assert "hidden -> hidden" in _error(config(hidden="${df.expr:hidden + 1}"))


def test_an_unknown_key_is_refused_naming_it() -> None:
    message = _error(config(width=16, hidden="${df.expr:4 * widht}"))
    assert message.startswith("hyperparameters.hidden = '${df.expr:4 * widht}'")
    assert "widht is not a key" in message


def test_code_outside_the_grammar_is_refused_naming_the_part() -> None:
    message = _error(config(hidden="""${df.expr:'__import__("os")'}"""))
    assert message.startswith("hyperparameters.hidden = ")
    assert "a call of __import__" in message
    # Unquoted parentheses are OmegaConf's grammar error: the line says to quote.
    message = _error(config(hidden="${df.expr:min(width, 4)}"))
    assert "quote an expression" in message and message.startswith("hyperparameters.hidden")


def test_an_input_that_is_not_a_number_is_named() -> None:
    message = _error(config(width="abc", hidden="${df.expr:2 * width}"))
    assert "'width': is 'abc', not a number" in message


def test_an_override_of_a_derived_key_must_be_a_number_and_replaces_it() -> None:
    cfg = config(width=16, hidden=100)
    declared = config(width=16, hidden="${df.expr:4 * width}")["hyperparameters"]
    loaded = load_config(cfg, overrides=["hyperparameters.hidden=100"], declared=declared)
    assert loaded.experiment.hyperparameters["hidden"] == 100
    assert loaded.hparams["hyperparameters.hidden"].expression is None
    with pytest.raises(ConfigError, match="a number \\(what it computes\\)"):
        load_config(
            config(width=16, hidden="abc"),
            overrides=["hyperparameters.hidden=abc"],
            declared=declared,
        )


def test_the_resolver_is_registered_on_import_and_pickles() -> None:
    code = (
        "import detflow; from omegaconf import OmegaConf; "
        "c = OmegaConf.create({'w': 3, 'h': '${df.expr:2 * w}'}); print(c.h)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "6"
    loaded = load_config(config(width=4, hidden=detflow.derived("4 * width")))
    again = pickle.loads(pickle.dumps(loaded))
    assert again.experiment.hyperparameters["hidden"] == 16
    cfg = pickle.loads(pickle.dumps(OmegaConf.create({"w": 3, "h": "${df.expr:2 * w}"})))
    assert cfg.h == 6


def test_a_struct_config_resolves_too() -> None:
    cfg = OmegaConf.create(
        {"hyperparameters": {"width": 3, "hidden": "${df.expr:4 * hyperparameters.width}"}}
    )
    OmegaConf.set_struct(cfg, True)  # as Hydra's --cfg job --resolve holds it
    assert cfg.hyperparameters.hidden == 12
