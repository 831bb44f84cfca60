"""``checkpoint_storage`` in the harness (what a run keeps, where) and
``perform_initial_validation`` (one validation before the first batch, never again)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

import detflow
from detflow import ConfigError, Run, Trial, TrialError
from detflow._core.checkpoints import checkpoint_names, pointer, retain
from detflow._harness.checkpoint import CheckpointStore, checkpoint_root
from tests.support import read_metrics


def save_all(store: CheckpointStore, metrics: list[float | None], smaller: bool = True) -> None:
    for i, metric in enumerate(metrics, start=1):
        store.save({"batches": 10 * i}, {"i": i}, metric, smaller_is_better=smaller)


def names(*batches: int) -> list[str]:
    return [f"{b:010d}" for b in batches]


# -- the store while a run trains ---------------------------------------------------------------
def test_the_default_store_keeps_the_latest_and_the_best(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    save_all(store, [0.5, 0.3, 0.9, None, 0.7])
    assert checkpoint_names(tmp_path) == names(20, 50)
    assert (pointer(tmp_path, "latest.json"), pointer(tmp_path, "best.json")) == tuple(
        names(50, 20)
    )


def test_keep_latest_n_and_best_m(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_latest=2, keep_best=2)
    save_all(store, [0.5, 0.3, 0.9, 0.1, 0.8, 0.7])
    # latest 2: 50, 60; best 2: 40 (0.1), 20 (0.3)
    assert checkpoint_names(tmp_path) == names(20, 40, 50, 60)
    assert pointer(tmp_path, "best.json") == names(40)[0]


def test_larger_is_better_keeps_the_largest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_latest=1, keep_best=1)
    save_all(store, [0.5, 0.9, 0.3], smaller=False)
    assert checkpoint_names(tmp_path) == names(20, 30)


def test_keep_best_0_keeps_the_latest_only_and_no_best_pointer(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_latest=1, keep_best=0)
    save_all(store, [0.1, 0.5, 0.9])
    assert checkpoint_names(tmp_path) == names(30)
    assert not (tmp_path / "best.json").exists()
    assert store.load() is not None and store.load().meta["batches"] == 30  # type: ignore[union-attr]


def test_a_store_reopened_on_older_checkpoints_ranks_them_from_their_state(
    tmp_path: Path,
) -> None:
    save_all(CheckpointStore(tmp_path, keep_latest=5, keep_best=0), [0.5, 0.1, 0.9])
    reopened = CheckpointStore(tmp_path, keep_latest=1, keep_best=1)  # a resumed run
    reopened.save({"batches": 40}, {}, 0.8, smaller_is_better=True)
    assert checkpoint_names(tmp_path) == names(20, 40)


def test_a_nan_metric_is_never_the_best(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep_latest=1, keep_best=1)
    save_all(store, [0.5, math.nan, 0.9])
    assert checkpoint_names(tmp_path) == names(10, 30)


# -- an ended run (the sweep driver's retain) ---------------------------------------------------
def test_retain_at_the_end_keeps_what_the_policy_says_and_fixes_the_pointers(
    tmp_path: Path,
) -> None:
    save_all(CheckpointStore(tmp_path, keep_latest=9, keep_best=0), [0.5, 0.3, 0.9, 0.4])
    assert retain(tmp_path, latest=1, best=1, smaller_is_better=True) == names(10, 30)
    assert checkpoint_names(tmp_path) == names(20, 40)
    assert pointer(tmp_path, "best.json") == names(20)[0]
    assert pointer(tmp_path, "latest.json") == names(40)[0]
    assert retain(tmp_path, latest=1, best=1, smaller_is_better=True) == []  # idempotent
    assert retain(tmp_path, latest=0, best=0, smaller_is_better=True) == names(20, 40)
    assert checkpoint_names(tmp_path) == []
    assert not (tmp_path / "latest.json").exists() and not (tmp_path / "best.json").exists()
    assert CheckpointStore(tmp_path).load() is None


def test_retain_keep_one_keeps_the_newest_when_none_was_validated(tmp_path: Path) -> None:
    save_all(CheckpointStore(tmp_path, keep_latest=9, keep_best=0), [None, None])
    assert retain(tmp_path, latest=0, best=0, smaller_is_better=True, keep_one=True) == names(10)
    assert checkpoint_names(tmp_path) == names(20)
    assert pointer(tmp_path, "latest.json") == names(20)[0]


def test_retain_of_a_missing_directory_deletes_nothing(tmp_path: Path) -> None:
    assert retain(tmp_path / "none", latest=0, best=0, smaller_is_better=True) == []


# -- storage_path -------------------------------------------------------------------------------
class Steps(Trial):
    """``w`` steps towards 3; 8 batches an epoch."""

    def __init__(self, run: Run) -> None:
        self.run, self.w, self.evaluations = run, 0.0, 0

    def training_data(self, epoch: int) -> Iterable[Any]:
        return [[1.0] * self.run.per_slot_batch_size] * 8

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        self.w += 0.1 * (3.0 - self.w)
        return {"loss": (self.w - 3.0) ** 2}

    def validation_data(self) -> Iterable[Any]:
        return [[0.0] * 2]

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        self.evaluations += 1
        return {"loss": (self.w - 3.0) ** 2}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w = state["w"]


def config(length: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "steps",
        "hyperparameters": {"global_batch_size": 2},
        "searcher": {"max_length": length},
        "min_checkpoint_period": "4 batches",
        **extra,
    }


def test_storage_path_holds_the_checkpoints_and_a_resume_finds_them(tmp_path: Path) -> None:
    storage = tmp_path / "scratch"
    run_dir = tmp_path / "run"
    policy = {"storage_path": str(storage)}
    first = detflow.init(config("8 batches", checkpoint_storage=policy), run_dir=run_dir)
    first.fit(Steps(first))
    link = run_dir / "checkpoints"
    assert link.is_symlink()
    (target,) = (storage / "steps").iterdir()
    assert target.name.startswith("run-") and link.resolve() == target.resolve()
    assert checkpoint_names(target) == names(8)

    # Resumed with another storage_path (or none): the link stands, its checkpoints are found.
    again = detflow.init(
        config("16 batches", resume=True, checkpoint_storage={"storage_path": str(tmp_path / "x")}),
        run_dir=run_dir,
    )
    result = again.fit(Steps(again))
    assert result.counters.batches == 16
    assert checkpoint_names(target) == names(16)
    assert not (tmp_path / "x").exists()
    straight_dir = tmp_path / "straight"
    straight = detflow.init(config("16 batches"), run_dir=straight_dir)
    assert straight.fit(Steps(straight)).validation == result.validation


def test_a_link_to_storage_this_machine_cannot_reach_is_an_error_not_a_fresh_start(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").symlink_to(tmp_path / "unmounted" / "steps")
    with pytest.raises(ConfigError) as refused:
        checkpoint_root(run_dir, None, "steps", create=True)
    assert refused.value.key == "checkpoint_storage.storage_path"
    assert "mount it" in str(refused.value)


def test_storage_inside_the_run_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="outside the run directory"):
        checkpoint_root(tmp_path, str(tmp_path / "sub"), "steps", create=True)


@pytest.mark.parametrize("path", ["relative/dir", "/", 3, "/a\nb"])
def test_storage_path_must_be_an_absolute_directory(tmp_path: Path, path: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        detflow.init(
            config("8 batches", checkpoint_storage={"storage_path": path}), run_dir=tmp_path
        )
    assert refused.value.key == "checkpoint_storage.storage_path"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("save_trial_latest", -1),
        ("save_trial_best", 1.5),
        ("save_experiment_best", True),
        ("save_experiment_best", -2),
    ],
)
def test_checkpoint_counts_are_integers_from_0(tmp_path: Path, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        detflow.init(config("8 batches", checkpoint_storage={key: value}), run_dir=tmp_path)
    assert refused.value.key == f"checkpoint_storage.{key}"


def test_an_unknown_checkpoint_storage_key_names_the_key_meant(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"did you mean checkpoint_storage\.save_trial_best"):
        detflow.init(
            config("8 batches", checkpoint_storage={"save_trial_bests": 1}), run_dir=tmp_path
        )
    determined = r"Determined's key: use checkpoint_storage\.storage_path"
    with pytest.raises(ConfigError, match=determined):
        detflow.init(
            config("8 batches", checkpoint_storage={"host_path": "/mnt"}), run_dir=tmp_path
        )


@pytest.mark.parametrize("value", [-1, 1001, True, "5"])
def test_max_restarts_is_a_count_up_to_1000(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError) as refused:
        detflow.init(config("8 batches", max_restarts=value), run_dir=tmp_path)
    assert refused.value.key == "max_restarts"
    assert "from 0 to 1000" in str(refused.value)


def test_a_run_keeps_its_latest_while_it_trains_whatever_the_policy(tmp_path: Path) -> None:
    policy = {"save_trial_latest": 0, "save_trial_best": 0}
    run = detflow.init(config("16 batches", checkpoint_storage=policy), run_dir=tmp_path)
    run.fit(Steps(run))
    assert checkpoint_names(tmp_path / "checkpoints") == names(16)  # a resume needs it


# -- perform_initial_validation -----------------------------------------------------------------
def validations(run_dir: Path) -> list[int]:
    return [r["batches"] for r in read_metrics(run_dir) if r["kind"] == "validation"]


def test_fit_validates_once_before_the_first_batch_and_not_again_on_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = {"perform_initial_validation": True, "min_validation_period": "8 batches"}
    with caplog.at_level(logging.INFO, "detflow"):
        run = detflow.init(config("8 batches", **extra), run_dir=tmp_path)
        trial = Steps(run)
        result = run.fit(trial)
    assert validations(tmp_path) == [0, 8]
    first = read_metrics(tmp_path)[0]
    assert (first["kind"], first["batches"], first["records"]) == ("validation", 0, 0)
    assert first["metrics"]["validation_loss"] == 9.0  # the untrained model
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validated")]
    assert "at batch 0, before training; validation_loss=9" in lines[0]
    assert result.best_metric is not None and result.best_metric < 9.0  # no candidate for best

    again = detflow.init(config("16 batches", resume=True, **extra), run_dir=tmp_path)
    resumed = Steps(again)
    again.fit(resumed)
    assert validations(tmp_path) == [0, 8, 16]
    assert resumed.evaluations == 1  # batch 16's only


def test_without_the_key_there_is_no_initial_validation(tmp_path: Path) -> None:
    run = detflow.init(config("8 batches", min_validation_period="8 batches"), run_dir=tmp_path)
    run.fit(Steps(run))
    assert validations(tmp_path) == [8]


def test_an_initial_validation_without_searcher_metric_refuses_before_training(
    tmp_path: Path,
) -> None:
    cfg = config("8 batches", perform_initial_validation=True)
    cfg["searcher"]["metric"] = "validation_acc"
    run = detflow.init(cfg, run_dir=tmp_path)
    trial = Steps(run)
    with pytest.raises(ConfigError, match=r"searcher\.metric"):
        run.fit(trial)
    assert trial.w == 0.0  # not one batch trained
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "refused"


def own_loop(run: Run, state_w: list[float]) -> None:
    state = run.restore() or {"w": 0.0}
    if run.should_validate:
        run.report_validation({"loss": (state["w"] - 3.0) ** 2})
    for _batch in run.batches([[1.0, 1.0]] * 8):
        state["w"] += 0.1 * (3.0 - state["w"])
        run.report_training({"loss": (state["w"] - 3.0) ** 2})
        if run.should_validate:
            run.report_validation({"loss": (state["w"] - 3.0) ** 2})
        if run.should_checkpoint:
            run.checkpoint(state)
    run.finish()
    state_w.append(state["w"])


def test_the_own_loop_validates_before_the_first_batch_when_should_validate_says(
    tmp_path: Path,
) -> None:
    extra = {"perform_initial_validation": True, "min_validation_period": "8 batches"}
    ws: list[float] = []
    own_loop(detflow.init(config("8 batches", **extra), run_dir=tmp_path), ws)
    assert validations(tmp_path) == [0, 8]
    assert read_metrics(tmp_path)[0]["metrics"] == {"validation_loss": 9.0}
    again = detflow.init(config("16 batches", resume=True, **extra), run_dir=tmp_path)
    assert again.should_validate is False  # a resume: made when the run started
    own_loop(again, ws)
    assert validations(tmp_path) == [0, 8, 16]


def test_the_own_loop_refuses_to_start_without_the_initial_validation(tmp_path: Path) -> None:
    run = detflow.init(config("8 batches", perform_initial_validation=True), run_dir=tmp_path)
    run.restore()
    with pytest.raises(TrialError, match="perform_initial_validation is true"):
        run.batches([[1.0, 1.0]] * 8)


def test_a_report_validation_before_the_loop_on_a_resume_is_refused(tmp_path: Path) -> None:
    extra = {"perform_initial_validation": True}
    own_loop(detflow.init(config("8 batches", **extra), run_dir=tmp_path), [])
    again = detflow.init(config("16 batches", resume=True, **extra), run_dir=tmp_path)
    again.restore()
    with pytest.raises(TrialError, match="once, on a fresh start"):
        again.report_validation({"loss": 1.0})
