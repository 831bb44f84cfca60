"""``detflow.init``: one merge, ``hparams.json`` with each key's value and source, warnings."""

from __future__ import annotations

import copy
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.version import VersionBase
from omegaconf import DictConfig, open_dict, read_write

import conf
import detflow
from detflow import ConfigError, init, scaled
from detflow._hydra.config import SEARCHER_KEYS_ENV
from tests.support import REPO


def experiment(precedence: str | None = None, **hyperparameters: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "t",
        "hyperparameters": {"global_batch_size": 32, **hyperparameters},
        "searcher": {"max_length": "2 epochs"},
    }
    if precedence is not None:
        cfg["hparams_precedence"] = precedence
    return cfg


def hparams_json(run_dir: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((run_dir / "hparams.json").read_text())
    assert isinstance(data, dict)
    return data


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "detflow" and r.levelno == logging.WARNING
    ]


@pytest.fixture(autouse=True)
def _no_searcher_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEARCHER_KEYS_ENV, raising=False)


# --- each precedence case, as hparams.json records it --------------------------------------


def test_config_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="detflow")
    run = init(experiment(lr=0.1), run_dir=tmp_path)
    assert hparams_json(tmp_path) == {
        "hyperparameters.global_batch_size": {"value": 32, "source": "config"},
        "hyperparameters.lr": {"value": 0.1, "source": "config"},
    }
    assert run.hparams == {"global_batch_size": 32, "lr": 0.1}
    assert warnings_of(caplog) == []


def test_code_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = init(experiment(), hparams={"lr": 0.3, "opt": {"name": "sgd"}}, run_dir=tmp_path)
    assert hparams_json(tmp_path) == {
        "hyperparameters.global_batch_size": {"value": 32, "source": "config"},
        "hyperparameters.lr": {"value": 0.3, "source": "code"},
        "hyperparameters.opt.name": {"value": "sgd", "source": "code"},
    }
    assert run.hparams["opt"] == {"name": "sgd"}
    assert warnings_of(caplog) == []


def test_code_beats_config_with_precedence_code(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for precedence in (None, "code"):
        run_dir = tmp_path / str(precedence)
        run = init(experiment(precedence, lr=0.1), hparams={"lr": 0.3}, run_dir=run_dir)
        assert hparams_json(run_dir)["hyperparameters.lr"] == {"value": 0.3, "source": "code"}
        assert run.hparams["lr"] == 0.3
    assert warnings_of(caplog) == []


def test_config_beats_code_with_precedence_config_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = init(experiment("config", lr=0.1), hparams={"lr": 0.3, "wd": 0.01}, run_dir=tmp_path)
    records = hparams_json(tmp_path)
    assert records["hyperparameters.lr"] == {"value": 0.1, "source": "config"}
    assert records["hyperparameters.wd"] == {"value": 0.01, "source": "code"}
    assert run.hparams["lr"] == 0.1
    assert warnings_of(caplog) == [
        "hyperparameters.lr: code gave 0.3, config gave 0.1; using config's 0.1"
    ]


def test_searcher_beats_code_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a sweep trial the sweeper names the keys it chose in the environment."""
    monkeypatch.setenv(SEARCHER_KEYS_ENV, "hyperparameters.lr")
    run = init(experiment(lr=0.01), hparams={"lr": 0.3}, run_dir=tmp_path)
    assert hparams_json(tmp_path)["hyperparameters.lr"] == {"value": 0.01, "source": "searcher"}
    assert run.hparams["lr"] == 0.01
    assert warnings_of(caplog) == [
        "hyperparameters.lr: code gave 0.3, searcher gave 0.01; using searcher's 0.01"
    ]


def test_derived_values_are_recorded_with_their_expression(tmp_path: Path) -> None:
    cfg = experiment(base_batch_size=32, lr=scaled(0.1, "linear"), warmup=scaled(100, "inverse"))
    run = init(cfg, hparams={"global_batch_size": 64}, run_dir=tmp_path)
    records = hparams_json(tmp_path)
    assert records["hyperparameters.global_batch_size"] == {"value": 64, "source": "code"}
    assert records["hyperparameters.lr"] == {
        "value": pytest.approx(0.2),
        "source": "config",
        "expression": "${df.scale:0.1,linear}",
    }
    assert records["hyperparameters.warmup"] == {
        "value": 50,
        "source": "config",
        "expression": "${df.scale:100,inverse}",
    }
    assert run.hparams["lr"] == pytest.approx(0.2)


# --- override vs code, under a real Hydra config -------------------------------------------


@pytest.fixture
def hydra_job() -> Iterator[Any]:
    """``hydra_job(*overrides)``: compose as ``python train.py OVERRIDES`` would and set
    HydraConfig as Hydra's ``run_job`` does; everything global is restored afterwards."""
    Plugins.instance()
    store = ConfigStore.instance()
    saved = copy.deepcopy(store.repo)
    version_base = VersionBase.instance().getbase()
    hydra_config = HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    conf.register()

    def call(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg), open_dict(cfg):
            del cfg["hydra"]
        return cfg

    try:
        yield call
    finally:
        HydraConfig.instance().cfg = hydra_config
        GlobalHydra.instance().clear()
        store.repo = saved
        VersionBase.instance().version_base = version_base


def test_override_beats_code_and_logs_one_warning_line(
    hydra_job: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = hydra_job("+experiment=quadratic", "+hyperparameters.momentum=0.5")
    run = init(cfg, hparams={"momentum": 0.9, "nesterov": True}, run_dir=tmp_path)
    records = hparams_json(tmp_path)
    assert records["hyperparameters.momentum"] == {"value": 0.5, "source": "override"}
    assert records["hyperparameters.nesterov"] == {"value": True, "source": "code"}
    assert records["hyperparameters.global_batch_size"] == {"value": 8, "source": "config"}
    assert run.hparams["momentum"] == 0.5
    warnings = warnings_of(caplog)
    assert warnings == [
        "hyperparameters.momentum: code gave 0.9, override gave 0.5; using override's 0.5"
    ]
    line = warnings[0]
    for part in ("hyperparameters.momentum", "0.9", "0.5", "override"):
        assert part in line


def test_override_of_the_batch_size_beats_code_and_rescales(
    hydra_job: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = hydra_job("+experiment=quadratic", "hyperparameters.global_batch_size=32")
    run = init(cfg, hparams={"global_batch_size": 16}, run_dir=tmp_path)
    records = hparams_json(tmp_path)
    assert records["hyperparameters.global_batch_size"] == {"value": 32, "source": "override"}
    assert records["hyperparameters.lr"]["value"] == pytest.approx(0.2)  # 0.05 x 32 / 8
    assert run.hparams["lr"] == pytest.approx(0.2)
    assert warnings_of(caplog) == [
        "hyperparameters.global_batch_size: code gave 16, override gave 32; using override's 32"
    ]


def test_same_value_from_override_and_code_does_not_warn(
    hydra_job: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = hydra_job("+experiment=quadratic", "+hyperparameters.momentum=0.9")
    init(cfg, hparams={"momentum": 0.9}, run_dir=tmp_path)
    assert hparams_json(tmp_path)["hyperparameters.momentum"]["source"] == "override"
    assert warnings_of(caplog) == []


def test_a_bad_scaled_value_on_the_command_line_is_a_config_error(
    hydra_job: Any, tmp_path: Path
) -> None:
    """``${df.scale:...}`` given on the command line fails as one ConfigError naming the key."""
    cfg = hydra_job("+experiment=quadratic", "hyperparameters.lr=${df.scale:0.05,cubic}")
    with pytest.raises(ConfigError) as info:
        init(cfg, run_dir=tmp_path)
    assert str(info.value).startswith("hyperparameters.lr = ")
    assert "cubic" in str(info.value)


# --- init without Hydra --------------------------------------------------------------------


def test_init_without_hydra_creates_the_run_dir(tmp_path: Path) -> None:
    assert not HydraConfig.initialized()
    run_dir = tmp_path / "a dir with spaces" / "and 'quotes'" / "run"
    run = init(experiment(lr=0.1), hparams={"momentum": 0.9}, run_dir=str(run_dir))
    assert run.run_dir == run_dir
    assert (run_dir / "hparams.json").is_file()
    assert run.hparams == {"global_batch_size": 32, "lr": 0.1, "momentum": 0.9}
    assert run.experiment.name == "t"
    assert run.is_chief


def test_init_accepts_an_experiment_config_dataclass(tmp_path: Path) -> None:
    cfg = detflow.ExperimentConfig(
        name="dc",
        hyperparameters={"global_batch_size": 64, "base_batch_size": 32, "lr": scaled(0.1)},
    )
    run = init(cfg, run_dir=tmp_path)
    assert run.hparams["lr"] == pytest.approx(0.2)
    assert hparams_json(tmp_path)["hyperparameters.lr"]["source"] == "config"


def test_init_seeds_python_random(tmp_path: Path) -> None:
    cfg = experiment()
    cfg["seed"] = 1234
    init(cfg, run_dir=tmp_path)
    first = random.random()
    init(cfg, run_dir=tmp_path)
    assert random.random() == first == random.Random(1234).random()


def test_a_bad_config_fails_before_any_file_is_written(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = experiment()
    cfg["searcher"]["max_length"] = "0 epochs"
    with pytest.raises(ConfigError, match=r"^searcher\.max_length = '0 epochs' is not valid"):
        init(cfg, run_dir=run_dir)
    assert not run_dir.exists()


def test_notices_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="detflow")
    cfg = experiment()
    cfg["searcher"]["max_length"] = {"epochs": 3, "records": 600}
    run = init(cfg, run_dir=tmp_path)
    assert str(run.experiment.searcher.max_length) == "600 records"
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("searcher.max_length had 2 units" in line for line in infos)


def test_only_rank_zero_writes_hparams_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    run = init({**experiment(), "resources": {"slots_per_trial": 2}}, run_dir=tmp_path)
    assert not run.is_chief
    assert not (tmp_path / "hparams.json").exists()


def test_a_process_count_other_than_slots_per_trial_is_refused_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes on ``slots_per_trial: 1`` would each take the whole global batch."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError) as caught:
        init(experiment(), run_dir=tmp_path)
    assert str(caught.value) == (
        "resources.slots_per_trial = 1 is not valid: expected the trial's process count, "
        "2 (WORLD_SIZE)"
    )
    assert not (tmp_path / "hparams.json").exists()
