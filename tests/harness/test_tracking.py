"""``tracking``: the key's check, TensorBoard on by default (MLflow never imported then),
MLflow runs in a local ``./mlruns`` (one per trial, continued on resume), and a tracking
server that is down: one warning, training completes (a real server: tests/e2e/test_mlflow.py)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import detflow
from detflow import ConfigError, Run
from detflow._harness.tracking import MLFLOW_RUN_FILE
from tests.support import REPO, read_metrics

#: What the tracker sets when the environment does not: kept out of this test process.
MLFLOW_ENV = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_ALLOW_FILE_STORE",
    "MLFLOW_TRACKING_URI",
)


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in MLFLOW_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def make_run(run_dir: Path, tracking: Any, length: str = "4 batches", **extra: Any) -> Run:
    cfg = {
        "name": "tracked",
        "hyperparameters": {"global_batch_size": 2, "lr": 0.25},
        "searcher": {"max_length": length},
        "min_validation_period": "2 batches",
        "tracking": tracking,
        **extra,
    }
    return detflow.init(cfg, run_dir=run_dir)


def train(run: Run) -> detflow.FitResult:
    state = run.restore() or {"w": 0.0}
    for batch in run.batches([[1.0, 2.0], [3.0, 4.0]]):
        state["w"] += run.hparams["lr"] * (sum(batch) / 2 - state["w"])
        run.report_training({"loss": (state["w"] - 2.5) ** 2})
        if run.should_validate:
            run.report_validation({"loss": (state["w"] - 2.5) ** 2})
        if run.should_checkpoint:
            run.checkpoint(state)
    return run.finish()


@pytest.mark.parametrize("value", [["wandb"], "mlflow", ["mlflow", "mlflow"], [1]])
def test_a_bad_tracking_value_is_refused_naming_the_key_and_the_trackers(
    tmp_path: Path, value: Any
) -> None:
    with pytest.raises(ConfigError) as raised:
        make_run(tmp_path, value)
    assert str(raised.value).startswith("tracking = ")
    assert "each one of tensorboard, mlflow" in str(raised.value)


def test_by_default_tensorboard_files_are_written_and_mlflow_is_never_imported(
    tmp_path: Path,
) -> None:
    code = (
        "import sys; from pathlib import Path; import detflow\n"
        "from tests.harness.test_tracking import train\n"
        "run = detflow.init({'hyperparameters': {'global_batch_size': 2, 'lr': 0.5},\n"
        "    'searcher': {'max_length': '4 batches'}, 'min_validation_period': '2 batches'},\n"
        f"    run_dir={str(tmp_path)!r})\n"
        "train(run)\n"
        "print('mlflow' in sys.modules, any((run.run_dir / 'tensorboard').iterdir()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "DETFLOW_TENSORBOARD": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_an_empty_tracking_list_writes_no_event_files(tmp_path: Path) -> None:
    result = train(make_run(tmp_path, []))
    assert result.counters.batches == 4
    assert not (tmp_path / "tensorboard").exists()
    assert [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"] == [2, 4]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once it is closed


def test_a_tracking_server_that_is_down_warns_once_and_training_completes(
    tmp_path: Path, mlflow_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    mlflow_env.setenv("MLFLOW_TRACKING_URI", uri)
    with caplog.at_level(logging.WARNING, logger="detflow"):
        result = train(make_run(tmp_path, ["mlflow"], length="8 batches"))
    assert (result.status.value, result.counters.batches) == ("completed", 8)
    warnings = [r.getMessage() for r in caplog.records if "tracking: mlflow" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert uri in warnings[0] and "training goes on" in warnings[0]
    validated = [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"]
    assert validated == [2, 4, 6, 8]
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"


def test_without_a_tracking_uri_runs_go_to_a_local_mlruns_and_a_resume_continues_its_run(
    tmp_path: Path, mlflow_env: pytest.MonkeyPatch
) -> None:
    mlflow_env.chdir(tmp_path)
    train(make_run(tmp_path / "run", ["mlflow", "tensorboard"]))
    first = json.loads((tmp_path / "run" / MLFLOW_RUN_FILE).read_text())["run_id"]
    train(make_run(tmp_path / "run", ["mlflow", "tensorboard"], length="8 batches", resume=True))
    assert json.loads((tmp_path / "run" / MLFLOW_RUN_FILE).read_text())["run_id"] == first
    from mlflow import MlflowClient

    client = MlflowClient((tmp_path / "mlruns").as_uri())
    found = client.get_experiment_by_name("tracked")
    assert found is not None
    runs = client.search_runs([found.experiment_id])
    assert [r.info.run_id for r in runs] == [first]  # one run for the trial
    run = runs[0]
    assert run.data.params["lr"] == "0.25" and run.data.tags["source.lr"] == "config"
    steps = [m.step for m in client.get_metric_history(first, "validation_loss")]
    assert steps == [2, 4, 6, 8]
    assert run.info.status == "FINISHED" and run.data.tags["detflow.batches"] == "8"
    assert any((tmp_path / "run" / "tensorboard").iterdir())
