"""Real Hydra composition: in-process ``compose`` and the real ``python train.py`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.version import VersionBase
from omegaconf import DictConfig, OmegaConf

import conf
from detflow import ExperimentConfig, Length, Source, Unit, load_config, register_experiment
from detflow._core.paths import flatten
from tests.support import REPO, isolated_hydra

CONF = REPO / "conf"

#: The keys of design section 2 that ``--cfg job`` must show.
DESIGN_KEYS = {
    "name",
    "seed",
    "resume",
    "hparams_precedence",
    "hyperparameters.global_batch_size",
    "hyperparameters.base_batch_size",
    "hyperparameters.lr",
    "searcher.name",
    "searcher.metric",
    "searcher.smaller_is_better",
    "searcher.max_length",
    "searcher.max_trials",
    "searcher.max_concurrent_trials",
    "searcher.divisor",
    "searcher.max_rungs",
    "searcher.space",
    "records_per_epoch",
    "min_validation_period",
    "min_checkpoint_period",
    "optimizations.aggregation_frequency",
    "resources.slots_per_trial",
    "max_restarts",
    "perform_initial_validation",
    "checkpoint_storage.save_trial_latest",
    "checkpoint_storage.save_trial_best",
    "checkpoint_storage.save_experiment_best",
    "checkpoint_storage.storage_path",
}

# --- in-process composition ----------------------------------------------------------------

Compose = Callable[..., DictConfig]


@pytest.fixture
def compose_cfg() -> Iterator[Compose]:
    """``compose_cfg(*overrides)``: the composed root config (``conf.register()`` done),
    with the ConfigStore and GlobalHydra restored afterwards: no test leaks registrations."""

    def call(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    with isolated_hydra():
        conf.register()
        yield call


def test_isolation_forgets_what_a_test_registered() -> None:
    probe = ExperimentConfig(name="probe", hyperparameters={"global_batch_size": 4})
    with isolated_hydra():
        register_experiment("isolation_probe", probe)
        assert "isolation_probe.yaml" in ConfigStore.instance().repo["experiment"]
    assert "isolation_probe.yaml" not in ConfigStore.instance().repo.get("experiment", {})
    assert not GlobalHydra.instance().is_initialized()


def test_isolation_restores_the_version_base() -> None:
    before = VersionBase.instance().getbase()
    with isolated_hydra(), initialize_config_dir(config_dir=str(CONF), version_base="1.2"):
        pass
    assert VersionBase.instance().getbase() is before


def dotted(cfg: DictConfig) -> dict[str, Any]:
    """Dotted keys of a composed config; a length mapping and the space stay one value."""
    container = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(container, dict)
    flat = flatten(container)
    for whole in ("searcher.max_length", "searcher.space"):
        for key in [k for k in flat if k.startswith(whole + ".")]:
            flat.pop(key)
            flat[whole] = container["searcher"][whole.split(".")[1]]
    return flat


def test_register_is_safe_to_call_again(compose_cfg: Compose) -> None:
    conf.register()
    conf.register()
    cfg = compose_cfg("+experiment=quadratic")
    assert cfg.name == "quadratic"


@pytest.mark.parametrize(
    "experiment", ["digits_mlp", "digits_asha", "quadratic", "digits_mlp_wide"]
)
def test_every_shipped_experiment_composes_and_validates(
    compose_cfg: Compose, experiment: str
) -> None:
    cfg = compose_cfg(f"+experiment={experiment}")
    assert set(dotted(cfg)) >= DESIGN_KEYS
    loaded = load_config(cfg, overrides=[], searcher_keys=[])
    assert loaded.experiment.name == experiment
    assert loaded.experiment.global_batch_size > 0


def test_digits_mlp_is_the_design_experiment(compose_cfg: Compose) -> None:
    cfg = compose_cfg("+experiment=digits_mlp")
    assert cfg.hyperparameters.global_batch_size == 32
    assert cfg.hyperparameters.base_batch_size == 32
    assert dotted(cfg)["hyperparameters.lr"] == "${df.scale:0.1,linear}"
    assert cfg.hyperparameters.lr == pytest.approx(0.1)
    assert cfg.searcher.max_length == "5 epochs"
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(5, Unit.EPOCHS)


@pytest.mark.parametrize(
    ("overrides", "lr"),
    [
        ((), 0.1),
        (("hyperparameters.global_batch_size=64",), 0.2),
        (("optimizations.aggregation_frequency=2",), 0.2),
        (("hyperparameters.global_batch_size=64", "optimizations.aggregation_frequency=2"), 0.4),
        (("hyperparameters.global_batch_size=16",), 0.05),
        (("hyperparameters.base_batch_size=64",), 0.05),
    ],
)
def test_command_line_batch_size_rederives_lr(
    compose_cfg: Compose, overrides: tuple[str, ...], lr: float
) -> None:
    cfg = compose_cfg("+experiment=digits_mlp", *overrides)
    loaded = load_config(cfg, overrides=list(overrides), searcher_keys=[])
    assert loaded.experiment.hyperparameters["lr"] == pytest.approx(lr)
    record = loaded.hparams["hyperparameters.lr"]
    assert (record.source, record.expression) == (Source.CONFIG, "${df.scale:0.1,linear}")
    for override in overrides:
        key = override.split("=", 1)[0]
        if key.startswith("hyperparameters."):
            assert loaded.hparams[key].source is Source.OVERRIDE


def test_code_hparams_layer_over_the_composed_config(compose_cfg: Compose) -> None:
    cfg = compose_cfg("+experiment=digits_mlp", "hyperparameters.hidden=256")
    loaded = load_config(
        cfg,
        {"global_batch_size": 64, "hidden": 64, "momentum": 0.9},
        overrides=["+experiment=digits_mlp", "hyperparameters.hidden=256"],
        searcher_keys=[],
    )
    hp = loaded.experiment.hyperparameters
    assert (hp["global_batch_size"], hp["lr"], hp["hidden"], hp["momentum"]) == (
        64,
        pytest.approx(0.2),
        256,
        0.9,
    )
    assert {k: r.source.value for k, r in loaded.hparams.items()} == {
        "hyperparameters.global_batch_size": "code",
        "hyperparameters.base_batch_size": "config",
        "hyperparameters.lr": "config",
        "hyperparameters.hidden": "override",
        "hyperparameters.momentum": "code",
    }
    assert [str(r) for r in loaded.merged.replaced] == [
        "hyperparameters.hidden: code gave 64, override gave 256; using override's 256"
    ]


# --- lengths on the command line -----------------------------------------------------------


def test_a_string_length_override_replaces_the_old_unit(compose_cfg: Compose) -> None:
    cfg = compose_cfg("+experiment=digits_mlp", "searcher.max_length=600 records")
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(600, Unit.RECORDS)
    assert experiment.notices == ()
    line = experiment.batch_math(None).describe(experiment.searcher.max_length, "max_length")
    assert line == "max_length 600 records -> 19 batches (608 records) at global_batch_size 32"


def test_a_string_length_override_replaces_a_mapping_length(compose_cfg: Compose) -> None:
    cfg = compose_cfg("+experiment=digits_mlp_wide", "searcher.max_length=600 records")
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(600, Unit.RECORDS)


def test_a_mapping_length_override_replaces_a_string_length(compose_cfg: Compose) -> None:
    cfg = compose_cfg("+experiment=digits_mlp", "searcher.max_length={records:600}")
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(600, Unit.RECORDS)


def test_a_mapping_merged_into_a_mapping_length_uses_the_unit_given_last(
    compose_cfg: Compose,
) -> None:
    cfg = compose_cfg("+experiment=digits_mlp_wide", "++searcher.max_length={records:600}")
    assert OmegaConf.to_container(cfg.searcher.max_length) == {"epochs": 3, "records": 600}
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(600, Unit.RECORDS)
    assert len(experiment.notices) == 1
    assert "searcher.max_length had 2 units" in experiment.notices[0]
    assert "using the one given last" in experiment.notices[0]


def test_the_string_form_replaces_a_mapping_length_on_the_command_line(
    compose_cfg: Compose,
) -> None:
    cfg = compose_cfg("+experiment=digits_mlp_wide", "searcher.max_length=600 records")
    experiment = load_config(cfg, overrides=[], searcher_keys=[]).experiment
    assert experiment.searcher.max_length == Length(600, Unit.RECORDS)


def test_a_mapping_over_a_mapping_length_is_hydras_error_naming_the_key(
    compose_cfg: Compose,
) -> None:
    """Hydra merges a mapping override into a mapping key by key (struct mode refuses the new
    unit); the README says to write lengths on the command line in the string form."""
    with pytest.raises(ConfigCompositionException, match=r"searcher\.max_length"):
        compose_cfg("+experiment=digits_mlp_wide", "searcher.max_length={records:600}")


# --- the YAML experiment extends the Python one --------------------------------------------


def test_yaml_experiment_composes_like_the_python_one_with_only_its_changes(
    compose_cfg: Compose,
) -> None:
    python = dotted(compose_cfg("+experiment=digits_mlp"))
    yaml = dotted(compose_cfg("+experiment=digits_mlp_wide"))
    assert set(yaml) == set(python)
    changed = {key for key in python if python[key] != yaml[key]}
    assert changed == {
        "name",
        "hyperparameters.hidden",
        "hyperparameters.lr",
        "searcher.max_length",
    }
    assert yaml["name"] == "digits_mlp_wide"
    assert yaml["hyperparameters.hidden"] == 512
    assert yaml["hyperparameters.lr"] == "${df.scale:0.05,linear}"
    assert yaml["searcher.max_length"] == {"epochs": 3}


@pytest.mark.parametrize(("gbs", "lr"), [(32, 0.05), (64, 0.1), (128, 0.2)])
def test_yaml_experiment_scales_and_measures_like_the_python_one(
    compose_cfg: Compose, gbs: int, lr: float
) -> None:
    override = f"hyperparameters.global_batch_size={gbs}"
    wide = load_config(
        compose_cfg("+experiment=digits_mlp_wide", override), overrides=[override], searcher_keys=[]
    ).experiment
    mlp = load_config(
        compose_cfg("+experiment=digits_mlp", override), overrides=[override], searcher_keys=[]
    ).experiment
    assert wide.hyperparameters["lr"] == pytest.approx(lr)
    assert mlp.hyperparameters["lr"] == pytest.approx(2 * lr)
    assert wide.searcher.max_length == Length(3, Unit.EPOCHS)
    assert mlp.searcher.max_length == Length(5, Unit.EPOCHS)
    assert wide.hyperparameters["hidden"] == 512
    assert mlp.hyperparameters["hidden"] == 128
    same = ("seed", "resume", "hparams_precedence", "records_per_epoch", "aggregation_frequency")
    for attribute in same:
        assert getattr(wide, attribute) == getattr(mlp, attribute)


# --- the real CLI --------------------------------------------------------------------------


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    @property
    def last_error_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR",)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("DETFLOW_SEARCHER_KEYS", None)
    env.update(extra)
    return env


def run_train(args: list[str], run_dir: Path, env: dict[str, str] | None = None) -> CliRun:
    """``python train.py ARGS hydra.run.dir=RUN_DIR``; ARGS' ``--`` options go first, as
    Hydra's argument parser wants the overrides together."""
    options: list[str] = []
    overrides: list[str] = []
    rest = iter(args)
    for arg in rest:
        if arg == "--resolve":
            options.append(arg)
        elif arg.startswith("--"):
            options += [arg, next(rest)]
        else:
            overrides.append(arg)
    done = subprocess.run(
        [sys.executable, "train.py", *options, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return CliRun(done.returncode, done.stdout, done.stderr, run_dir)


def run_many(cases: dict[str, list[str]], root: Path, **env: str) -> dict[str, CliRun]:
    """Run the CLI once per case, several at once (each in its own run directory)."""
    environment = cli_env(**env)
    with ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2))) as pool:
        futures = {
            name: pool.submit(run_train, args, root / name, environment)
            for name, args in cases.items()
        }
        return {name: future.result() for name, future in futures.items()}


CFG_JOB = ["--cfg", "job", "--resolve"]
SHOW_CASES: dict[str, list[str]] = {
    "mlp": ["+experiment=digits_mlp", *CFG_JOB],
    "mlp_gbs64": ["+experiment=digits_mlp", "hyperparameters.global_batch_size=64", *CFG_JOB],
    "mlp_agg2": ["+experiment=digits_mlp", "optimizations.aggregation_frequency=2", *CFG_JOB],
    "mlp_600_records": ["+experiment=digits_mlp", "searcher.max_length=600 records", *CFG_JOB],
    "mlp_mapping": ["+experiment=digits_mlp", "searcher.max_length={records:600}", *CFG_JOB],
    "wide": ["+experiment=digits_mlp_wide", *CFG_JOB],
    "wide_gbs64": ["+experiment=digits_mlp_wide", "hyperparameters.global_batch_size=64", *CFG_JOB],
}


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DictConfig]:
    """``python train.py ... --cfg job --resolve`` for each case, parsed."""
    runs = run_many(SHOW_CASES, tmp_path_factory.mktemp("cfg_job"))
    parsed = {}
    for name, run in runs.items():
        assert run.returncode == 0, f"{name}: {run.stderr}"
        cfg = OmegaConf.create(run.stdout)
        assert isinstance(cfg, DictConfig)
        parsed[name] = cfg
    return parsed


def test_cli_cfg_job_prints_the_design_keys(shown: dict[str, DictConfig]) -> None:
    cfg = shown["mlp"]
    assert set(dotted(cfg)) >= DESIGN_KEYS
    assert cfg.name == "digits_mlp"
    assert cfg.hparams_precedence == "code"
    assert cfg.hyperparameters.global_batch_size == 32
    assert cfg.hyperparameters.base_batch_size == 32
    assert cfg.hyperparameters.lr == pytest.approx(0.1)
    assert cfg.searcher.name == "single"
    assert cfg.searcher.max_length == "5 epochs"
    assert cfg.optimizations.aggregation_frequency == 1
    assert cfg.resources.slots_per_trial == 1
    assert "hydra" not in cfg


def test_cli_global_batch_size_64_resolves_lr_to_0_2(shown: dict[str, DictConfig]) -> None:
    assert shown["mlp_gbs64"].hyperparameters.global_batch_size == 64
    assert shown["mlp_gbs64"].hyperparameters.lr == pytest.approx(0.2)


def test_cli_aggregation_frequency_2_resolves_lr_to_0_2(shown: dict[str, DictConfig]) -> None:
    assert shown["mlp_agg2"].hyperparameters.global_batch_size == 32
    assert shown["mlp_agg2"].optimizations.aggregation_frequency == 2
    assert shown["mlp_agg2"].hyperparameters.lr == pytest.approx(0.2)


def test_cli_length_overrides_replace_five_epochs(shown: dict[str, DictConfig]) -> None:
    assert shown["mlp_600_records"].searcher.max_length == "600 records"
    mapping = shown["mlp_mapping"].searcher.max_length
    assert OmegaConf.to_container(mapping) == {"records": 600}  # type: ignore[arg-type]


def test_cli_yaml_and_python_experiments_show_the_same_keys(
    shown: dict[str, DictConfig],
) -> None:
    python, yaml = dotted(shown["mlp"]), dotted(shown["wide"])
    assert set(python) == set(yaml)
    assert {key for key in python if python[key] != yaml[key]} == {
        "name",
        "hyperparameters.hidden",
        "hyperparameters.lr",
        "searcher.max_length",
    }
    assert yaml["hyperparameters.lr"] == pytest.approx(0.05)
    assert shown["wide_gbs64"].hyperparameters.lr == pytest.approx(0.1)


# --- the bad-input matrix through the real CLI (issue #2 item 6) ---------------------------

_BAD_RULE_YAML = """\
# @package _global_
defaults:
  - quadratic
  - _self_
name: quadratic_bad_rule
hyperparameters:
  lr: ${df.scale:0.05,cubic}
"""
_BETA_YAML = """\
# @package _global_
defaults:
  - quadratic
  - _self_
name: quadratic_beta
hyperparameters:
  beta1: ${df.scale:0.9,adam_beta}
"""

Q = "+experiment=quadratic"
#: id -> (arguments after train.py, "key = value" or the texts the last stderr line must hold)
CLI_BAD: dict[str, tuple[list[str], str | tuple[str, ...]]] = {
    "length_zero": ([Q, "searcher.max_length=0 epochs"], "searcher.max_length = '0 epochs'"),
    "length_negative": (
        [Q, "searcher.max_length=-3 epochs"],
        "searcher.max_length = '-3 epochs'",
    ),
    "length_zero_mapping": (
        [Q, "searcher.max_length={epochs:0}"],
        "searcher.max_length = {'epochs': 0}",
    ),
    "length_unknown_unit": (
        [Q, "searcher.max_length=5 fortnights"],
        "searcher.max_length = '5 fortnights'",
    ),
    "length_non_integer": (
        [Q, "searcher.max_length=1.5 epochs"],
        "searcher.max_length = '1.5 epochs'",
    ),
    "period_zero": ([Q, "min_validation_period=0 batches"], "min_validation_period = '0 batches'"),
    "period_unknown_unit": (
        [Q, "min_checkpoint_period=2 parsecs"],
        "min_checkpoint_period = '2 parsecs'",
    ),
    "searcher_name": ([Q, "searcher.name=bogus"], "searcher.name = 'bogus'"),
    "slots_zero": ([Q, "resources.slots_per_trial=0"], "resources.slots_per_trial = 0"),
    "gbs_not_divisible_by_slots": (
        [Q, "resources.slots_per_trial=3"],
        "hyperparameters.global_batch_size = 8",
    ),
    "precedence": ([Q, "hparams_precedence=yaml"], "hparams_precedence = 'yaml'"),
    "records_per_epoch_zero": ([Q, "records_per_epoch=0"], "records_per_epoch = 0"),
    "gbs_mandatory_missing": (
        [Q, "hyperparameters.global_batch_size=???"],
        "hyperparameters.global_batch_size = '???'",
    ),
    "scale_unknown_rule_in_yaml": (
        ["+experiment=quadratic_bad_rule"],
        ("hyperparameters.lr = ", "cubic"),
    ),
    "scale_adam_beta_pushed_to_one_in_yaml": (
        ["+experiment=quadratic_beta", "hyperparameters.global_batch_size=96"],
        ("hyperparameters.beta1 = ", "0.9", "adam_beta"),
    ),
    # df.scale reads the bad value while resolving lr: the error must name the bad key.
    "scaled_gbs_zero": (
        [Q, "hyperparameters.global_batch_size=0"],
        "hyperparameters.global_batch_size = 0",
    ),
    "scaled_gbs_negative": (
        [Q, "hyperparameters.global_batch_size=-8"],
        "hyperparameters.global_batch_size = -8",
    ),
    "scaled_aggregation_zero": (
        [Q, "optimizations.aggregation_frequency=0"],
        "optimizations.aggregation_frequency = 0",
    ),
    "scaled_gbs_deleted": (
        [Q, "~hyperparameters.global_batch_size"],
        "hyperparameters.global_batch_size = None",
    ),
    # A bad ${df.scale:...} typed on the command line: one line naming the key.
    "scale_unknown_rule_on_command_line": (
        [Q, "hyperparameters.lr=${df.scale:0.05,cubic}"],
        ("hyperparameters.lr = ", "cubic"),
    ),
    "scale_adam_beta_on_command_line": (
        [
            Q,
            "+hyperparameters.beta1=${df.scale:0.9,adam_beta}",
            "hyperparameters.global_batch_size=96",
        ],
        ("hyperparameters.beta1 = ", "0.9", "adam_beta"),
    ),
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CliRun]:
    root = tmp_path_factory.mktemp("bad inputs")  # a space in the path, on purpose
    config_dir = root / "extra conf"
    (config_dir / "experiment").mkdir(parents=True)
    (config_dir / "experiment" / "quadratic_bad_rule.yaml").write_text(_BAD_RULE_YAML)
    (config_dir / "experiment" / "quadratic_beta.yaml").write_text(_BETA_YAML)
    cases = {name: ["--config-dir", str(config_dir), *args] for name, (args, _) in CLI_BAD.items()}
    cases["control_ok"] = ["--config-dir", str(config_dir), "+experiment=quadratic_beta"]
    cases["control_override_warns"] = [Q, "+hyperparameters.momentum=0.5"]
    return run_many(cases, root)


@pytest.mark.parametrize("name", list(CLI_BAD))
def test_cli_bad_input_exits_2_with_one_line_and_trains_nothing(
    bad_runs: dict[str, CliRun], name: str
) -> None:
    run = bad_runs[name]
    needles = CLI_BAD[name][1]
    assert "Traceback" not in run.output, run.output[-2000:]
    assert run.returncode == 2, run.output[-2000:]
    line = run.last_error_line
    assert line.startswith("Error: "), line
    for needle in (needles,) if isinstance(needles, str) else needles:
        assert needle in line, line
    assert "is not valid: expected" in line
    assert not (run.run_dir / "metrics.jsonl").exists()
    assert not (run.run_dir / "checkpoints").exists()
    assert not (run.run_dir / "hparams.json").exists()


def test_cli_control_run_trains_and_writes_its_files(bad_runs: dict[str, CliRun]) -> None:
    """The same command line, valid: proves the matrix's checks can see training."""
    run = bad_runs["control_ok"]
    assert run.returncode == 0, run.output[-2000:]
    assert (run.run_dir / "metrics.jsonl").exists()
    assert (run.run_dir / "checkpoints").is_dir()
    assert (run.run_dir / "hparams.json").exists()


def test_cli_override_of_a_code_value_logs_one_warning_line(bad_runs: dict[str, CliRun]) -> None:
    run = bad_runs["control_override_warns"]
    assert run.returncode == 0, run.output[-2000:]
    warnings = [line for line in run.output.splitlines() if "code gave" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0]
    assert warnings[0].endswith(
        "hyperparameters.momentum: code gave 0.9, override gave 0.5; using override's 0.5"
    )


def test_cli_full_error_shows_the_traceback(tmp_path: Path) -> None:
    run = run_train([Q, "searcher.name=bogus"], tmp_path / "run", env=cli_env(HYDRA_FULL_ERROR="1"))
    assert run.returncode != 0
    assert "Traceback" in run.output
    assert "searcher.name = 'bogus' is not valid" in run.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
