"""``tracking``: the key's check, TensorBoard on by default (MLflow never imported then),
MLflow runs in a local ``./mlruns`` (one per trial, continued on resume), a tracking server
that is down (one warning, training completes) or slow (training does not wait for it; the
run's end does), and the background sender's queue (a real server: tests/e2e/test_mlflow.py)."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import detflow
from detflow import ConfigError, Run
from detflow._harness.tracking import BATCH_METRICS, MLFLOW_RUN_FILE, MetricSender
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


def test_neither_training_nor_result_json_waits_for_a_slow_tracking_server(
    tmp_path: Path, mlflow_env: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    mlflow_env.chdir(tmp_path)
    result_file = tmp_path / "run" / "result.json"
    answered = threading.Event()  # the server answers only once result.json is written
    sends: list[int] = []
    real = MlflowClient.log_batch

    def slow(self: Any, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> Any:
        if metrics and not params and not tags:  # a report's metrics (the run's end has tags)
            sends.append(len(metrics))
            # A report, or result.json, that waited for the server would wait here 30 s and
            # then turn the tracker off.
            assert answered.wait(30), "the trial waited for the tracking server"
        return real(self, run_id, metrics=metrics, params=params, tags=tags)

    def answer_once_written() -> None:
        while not result_file.exists():
            time.sleep(0.01)
        answered.set()

    mlflow_env.setattr(MlflowClient, "log_batch", slow)
    watcher = threading.Thread(target=answer_once_written, daemon=True)
    watcher.start()
    result = train(make_run(tmp_path / "run", ["mlflow"], length="8 batches"))
    assert result.status.value == "completed"

    run_id = json.loads((tmp_path / "run" / MLFLOW_RUN_FILE).read_text())["run_id"]
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    assert [m.step for m in client.get_metric_history(run_id, "validation_loss")] == [2, 4, 6, 8]
    records = read_metrics(tmp_path / "run")
    train_records = [r for r in records if r["kind"] == "train"]
    for name in train_records[0]["metrics"]:
        steps = [m.step for m in client.get_metric_history(run_id, name)]
        assert steps == [r["batches"] for r in train_records], name
    # what queued while the first request was out went in one more request
    assert 1 <= len(sends) <= 2 < len(records), (sends, len(records))
    assert client.get_run(run_id).info.status == "FINISHED"


def _blocked_sender() -> tuple[MetricSender, list[list[int]], threading.Event, threading.Event]:
    """A sender whose first call blocks until ``release`` is set (``began`` once it is out)."""
    calls: list[list[int]] = []
    began, release = threading.Event(), threading.Event()

    def send(items: list[int]) -> None:
        calls.append(list(items))
        began.set()
        assert release.wait(10)

    return MetricSender(send), calls, began, release


def test_the_sender_sends_what_queued_while_a_call_was_out_in_one_call_and_in_order() -> None:
    sender, calls, began, release = _blocked_sender()
    sender.put([1])
    assert began.wait(10)
    sender.put([2, 3])  # returns at once: the first call is still out
    sender.put([4])
    assert sender.pending() == 4 and calls == [[1]]
    release.set()
    assert sender.drain(timeout=10)
    assert calls == [[1], [2, 3, 4]] and sender.pending() == 0
    sender.stop()


def test_the_sender_sends_at_most_mlflows_batch_limit_in_one_call() -> None:
    sender, calls, began, release = _blocked_sender()
    sender.put([0])
    assert began.wait(10)
    sender.put(list(range(1, 2 * BATCH_METRICS + 2)))
    release.set()
    assert sender.drain(timeout=10)
    assert [len(c) for c in calls] == [1, BATCH_METRICS, BATCH_METRICS, 1]
    assert [item for c in calls for item in c] == list(range(2 * BATCH_METRICS + 2))
    sender.stop()


def test_a_send_that_fails_stops_the_sender_and_drops_what_is_queued() -> None:
    calls: list[list[int]] = []

    def send(items: list[int]) -> None:
        calls.append(items)
        raise ConnectionError("tracking server gone")

    sender = MetricSender(send)
    sender.put([1, 2])
    assert not sender.drain(timeout=10)
    assert isinstance(sender.error, ConnectionError)
    sender.put([3])  # nothing more is sent
    assert not sender.drain(timeout=10) and calls == [[1, 2]] and sender.pending() == 0


def test_draining_gives_up_after_its_timeout_and_says_what_is_left() -> None:
    sender, _, began, release = _blocked_sender()
    sender.put([1, 2])
    assert began.wait(10)
    sender.put([3])
    assert not sender.drain(timeout=0.05)
    assert sender.pending() == 3 and sender.error is None  # [3] queued, [1, 2] out
    release.set()
    assert sender.drain(timeout=10)
    sender.stop()


def test_a_stopped_sender_ends_its_thread_once_the_queue_is_empty() -> None:
    sent: list[list[int]] = []
    sender = MetricSender(sent.append)
    sender.put([1])
    assert sender.drain(timeout=10)
    sender.stop()
    thread = sender._thread  # the one it started
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()
    sender.put([2])
    assert sent == [[1]]
