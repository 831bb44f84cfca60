"""Compose once (:mod:`detflow._hydra.derive`): a derived trial config equals Hydra's full
``load_sweep_config``, on every example experiment and on a config-group sweep."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

import conf
import detflow
from detflow._core.artifacts import HPARAMS_FILE, SEARCHER_KEYS_ENV
from detflow._hydra.derive import TrialComposer
from detflow._launch.base import TrialProcesses
from tests.support import REPO, isolated_hydra

CONF = REPO / "conf"
EXPERIMENTS = ("digits_mlp", "digits_asha", "quadratic", "digits_mlp_wide", "quadratic_determined")

#: Swept values per experiment, as the sweeper writes them (``overrides_for``): ``++key=v``;
#: a mapping replaces what is there (``~key`` then ``+key=...``).
POINTS: dict[str, list[list[str]]] = {
    "digits_mlp": [
        ["++hyperparameters.lr=0.05", "++hyperparameters.hidden=64"],
        ["++hyperparameters.lr=0.2", "++hyperparameters.hidden=256"],
    ],
    "digits_asha": [
        ["++hyperparameters.lr=0.01", "++hyperparameters.global_batch_size=16"],
        ["++hyperparameters.lr=0.5", "++hyperparameters.global_batch_size=64"],
    ],
    "quadratic": [["++hyperparameters.lr=0.1"], ["++hyperparameters.lr=0.01", "++seed=3"]],
    "digits_mlp_wide": [["++hyperparameters.hidden=32"], ["++hyperparameters.hidden=1024"]],
    "quadratic_determined": [
        [
            "++hyperparameters.lr=0.01",
            "++hyperparameters.dims=3",
            "++hyperparameters.noise=0.5",
            "++hyperparameters.shape.scale=0.3",
        ],
        [
            "++hyperparameters.lr=0.002",
            "++hyperparameters.dims=6",
            "++hyperparameters.noise=2.0",
            "~hyperparameters.shape",
            "+hyperparameters.shape={scale:0.7}",
        ],
    ],
}


def trial_overrides(fixed: list[str], point: list[str], trial_id: int) -> list[str]:
    """A trial's overrides as :func:`detflow._hydra.sweeper.run_sweep` builds them."""
    keys = ",".join(line.lstrip("+~").split("=")[0] for line in point if "hyperparameters." in line)
    return [
        *fixed,
        *point,
        "++resume=true",
        f"hydra.sweep.subdir={trial_id}",
        f"++hydra.job.env_set.{SEARCHER_KEYS_ENV}='{keys}'",
    ]


@pytest.fixture
def hydra_app(tmp_path: Path) -> Iterator[Any]:
    """The example's config loader (``conf.register()`` done), isolated from other tests."""
    with isolated_hydra():
        conf.register()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            yield GlobalHydra.instance().config_loader()


def master_config(loader: Any, tmp_path: Path, *overrides: str) -> DictConfig:
    """The sweep's config, as Hydra's ``-m`` composes it for the sweeper and launcher."""
    config: DictConfig = loader.load_configuration(
        "config", [*overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}"], RunMode.MULTIRUN
    )
    return config


def assert_same(derived: DictConfig, full: DictConfig) -> None:
    """Equal values, key order, flags and schema types, ``hydra.*`` included."""
    plain = OmegaConf.to_container(derived, resolve=False)
    assert plain == OmegaConf.to_container(full, resolve=False)
    assert OmegaConf.to_yaml(derived) == OmegaConf.to_yaml(full)  # the order too
    assert OmegaConf.is_struct(derived) == OmegaConf.is_struct(full)
    assert OmegaConf.get_type(derived) is OmegaConf.get_type(full)
    assert OmegaConf.get_type(derived, "searcher") is OmegaConf.get_type(full, "searcher")
    assert OmegaConf.is_readonly(derived.hydra) == OmegaConf.is_readonly(full.hydra)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_a_derived_trial_config_equals_a_full_compose(
    hydra_app: Any, tmp_path: Path, experiment: str
) -> None:
    fixed = [f"+experiment={experiment}", "searcher.max_concurrent_trials=2"]
    master = master_config(hydra_app, tmp_path, *fixed)
    composer = TrialComposer(hydra_app, master)
    for trial_id, point in enumerate(POINTS[experiment] * 2):
        overrides = trial_overrides(fixed, point, trial_id)
        derived = composer.compose(overrides)
        full = hydra_app.load_sweep_config(master, overrides)
        assert_same(derived, full)
        # The per-job fields, as Hydra sets them: overrides, override_dirname, choices.
        assert list(derived.hydra.overrides.task) == list(full.hydra.overrides.task)
        assert derived.hydra.job.override_dirname == full.hydra.job.override_dirname
        assert derived.hydra.runtime.choices == full.hydra.runtime.choices
        assert derived.hydra.sweep.subdir == str(trial_id)
    # Composed in full once (the base), every trial derived from it.
    assert (composer.counts.bases, composer.counts.full) == (1, 0)
    assert composer.counts.derived == 2 * len(POINTS[experiment])


def test_a_config_group_sweep_composes_each_choice_once(hydra_app: Any, tmp_path: Path) -> None:
    """Trials that choose other config groups (an experiment, Hydra's job logging, a
    package override) get a base of their own; their values are still derived."""
    master = master_config(hydra_app, tmp_path, "+experiment=quadratic")
    composer = TrialComposer(hydra_app, master)
    groups = [
        ["+experiment=quadratic"],
        ["+experiment=digits_mlp"],
        ["+experiment=quadratic", "hydra/job_logging=disabled"],
        ["+experiment@_global_=quadratic_determined"],
    ]
    trial_id = 0
    for _ in range(2):
        for fixed in groups:
            overrides = trial_overrides(
                fixed, [f"++hyperparameters.lr=0.0{trial_id + 1}"], trial_id
            )
            assert_same(composer.compose(overrides), hydra_app.load_sweep_config(master, overrides))
            trial_id += 1
    assert composer.counts.bases == len(groups)
    assert composer.counts.derived == 2 * len(groups)


def test_what_hydra_reads_otherwise_is_composed_in_full(hydra_app: Any, tmp_path: Path) -> None:
    """A search path override, or an override Hydra refuses: Hydra composes (and errs)."""
    master = master_config(hydra_app, tmp_path, "+experiment=quadratic")
    composer = TrialComposer(hydra_app, master)
    searchpath = ["+experiment=quadratic", f"hydra.searchpath=[file://{CONF}]"]
    overrides = trial_overrides(searchpath, ["++hyperparameters.lr=0.3"], 0)
    assert_same(composer.compose(overrides), hydra_app.load_sweep_config(master, overrides))
    assert composer.counts.full == 1 and "search path" in composer.counts.why_full[0]
    from hydra.errors import ConfigCompositionException

    unknown = trial_overrides(["+experiment=quadratic", "bogus=1"], [], 1)
    with pytest.raises(ConfigCompositionException) as derived_error:
        composer.compose(unknown)
    with pytest.raises(ConfigCompositionException) as full_error:
        hydra_app.load_sweep_config(master, unknown)
    assert str(derived_error.value) == str(full_error.value)


class _Composing(TrialProcesses[Any]):
    """The launchers' shared :meth:`TrialProcesses.compose`, nothing started."""

    def start(self, trial_id: int, overrides: list[str]) -> None:
        raise NotImplementedError

    def _poll(self) -> list[Any]:
        return []

    def _busy(self) -> bool:
        return False

    def _outcome(self, job: Any) -> Any:
        raise NotImplementedError

    def _job_return(self, job: Any) -> Any:
        raise NotImplementedError


def test_the_launchers_compose_once_with_the_job_id_and_num(hydra_app: Any, tmp_path: Path) -> None:
    from hydra.types import HydraContext

    fixed = ["+experiment=digits_mlp"]
    master = master_config(hydra_app, tmp_path, *fixed)
    launcher = _Composing()
    launcher.setup(
        hydra_context=HydraContext(config_loader=hydra_app, callbacks=None),  # type: ignore[arg-type]
        task_function=lambda cfg: None,
        config=master,
    )
    for trial_id, point in enumerate(POINTS["digits_mlp"]):
        overrides = trial_overrides(fixed, point, trial_id)
        config, directory = launcher.compose(trial_id, overrides)
        full = hydra_app.load_sweep_config(master, overrides)
        with open_dict(full):
            full.hydra.job.id, full.hydra.job.num = str(trial_id), trial_id
        assert_same(config, full)
        assert directory == tmp_path / "sweep" / str(trial_id)
    assert launcher.composer is not None and launcher.composer.counts.derived == 2


def hparams_json(config: DictConfig, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What ``detflow.init`` writes for this trial config, as a sweep job runs it."""
    HydraConfig.instance().set_config(config)
    for key, value in config.hydra.job.env_set.items():
        monkeypatch.setenv(str(key), str(value))
    task_config = copy.deepcopy(config)  # the task's config, as Hydra's run_job hands it
    with read_write(task_config), open_dict(task_config):
        del task_config["hydra"]
    detflow.init(task_config, run_dir=run_dir)
    return json.loads((run_dir / HPARAMS_FILE).read_text())


@pytest.mark.parametrize("experiment", ["digits_mlp", "quadratic_determined"])
def test_hparams_json_and_its_provenance_equal_a_full_composes(
    hydra_app: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, experiment: str
) -> None:
    fixed = [f"+experiment={experiment}", "hyperparameters.global_batch_size=64"]
    master = master_config(hydra_app, tmp_path, *fixed)
    composer = TrialComposer(hydra_app, master)
    saved = HydraConfig.instance().cfg
    try:
        for trial_id, point in enumerate(POINTS[experiment]):
            overrides = trial_overrides(fixed, point, trial_id)
            derived = composer.compose(overrides)
            full = hydra_app.load_sweep_config(master, overrides)
            ours = hparams_json(derived, tmp_path / f"derived-{trial_id}", monkeypatch)
            theirs = hparams_json(full, tmp_path / f"full-{trial_id}", monkeypatch)
            assert ours == theirs
            sources = {key: record["source"] for key, record in ours.items()}
            assert sources["hyperparameters.global_batch_size"] == "override"
            assert "searcher" in sources.values()
    finally:
        HydraConfig.instance().cfg = saved


def test_the_hydra_internals_derive_replays_are_the_ones_it_was_read_against() -> None:
    """:mod:`detflow._hydra.derive` replays ``_load_configuration_impl`` after the defaults
    list: a Hydra release that changes what it sets per job fails here first."""
    import inspect

    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    source = inspect.getsource(ConfigLoaderImpl._load_configuration_impl)
    replayed = [
        "ConfigLoaderImpl._apply_overrides_to_config(config_overrides, cfg)",
        "cfg.hydra.overrides.hydra.append(override.input_line)",
        "cfg.hydra.overrides.task.append(override.input_line)",
        "cfg.hydra.runtime.choices.update(defaults_list.overrides.known_choices)",
        "cfg.hydra.job.env_set[key] = os.environ[key]",
        "cfg.hydra.runtime.version = __version__",
        "cfg.hydra.runtime.version_base = version.getbase()",
        "cfg.hydra.runtime.cwd = os.getcwd()",
        "cfg.hydra.runtime.config_sources = [",
        'cfg.hydra.job.name = JobRuntime().get("name")',
        "cfg.hydra.job.override_dirname = get_overrides_dirname(",
        "cfg.hydra.job.config_name = config_name",
    ]
    for line in replayed:
        assert line in source, line
    assert source.count("cfg.hydra.") == 16  # (reads too): nothing set that derive does not
    sweep = inspect.getsource(ConfigLoaderImpl.load_sweep_config)
    assert "OmegaConf.copy_cache(from_config=master_config, to_config=sweep_config)" in sweep
