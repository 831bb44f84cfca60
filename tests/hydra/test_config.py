"""``load_config``: layers from a composed config, code, command line and searcher; one merge;
resolve; validate. And every bad input of issue #2 item 6, before any work starts."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from omegaconf import OmegaConf

from detflow import (
    ConfigError,
    Experiment,
    ExperimentConfig,
    Length,
    OptimizationsConfig,
    ResourcesConfig,
    SearcherConfig,
    Source,
    Unit,
    load_config,
    scaled,
)
from detflow._hydra.config import SEARCHER_KEYS_ENV


@dataclass
class WithDefaults(ExperimentConfig):
    """A user's schema whose dataclass gives default hyperparameters."""

    hyperparameters: dict[str, Any] = field(
        default_factory=lambda: {
            "global_batch_size": 32,
            "base_batch_size": 32,
            "lr": scaled(0.1, "linear"),
            "wd": 0.01,
            "dropout": 0.1,
        }
    )


def base(**hyperparameters: Any) -> dict[str, Any]:
    """A valid plain-dict experiment; ``hyperparameters`` are added to its own."""
    return {
        "name": "t",
        "hyperparameters": {
            "global_batch_size": 32,
            "base_batch_size": 32,
            "lr": scaled(0.1, "linear"),
            **hyperparameters,
        },
        "searcher": {"name": "single", "max_length": "2 epochs"},
    }


def sources(loaded: Any) -> dict[str, str]:
    return {key: record.source.value for key, record in loaded.hparams.items()}


def values(loaded: Any) -> dict[str, Any]:
    return {key: record.value for key, record in loaded.hparams.items()}


# --- layers and sources --------------------------------------------------------------------


def test_every_layer_is_read_and_recorded() -> None:
    cfg = WithDefaults()
    cfg.hyperparameters["wd"] = 0.05  # the experiment changes a default: config
    cfg.hyperparameters["lr"] = 0.3  # as Hydra composed it from the command line
    cfg.hyperparameters["depth"] = 4  # as Hydra composed it from the command line
    cfg.hyperparameters["width"] = 64  # the searcher chose it
    loaded = load_config(
        cfg,
        {"dropout": 0.2, "momentum": 0.9, "depth": 2, "width": 8},
        overrides=["hyperparameters.lr=0.3", "+hyperparameters.depth=4", "+experiment=x"],
        searcher_keys=["hyperparameters.width"],
    )
    assert sources(loaded) == {
        "hyperparameters.global_batch_size": "default",
        "hyperparameters.base_batch_size": "default",
        "hyperparameters.lr": "override",
        "hyperparameters.wd": "config",
        "hyperparameters.dropout": "code",
        "hyperparameters.depth": "override",
        "hyperparameters.width": "searcher",
        "hyperparameters.momentum": "code",
    }
    assert values(loaded) == {
        "hyperparameters.global_batch_size": 32,
        "hyperparameters.base_batch_size": 32,
        "hyperparameters.lr": 0.3,
        "hyperparameters.wd": 0.05,
        "hyperparameters.dropout": 0.2,
        "hyperparameters.depth": 4,
        "hyperparameters.width": 64,
        "hyperparameters.momentum": 0.9,
    }
    replaced = {r.key: (r.code_value, r.value, r.winner) for r in loaded.merged.replaced}
    assert replaced == {
        "depth": (2, 4, Source.OVERRIDE),
        "width": (8, 64, Source.SEARCHER),
    }


def test_plain_dict_and_dataclass_instance_load_alike() -> None:
    as_dict = base()
    as_dataclass = ExperimentConfig(
        name="t",
        hyperparameters=copy.deepcopy(as_dict["hyperparameters"]),
        searcher=SearcherConfig(name="single", max_length="2 epochs"),
    )
    from_dict = load_config(as_dict, {"momentum": 0.9}, overrides=[], searcher_keys=[])
    from_dataclass = load_config(as_dataclass, {"momentum": 0.9}, overrides=[], searcher_keys=[])
    assert from_dict.experiment == from_dataclass.experiment
    assert from_dict.hparams == from_dataclass.hparams
    assert sources(from_dict)["hyperparameters.lr"] == "config"


def test_dataclass_class_itself_is_accepted_and_its_defaults_are_the_default_layer() -> None:
    loaded = load_config(WithDefaults, overrides=[], searcher_keys=[])
    assert set(sources(loaded).values()) == {"default"}
    assert loaded.experiment.hyperparameters["lr"] == pytest.approx(0.1)


def test_a_default_the_config_repeats_stays_default() -> None:
    cfg = WithDefaults()
    cfg.hyperparameters["wd"] = 0.01  # same as the dataclass default
    assert sources(load_config(cfg, overrides=[], searcher_keys=[]))["hyperparameters.wd"] == (
        "default"
    )


def test_searcher_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SEARCHER_KEYS_ENV, "hyperparameters.lr,hyperparameters.base_batch_size")
    cfg = base()
    cfg["hyperparameters"]["lr"] = 0.01
    loaded = load_config(cfg, {"lr": 0.5}, overrides=[])
    assert sources(loaded)["hyperparameters.lr"] == "searcher"
    assert sources(loaded)["hyperparameters.base_batch_size"] == "searcher"
    assert sources(loaded)["hyperparameters.global_batch_size"] == "config"
    assert loaded.experiment.hyperparameters["lr"] == 0.01


def test_a_whole_hyperparameters_override_marks_every_key() -> None:
    loaded = load_config(base(), overrides=["hyperparameters={a:1}"], searcher_keys=[])
    assert set(sources(loaded).values()) == {"override"}


def test_a_deleted_key_override_is_harmless() -> None:
    cfg = base(wd=0.1)
    del cfg["hyperparameters"]["wd"]
    loaded = load_config(cfg, overrides=["~hyperparameters.wd"], searcher_keys=[])
    assert "hyperparameters.wd" not in loaded.hparams


def test_nested_hyperparameters_merge_deeply() -> None:
    cfg = base(opt={"name": "sgd", "momentum": 0.9, "sched": {"warmup": 10}})
    loaded = load_config(cfg, {"opt": {"momentum": 0.8}}, overrides=[], searcher_keys=[])
    assert loaded.experiment.hyperparameters["opt"] == {
        "name": "sgd",
        "momentum": 0.8,
        "sched": {"warmup": 10},
    }
    assert sources(loaded)["hyperparameters.opt.momentum"] == "code"
    assert sources(loaded)["hyperparameters.opt.sched.warmup"] == "config"


# --- derived values resolve after the merge ------------------------------------------------


def test_code_batch_size_rescales_the_config_lr() -> None:
    loaded = load_config(base(), {"global_batch_size": 64}, overrides=[], searcher_keys=[])
    assert loaded.experiment.hyperparameters["lr"] == pytest.approx(0.2)
    assert loaded.experiment.global_batch_size == 64
    assert loaded.resolved["hyperparameters"]["lr"] == pytest.approx(0.2)
    record = loaded.hparams["hyperparameters.lr"]
    assert record.value == pytest.approx(0.2)
    assert record.source is Source.CONFIG
    assert record.expression == "${df.scale:0.1,linear}"
    assert record.to_json() == {
        "value": record.value,
        "source": "config",
        "expression": "${df.scale:0.1,linear}",
    }
    gbs = loaded.hparams["hyperparameters.global_batch_size"]
    assert gbs.to_json() == {"value": 64, "source": "code"}
    assert gbs.expression is None


def test_precedence_config_keeps_the_config_batch_size() -> None:
    cfg = base()
    cfg["hparams_precedence"] = "config"
    loaded = load_config(cfg, {"global_batch_size": 64}, overrides=[], searcher_keys=[])
    assert loaded.experiment.hyperparameters["lr"] == pytest.approx(0.1)
    assert sources(loaded)["hyperparameters.global_batch_size"] == "config"
    assert [str(r) for r in loaded.merged.replaced] == [
        "hyperparameters.global_batch_size: code gave 64, config gave 32; using config's 32"
    ]


def test_override_batch_size_beats_code_and_rescales() -> None:
    cfg = base()
    cfg["hyperparameters"]["global_batch_size"] = 128  # as composed from the command line
    loaded = load_config(
        cfg,
        {"global_batch_size": 64},
        overrides=["hyperparameters.global_batch_size=128"],
        searcher_keys=[],
    )
    assert loaded.experiment.hyperparameters["lr"] == pytest.approx(0.4)
    assert sources(loaded)["hyperparameters.global_batch_size"] == "override"


def test_aggregation_frequency_scales_too() -> None:
    cfg = base(warmup=scaled(1000, "inverse"), beta=scaled(0.9, "adam_beta"))
    cfg["optimizations"] = {"aggregation_frequency": 2}
    hp = load_config(cfg, overrides=[], searcher_keys=[]).experiment.hyperparameters
    assert hp["lr"] == pytest.approx(0.2)
    assert hp["warmup"] == 500
    assert type(hp["warmup"]) is int
    assert hp["beta"] == pytest.approx(0.8)


def test_code_can_hold_the_interpolation() -> None:
    loaded = load_config(
        base(),
        {"lr": scaled(0.05, "sqrt"), "global_batch_size": 128},
        overrides=[],
        searcher_keys=[],
    )
    assert loaded.experiment.hyperparameters["lr"] == pytest.approx(0.1)
    assert loaded.hparams["hyperparameters.lr"].source is Source.CODE
    assert loaded.hparams["hyperparameters.lr"].expression == "${df.scale:0.05,sqrt}"


def test_lengths_and_notices() -> None:
    cfg = base()
    cfg["searcher"]["max_length"] = {"epochs": 3, "records": 600}  # merged key by key
    cfg["min_validation_period"] = {"batches": 10}
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(600, Unit.RECORDS)
    assert experiment.min_validation_period == Length(10, Unit.BATCHES)
    assert experiment.min_checkpoint_period == Length(1, Unit.EPOCHS)
    assert experiment.notices == (
        "searcher.max_length had 2 units {'epochs': 3, 'records': 600}; using the one given last",
    )


def test_experiment_batch_math_uses_records_per_epoch() -> None:
    cfg = base()
    cfg["records_per_epoch"] = 1000
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.batch_math(batches_per_epoch=999).batches_per_epoch == 32
    assert experiment.batch_math(None).to_batches(experiment.searcher.max_length) == 64
    without = load_config(base(), overrides=[], searcher_keys=[]).experiment
    with pytest.raises(ConfigError, match="records_per_epoch"):
        without.batch_math(None).to_batches(without.searcher.max_length, "searcher.max_length")


def test_the_composed_dictconfig_is_not_changed() -> None:
    cfg = OmegaConf.create(base())
    before = OmegaConf.to_container(cfg)
    load_config(cfg, {"global_batch_size": 64}, overrides=[], searcher_keys=[])
    assert OmegaConf.to_container(cfg) == before


@pytest.mark.parametrize(("cfg", "key"), [(42, "cfg"), ("x", "cfg"), (None, "cfg")])
def test_cfg_must_be_a_config(cfg: Any, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key} = "):
        load_config(cfg, overrides=[], searcher_keys=[])


def test_code_hparams_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match=r"^init\(hparams=\.\.\.\) = \[\('lr', 0\.1\)\]"):
        load_config(base(), [("lr", 0.1)], overrides=[], searcher_keys=[])  # type: ignore[arg-type]


# --- every bad input of issue #2 item 6 ----------------------------------------------------
#
# (path, bad value, the "key = value" the one-line error must contain)

BAD: list[tuple[str, tuple[str, ...], Any, str]] = [
    ("length_zero", ("searcher", "max_length"), "0 epochs", "searcher.max_length = '0 epochs'"),
    (
        "length_negative",
        ("searcher", "max_length"),
        "-5 records",
        "searcher.max_length = '-5 records'",
    ),
    (
        "length_zero_mapping",
        ("searcher", "max_length"),
        {"epochs": 0},
        "searcher.max_length = {'epochs': 0}",
    ),
    (
        "length_unknown_unit",
        ("searcher", "max_length"),
        "5 fortnights",
        "searcher.max_length = '5 fortnights'",
    ),
    (
        "length_non_integer",
        ("searcher", "max_length"),
        "1.5 epochs",
        "searcher.max_length = '1.5 epochs'",
    ),
    (
        "length_non_integer_mapping",
        ("searcher", "max_length"),
        {"epochs": 1.5},
        "searcher.max_length = {'epochs': 1.5}",
    ),
    ("period_zero", ("min_validation_period",), "0 batches", "min_validation_period = '0 batches'"),
    (
        "period_unknown_unit",
        ("min_checkpoint_period",),
        "2 parsecs",
        "min_checkpoint_period = '2 parsecs'",
    ),
    ("searcher_name", ("searcher", "name"), "bogus", "searcher.name = 'bogus'"),
    (
        "gbs_zero",
        ("hyperparameters", "global_batch_size"),
        0,
        "hyperparameters.global_batch_size = 0",
    ),
    (
        "gbs_negative",
        ("hyperparameters", "global_batch_size"),
        -32,
        "hyperparameters.global_batch_size = -32",
    ),
    (
        "gbs_float",
        ("hyperparameters", "global_batch_size"),
        32.5,
        "hyperparameters.global_batch_size = 32.5",
    ),
    (
        "aggregation_zero",
        ("optimizations", "aggregation_frequency"),
        0,
        "optimizations.aggregation_frequency = 0",
    ),
    (
        "aggregation_negative",
        ("optimizations", "aggregation_frequency"),
        -2,
        "optimizations.aggregation_frequency = -2",
    ),
    ("slots_zero", ("resources", "slots_per_trial"), 0, "resources.slots_per_trial = 0"),
    ("slots_negative", ("resources", "slots_per_trial"), -1, "resources.slots_per_trial = -1"),
    (
        "gbs_not_divisible",
        ("resources", "slots_per_trial"),
        3,
        "hyperparameters.global_batch_size = 32",
    ),
    ("precedence", ("hparams_precedence",), "yaml", "hparams_precedence = 'yaml'"),
    ("records_per_epoch_zero", ("records_per_epoch",), 0, "records_per_epoch = 0"),
    ("divisor_one", ("searcher", "divisor"), 1, "searcher.divisor = 1"),
    ("max_trials_zero", ("searcher", "max_trials"), 0, "searcher.max_trials = 0"),
    (
        "base_batch_size_zero",
        ("hyperparameters", "base_batch_size"),
        0,
        "hyperparameters.base_batch_size = 0",
    ),
    (
        "gbs_missing",
        ("hyperparameters", "global_batch_size"),
        None,
        "hyperparameters.global_batch_size = None",
    ),
]
BAD_IDS = [case[0] for case in BAD]


def with_value(cfg: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for part in path[:-1]:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return cfg


def assert_one_line_naming(exc: ConfigError, needles: str | tuple[str, ...]) -> None:
    """``needles``: "key = value", or texts that together name the key and the value."""
    message = str(exc)
    for needle in (needles,) if isinstance(needles, str) else needles:
        assert needle in message, message
    assert "is not valid: expected" in message
    assert "\n" not in message


def resolved_base() -> dict[str, Any]:
    cfg = base()
    cfg["hyperparameters"]["lr"] = 0.1
    return cfg


@pytest.mark.parametrize(("name", "path", "value", "needle"), BAD, ids=BAD_IDS)
def test_bad_input_via_experiment_from_mapping(
    name: str, path: tuple[str, ...], value: Any, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Experiment.from_mapping(with_value(resolved_base(), path, value))
    assert_one_line_naming(info.value, needle)


@pytest.mark.parametrize(("name", "path", "value", "needle"), BAD, ids=BAD_IDS)
def test_bad_input_via_load_config_without_scaled_values(
    name: str, path: tuple[str, ...], value: Any, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(with_value(resolved_base(), path, value), overrides=[], searcher_keys=[])
    assert_one_line_naming(info.value, needle)


def test_slots_error_says_what_is_accepted() -> None:
    with pytest.raises(ConfigError) as info:
        Experiment.from_mapping(with_value(resolved_base(), ("resources", "slots_per_trial"), 3))
    assert "a multiple of resources.slots_per_trial (3)" in str(info.value)


def test_missing_hyperparameters_section() -> None:
    cfg = resolved_base()
    del cfg["hyperparameters"]
    with pytest.raises(ConfigError, match=r"^hyperparameters = None is not valid"):
        Experiment.from_mapping(cfg)


# Through load_config, with derived values in the config: what a real experiment looks like.
# The "scaled_" cases: the df.scale resolver reads the bad value while resolving
# hyperparameters.lr; the error must still name the key and value that are wrong (not only
# hyperparameters.lr and its expression).
SCALED_BAD: list[tuple[str, dict[str, Any], str | tuple[str, ...]]] = [
    (
        "scale_unknown_rule",
        {"hyperparameters": {"lr": "${df.scale:0.1,cubic}"}},
        ("hyperparameters.lr = ", "cubic"),
    ),
    (
        "scale_adam_beta_pushed_to_one",
        {"hyperparameters": {"global_batch_size": 384, "beta1": "${df.scale:0.9,adam_beta}"}},
        ("hyperparameters.beta1 = ", "0.9", "adam_beta"),
    ),
    (
        "scale_adam_beta_exactly_one",
        {"hyperparameters": {"global_batch_size": 64, "beta1": "${df.scale:0.5,adam_beta}"}},
        ("hyperparameters.beta1 = ", "0.5", "adam_beta"),
    ),
    (
        "gbs_mandatory_missing",
        {"hyperparameters": {"global_batch_size": "???"}},
        "hyperparameters.global_batch_size = '???'",
    ),
    (
        "scale_missing_interpolated_key",
        {"hyperparameters": {"lr": "${df.scale:${hyperparameters.base_lr},linear}"}},
        ("hyperparameters.lr = ", "hyperparameters.base_lr"),
    ),
    (
        "scaled_gbs_zero",
        {"hyperparameters": {"global_batch_size": 0}},
        "hyperparameters.global_batch_size = 0",
    ),
    (
        "scaled_gbs_negative",
        {"hyperparameters": {"global_batch_size": -8}},
        "hyperparameters.global_batch_size = -8",
    ),
    (
        "scaled_aggregation_zero",
        {"optimizations": {"aggregation_frequency": 0}},
        "optimizations.aggregation_frequency = 0",
    ),
    (
        "scaled_base_batch_size_zero",
        {"hyperparameters": {"base_batch_size": 0}},
        "hyperparameters.base_batch_size = 0",
    ),
    (
        "scaled_gbs_missing",
        {"hyperparameters": {"global_batch_size": None}},
        "hyperparameters.global_batch_size = None",
    ),
]


def merged_into(cfg: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(cfg)
    for section, entries in change.items():
        for key, value in entries.items():
            out = with_value(out, (section, key), value)
    return out


@pytest.mark.parametrize(
    ("name", "change", "needle"), SCALED_BAD, ids=[case[0] for case in SCALED_BAD]
)
@pytest.mark.parametrize("form", ["dict", "dataclass"])
def test_bad_input_via_load_config_with_scaled_values(
    name: str, change: dict[str, Any], needle: str | tuple[str, ...], form: str
) -> None:
    cfg: Any = merged_into(base(), change)
    if form == "dataclass":
        cfg = ExperimentConfig(
            name="t",
            hyperparameters=cfg["hyperparameters"],
            searcher=SearcherConfig(**cfg["searcher"]),
            optimizations=OptimizationsConfig(**cfg.get("optimizations", {})),
            resources=ResourcesConfig(**cfg.get("resources", {})),
        )
    with pytest.raises(ConfigError) as info:
        load_config(cfg, overrides=[], searcher_keys=[])
    assert_one_line_naming(info.value, needle)


def test_adam_beta_error_says_why() -> None:
    cfg = merged_into(base(), SCALED_BAD[1][1])
    with pytest.raises(ConfigError) as info:
        load_config(cfg, overrides=[], searcher_keys=[])
    assert "adam_beta keeps below 1 at k=12" in str(info.value)


def test_unknown_rule_error_lists_the_rules() -> None:
    cfg = merged_into(base(), SCALED_BAD[0][1])
    with pytest.raises(ConfigError) as info:
        load_config(cfg, overrides=[], searcher_keys=[])
    assert "linear, sqrt, inverse, adam_beta, adam_eps, none" in str(info.value)


@pytest.mark.parametrize(
    "expression", ["${df.scale:0.1,linear", "${df.scale(0.1,linear)}"], ids=["brace", "parens"]
)
def test_a_malformed_interpolation_in_a_dict_is_a_config_error(expression: str) -> None:
    """A plain dict holding a malformed interpolation: one ConfigError naming the key."""
    with pytest.raises(ConfigError) as info:
        load_config(base(lr=expression), overrides=[], searcher_keys=[])
    assert "hyperparameters.lr" in str(info.value)


def test_hyperparameter_keys_with_dots_or_empty_are_refused_before_any_merge() -> None:
    """Found by tests/test_fuzz.py: such keys crashed the dotted-key bookkeeping."""
    cfg = resolved_base()
    cfg["hyperparameters"]["base_batch_size"] = {"": None, ".": None}
    with pytest.raises(ConfigError) as info:
        load_config(cfg, overrides=[], searcher_keys=[])
    assert str(info.value).startswith("hyperparameters.base_batch_size = '' is not valid")
    assert "\n" not in str(info.value)


def test_a_key_with_a_line_break_is_shown_quoted_on_one_line() -> None:
    assert str(ConfigError("hyperparameters.a\nb", 1, "x")).startswith(
        "'hyperparameters.a\\nb' = 1"
    )
