"""``detflow import-determined``: real Determined configs from 0.13 to 0.38 become modules
that ``load_config`` accepts, and the report accounts for every top-level key."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hydra.core.config_store import ConfigStore

from detflow import load_config
from detflow._core.determined import find_dimensions
from detflow._core.experiment import SEARCHER_NAMES
from detflow._results.cli import main
from detflow._results.import_determined import (
    import_config,
    module_text,
    read_config,
    report_lines,
)
from tests.support import isolated_hydra

FIXTURES = Path(__file__).parent / "fixtures" / "determined"
CONFIGS = sorted(FIXTURES.glob("*.yaml"))
#: The detflow keys the importer may write: the schema's, and those it will soon validate.
ALLOWED = {
    "name",
    "seed",
    "hyperparameters",
    "searcher",
    "records_per_epoch",
    "min_validation_period",
    "min_checkpoint_period",
    "scheduling_unit",
    "optimizations",
    "resources",
    "max_restarts",
    "perform_initial_validation",
    "checkpoint_storage",
}
CHECKPOINT_KEYS = {"save_trial_latest", "save_trial_best", "save_experiment_best", "storage_path"}


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"imported_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fixtures_span_determined_versions() -> None:
    versions = {p.name.split("_")[0] for p in CONFIGS if p.name.startswith("v")}
    assert {"v0.13.0", "v0.17.0", "v0.23.0", "v0.26.0", "v0.37.0", "v0.38.1"} <= versions
    assert len(CONFIGS) >= 15


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_each_config_becomes_a_module_load_config_accepts(path: Path, tmp_path: Path) -> None:
    raw = read_config(path)
    imported = import_config(raw, fallback_name=path.stem)
    # every top-level key is accounted for, in the source's order, mapped or with a way
    assert [e.key for e in imported.entries] == list(raw)
    for entry in imported.entries:
        assert entry.became or entry.note, entry.key
    lines = report_lines(imported)
    for key in raw:
        assert any(line.startswith(f"{key} ") for line in lines), key
    # only keys detflow has (or will validate soon)
    assert set(imported.experiment) <= ALLOWED
    assert set(imported.experiment.get("checkpoint_storage", {})) <= CHECKPOINT_KEYS
    assert "global_batch_size" in imported.experiment["hyperparameters"]
    # the module: defines `experiment`, registers it under its name, loads
    out = tmp_path / f"{path.stem}.py"
    out.write_text(module_text(imported, str(path)))
    compile(out.read_text(), str(out), "exec")
    with isolated_hydra():
        module = load_module(out)
        assert module.experiment == imported.experiment
        assert f"{imported.name}.yaml" in ConfigStore.instance().repo["experiment"]
    loaded = load_config(module.experiment)
    assert loaded.experiment.name == imported.name
    assert loaded.experiment.searcher.name == imported.experiment["searcher"]["name"]


def test_lengths_of_every_version() -> None:
    def length(searcher: dict[str, Any], **top: Any) -> Any:
        imported = import_config({"searcher": {"name": "single", **searcher}, **top})
        return imported.experiment["searcher"].get("max_length"), imported.to_set

    assert length({"max_length": {"batches": 937}})[0] == "937 batches"
    assert length({"max_length": {"records": 60000}})[0] == "60000 records"
    assert length({"max_length": {"epochs": 5}})[0] == "5 epochs"
    assert length({"time_metric": "batches", "max_time": 937})[0] == "937 batches"
    assert length({"time_metric": "epoch", "max_time": 3})[0] == "3 epochs"
    assert length({"max_length": 100})[0] == "100 batches"  # Core API: no unit, said so
    assert length({"max_steps": 5}, batches_per_step=10)[0] == "50 batches"
    missing, to_set = length({"time_metric": "val_step", "max_time": 10})
    assert missing is None and any(s.startswith("searcher.max_length") for s in to_set)


def test_what_detflow_keeps_maps_to_its_own_keys() -> None:
    raw = read_config(FIXTURES / "written_v0.38_every_key.yaml")
    exp = import_config(raw).experiment
    assert exp["seed"] == 42
    assert exp["resources"] == {"slots_per_trial": 2}
    assert exp["optimizations"] == {"aggregation_frequency": 2}
    assert exp["max_restarts"] == 5 and exp["perform_initial_validation"] is True
    assert exp["checkpoint_storage"] == {
        "save_trial_latest": 0,
        "save_trial_best": 1,
        "save_experiment_best": 2,
        "storage_path": "/mnt/scratch/determined-checkpoints",
    }
    assert exp["min_validation_period"] == "3000 records"
    assert exp["searcher"] == {
        "name": "adaptive_asha",
        "metric": "validation_loss",
        "smaller_is_better": True,
        "max_length": "1000 batches",
        "divisor": 4,
        "max_rungs": 4,
        "mode": "conservative",
        "bracket_rungs": [4, 2],
        "max_trials": 64,
        "max_concurrent_trials": 14,  # 0 = as many as Determined's brackets would run
    }
    assert exp["hyperparameters"]["learning_rate"] == {
        "type": "log",
        "minval": -4,
        "maxval": -1,
        "base": 10,
    }


def test_the_detflow_way_for_what_it_does_not_keep() -> None:
    raw = read_config(FIXTURES / "written_v0.38_every_key.yaml")
    entries = {e.key: e for e in import_config(raw).entries}
    ways = {
        "data": "a field of your own experiment class",
        "entrypoint": "your training script",
        "environment": "hydra.launcher.setup",
        "bind_mounts": "not needed on Slurm",
        "slurm": "hydra/launcher=detflow_slurm",
        "pbs": "detflow_slurm",
        "profiling": "profiler",
        "workspace": "hydra.sweep.dir",
        "checkpoint_policy": "save_trial_latest",
        "preemption_timeout": "hydra.launcher.signal_delay_s",
    }
    for key, way in ways.items():
        assert not entries[key].mapped and way in entries[key].note, key
    assert entries["reproducibility"].became == ["seed"]
    details = " ".join(entries["searcher"].details)
    assert "stop_once: not mapped" in details and "source_trial_id: not mapped" in details
    # adaptive_asha's proposals differ from Determined's by default: said, with the way back
    assert "searcher.sampler not given" in details and "searcher.sampler=random" in details
    assert "hydra.launcher.gpus_per_node=4" in " ".join(entries["slurm"].details)
    assert "hydra.job.env_set.NCCL_DEBUG=INFO" in " ".join(entries["environment"].details)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("adaptive", "adaptive_asha"),
        ("adaptive_simple", "adaptive_asha"),
        ("async_halving", "asha"),
        ("sync_halving", "asha"),
        ("custom", "single"),
    ],
)
def test_determineds_searchers(given: str, expected: str) -> None:
    raw = {"searcher": {"name": given, "max_trials": 4, "max_length": {"batches": 8}}}
    assert import_config(raw).experiment["searcher"]["name"] == expected


def test_a_searcher_detflow_lacks_is_reported_with_every_searcher_detflow_has() -> None:
    raw = {"searcher": {"name": "custom", "max_trials": 4, "max_length": {"batches": 8}}}
    entries = {e.key: e for e in import_config(raw).entries}
    (detail,) = [d for d in entries["searcher"].details if d.startswith("searcher.name custom")]
    listed = detail.partition("detflow searches with ")[2].rstrip(")").split(", ")
    assert listed == list(SEARCHER_NAMES)
    assert {"bohb", "pbt"} <= set(listed)


def test_a_single_searcher_over_a_space_draws_one_point_as_determined_did() -> None:
    raw = read_config(FIXTURES / "written_v0.20_single_and_grid.yaml")
    searcher = import_config(raw).experiment["searcher"]
    assert (searcher["name"], searcher["max_trials"]) == ("random", 1)


def test_the_old_adaptive_budget_becomes_max_trials() -> None:
    raw = read_config(FIXTURES / "written_v0.13_adaptive_budget.yaml")
    imported = import_config(raw)
    # standard over 3 rungs with detflow's divisor (3, as no divisor is given): brackets of 3
    # and 2 rungs, 5 full lengths of budget each: 5 x 3**2/3 + 5 x 3/2 = 22.5 trials
    assert imported.experiment["searcher"]["max_trials"] == 22
    assert imported.name == "adaptive_budget"  # from description, as before 0.14


def test_no_batch_size_and_no_length_say_which_key_to_set() -> None:
    imported = import_config({"name": "core", "searcher": {"name": "single", "metric": "m"}})
    assert imported.experiment["hyperparameters"]["global_batch_size"] == 32
    assert [s.split()[0] for s in imported.to_set] == [
        "hyperparameters.global_batch_size",
        "searcher.max_length",
    ]
    lines = report_lines(imported)
    assert lines[-2].startswith("to set: hyperparameters.global_batch_size")
    assert lines[-1].startswith("to set: searcher.max_length")
    slots = import_config({"resources": {"slots_per_trial": 12}})
    assert slots.experiment["hyperparameters"]["global_batch_size"] == 36  # a multiple of 12


def test_an_imported_search_plans_its_space(caplog: pytest.LogCaptureFixture) -> None:
    raw = read_config(FIXTURES / "v0.38.1_mnist_pytorch_adaptive.yaml")
    exp = import_config(raw).experiment
    dims = find_dimensions(exp["hyperparameters"])
    assert sorted(d.removeprefix("hyperparameters.") for d in dims) == [
        "dropout1",
        "dropout2",
        "learning_rate",
        "n_filters1",
        "n_filters2",
    ]
    with caplog.at_level(logging.WARNING, logger="detflow"):
        loaded = load_config(exp)  # a run outside a search: midpoints, said in a line each
    assert loaded.experiment.hyperparameters["n_filters1"] == 36
    assert "hyperparameters.n_filters1 is a search dimension" in caplog.text


# --- the command ----------------------------------------------------------------------------


def test_command_writes_the_module_and_prints_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = FIXTURES / "v0.13.0_cifar10_pytorch_adaptive_advanced.yaml"
    out = tmp_path / "cifar.py"
    assert main(["import-determined", str(source), "-o", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"wrote {out}: experiment cifar10_pytorch_adaptive_advanced_search"
    for key in read_config(source):
        assert any(line.startswith(f"{key} ") for line in printed), key
    text = out.read_text()
    assert 'detflow.register_experiment(experiment["name"], experiment)' in text
    assert "DATA = {" in text
    assert main(["import-determined", str(source), "-o", str(out)]) == 2
    assert "exists: give --force" in capsys.readouterr().err
    assert main(["import-determined", str(source), "-o", str(out), "--force"]) == 0


def test_command_without_output_writes_the_module_to_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = FIXTURES / "v0.37.0_core_api_mnist_const.yaml"
    assert main(["import-determined", str(source)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith('"""coreapi_mnist_tutorial: a Determined config')
    assert "to set: hyperparameters.global_batch_size" in captured.err
    compile(captured.out, "stdout", "exec")


@pytest.mark.parametrize("text", ["- a\n- b\n", "a: [unclosed\n", ""])
def test_command_refuses_what_is_no_config_in_one_line(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["import-determined", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detflow import-determined: error: ") and err.count("\n") == 1


def test_command_is_listed(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "import-determined" in capsys.readouterr().out
