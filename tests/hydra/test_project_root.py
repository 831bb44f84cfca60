"""detflow's own root config (``@detflow.main()`` with no arguments), composed in-process.

The schema with every key known and typed, ``-m`` defaults to detflow's sweeper and local
launcher, a dict experiment getting every schema key, a subclass of ``ExperimentConfig``
becoming the root's schema, and YAML experiments beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from detflow import ConfigError, ExperimentConfig, SearcherConfig, load_config
from detflow._hydra.store import (
    ROOT_CONFIG_NAME,
    register_experiment,
    register_root_config,
    root_schema,
)
from tests.support import isolated_hydra

Compose = Callable[..., DictConfig]

DICT_EXPERIMENT = {
    "hyperparameters": {"global_batch_size": 8, "lr": 0.1},
    "searcher": {"max_length": "2 epochs"},
}


@dataclass
class ModelConfig(ExperimentConfig):
    """A user's own keys on top of detflow's."""

    model: str = "small"


@dataclass
class WideModelConfig(ModelConfig):
    width: int = 64


@dataclass
class DataConfig(ExperimentConfig):
    data: str = "train.csv"


@pytest.fixture
def root() -> Iterator[Compose]:
    """``root(*overrides, hydra=False)``: the root composed as ``@detflow.main()`` does,
    from a ConfigStore holding only this test's experiments (restored afterwards)."""

    def call(*overrides: str, hydra: bool = False) -> DictConfig:
        name = register_root_config()
        with initialize(version_base="1.3", config_path=None):
            return compose(name, overrides=list(overrides), return_hydra_config=hydra)

    with isolated_hydra():
        ConfigStore.instance().repo.pop("experiment", None)  # other tests' experiments
        yield call


def test_a_dict_experiment_gets_every_schema_key(root: Compose) -> None:
    register_experiment("e", DICT_EXPERIMENT)
    cfg = root("+experiment=e", "searcher.max_trials=3", "searcher.name=random")
    assert OmegaConf.get_type(cfg) is ExperimentConfig
    assert cfg.searcher.max_trials == 3
    assert cfg.searcher.name == "random"
    assert cfg.searcher.max_length == "2 epochs"
    assert cfg.optimizations.aggregation_frequency == 1
    assert cfg.hyperparameters == {"global_batch_size": 8, "lr": 0.1}
    assert load_config(cfg, overrides=[]).experiment.searcher.max_trials == 3


def test_an_unnamed_experiment_is_named_as_registered(root: Compose) -> None:
    register_experiment("e", DICT_EXPERIMENT)
    register_experiment("d", ExperimentConfig(hyperparameters={"global_batch_size": 8}))
    register_experiment("n", {**DICT_EXPERIMENT, "name": "mine"})
    assert root("+experiment=e").name == "e"
    assert root("+experiment=d").name == "d"
    assert root("+experiment=n").name == "mine"


def test_schema_types_are_checked_on_the_command_line(root: Compose) -> None:
    register_experiment("e", DICT_EXPERIMENT)
    with pytest.raises(ConfigCompositionException) as info:
        root("+experiment=e", "searcher.max_trials=three")
    assert "max_trials" in str(info.value.__cause__)


def test_an_unknown_key_is_refused_by_name(root: Compose) -> None:
    register_experiment("e", DICT_EXPERIMENT)
    with pytest.raises(ConfigCompositionException, match=r"searcher\.max_trial"):
        root("+experiment=e", "searcher.max_trial=3")


def test_minus_m_defaults_to_detflows_sweeper_and_local_launcher(root: Compose) -> None:
    register_experiment("e", DICT_EXPERIMENT)
    cfg = root("+experiment=e", hydra=True)
    assert cfg.hydra.sweeper._target_.endswith("DetflowSweeper")
    assert cfg.hydra.launcher._target_.endswith("DetflowLocalLauncher")
    slurm = root("+experiment=e", "hydra/launcher=detflow_slurm", hydra=True)
    assert slurm.hydra.launcher._target_.endswith("DetflowSlurmLauncher")


def test_with_no_experiment_the_root_is_the_schema(root: Compose) -> None:
    cfg = root("+hyperparameters.global_batch_size=4")
    assert OmegaConf.get_type(cfg) is ExperimentConfig
    assert cfg.hyperparameters == {"global_batch_size": 4}
    assert cfg.searcher.max_length == SearcherConfig().max_length


def test_a_subclass_experiment_makes_its_class_the_root(root: Compose) -> None:
    register_experiment("m", ModelConfig(hyperparameters={"global_batch_size": 8}))
    register_experiment("e", DICT_EXPERIMENT)  # a dict merges into any schema
    cfg = root("+experiment=m", "model=large", "searcher.max_trials=2")
    assert OmegaConf.get_type(cfg) is ModelConfig
    assert (cfg.model, cfg.searcher.max_trials, cfg.name) == ("large", 2, "m")
    assert root("+experiment=e").model == "small"
    with pytest.raises(ConfigCompositionException, match="modle"):
        root("+experiment=m", "modle=large")


def test_the_most_derived_class_is_the_root(root: Compose) -> None:
    register_experiment("plain", ExperimentConfig(hyperparameters={"global_batch_size": 8}))
    register_experiment("m", ModelConfig(hyperparameters={"global_batch_size": 8}))
    register_experiment("w", WideModelConfig(hyperparameters={"global_batch_size": 8}))
    assert root_schema() is WideModelConfig
    for name in ("plain", "m", "w"):
        assert root(f"+experiment={name}", "width=128").width == 128


def test_unrelated_experiment_classes_are_refused_in_one_line(root: Compose) -> None:
    register_experiment("m", ModelConfig(hyperparameters={"global_batch_size": 8}))
    register_experiment("d", DataConfig(hyperparameters={"global_batch_size": 8}))
    with pytest.raises(ConfigError) as info:
        root_schema()
    message = str(info.value)
    assert "DataConfig" in message and "ModelConfig" in message and "\n" not in message


def test_an_experiment_registered_again_or_forgotten_no_longer_sets_the_schema(
    root: Compose,
) -> None:
    register_experiment("m", ModelConfig(hyperparameters={"global_batch_size": 8}))
    register_experiment("m", DICT_EXPERIMENT)
    assert root_schema() is ExperimentConfig
    register_experiment("d", DataConfig(hyperparameters={"global_batch_size": 8}))
    ConfigStore.instance().repo["experiment"].pop("d.yaml")
    assert root_schema() is ExperimentConfig


def test_yaml_experiments_beside_the_root(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "y.yaml").write_text(
        "# @package _global_\nhyperparameters:\n  global_batch_size: 16\n"
        "searcher:\n  max_length: 3 batches\n"
    )
    with isolated_hydra():
        name = register_root_config()
        assert name == ROOT_CONFIG_NAME
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            cfg = compose(name, overrides=["+experiment=y", "searcher.max_trials=5"])
    assert OmegaConf.get_type(cfg) is ExperimentConfig
    assert (cfg.hyperparameters.global_batch_size, cfg.searcher.max_trials) == (16, 5)
