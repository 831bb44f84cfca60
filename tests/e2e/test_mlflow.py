"""``tracking=[mlflow]`` against a real ``mlflow server`` (sqlite backend, on 127.0.0.1,
started once for this module): a 2-trial grid of the loop script leaves 2 trial runs,
nested under the sweep's parent run, with their ``lr`` params (provenance as tags) and
``validation_loss`` histories at increasing steps (= batches)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO

#: The server takes long to start on a loaded machine (it imports all of MLflow).
READY_TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on a free port with a sqlite store; its URL. Stopped afterwards."""
    where = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(where / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{where / 'mlflow.db'}",
            "--default-artifact-root",
            str(where / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its workers stop with it (killpg below)
    )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(url):
            if server.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"mlflow server did not start: {(where / 'server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_a_grid_of_two_trials_leaves_two_nested_runs_with_lr_and_validation_history(
    tmp_path: Path, mlflow_server: str
) -> None:
    sweep_dir = tmp_path / "s"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "launchers")]),
        "MLFLOW_TRACKING_URI": mlflow_server,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trials.quadratic_loop",
            "-m",
            "+experiment=quadratic",
            "name=grid_tracked",
            "searcher.name=grid",
            "hyperparameters.lr=0.01,0.05",
            "searcher.max_length=40 batches",
            "min_validation_period=10 batches",
            "searcher.max_concurrent_trials=2",
            "tracking=[mlflow]",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for log in sweep_dir.glob("*/output.log"):
        assert "tracking: mlflow" not in log.read_text()  # no failure warned of
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("grid_tracked")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(trials) == 2
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parents[0].info.run_id}
    # The sweep's run ends with its last trial, not when the first trial made it.
    assert parents[0].info.status == "FINISHED"
    assert parents[0].info.end_time >= max(r.info.end_time for r in trials)
    assert parents[0].info.end_time > min(r.info.start_time for r in trials)
    assert sorted(r.data.params["lr"] for r in trials) == ["0.01", "0.05"]
    for run in trials:
        assert run.data.tags["source.lr"] == "searcher"
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "validation_loss")
        steps = [m.step for m in history]
        assert steps == [10, 20, 30, 40]  # at every validation, step = batches
        assert run.data.metrics["validation_loss"] == history[-1].value
