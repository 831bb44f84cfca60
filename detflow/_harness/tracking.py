"""Experiment trackers a run reports to besides ``metrics.jsonl`` (``tracking`` in the config).

``tensorboard`` is :mod:`detflow._harness.tensorboard`'s event files. ``mlflow`` (extra
``mlflow``) logs each trial as an MLflow run, to ``MLFLOW_TRACKING_URI`` (a local
``./mlruns`` when unset): the merged hyperparameters as params (each one's provenance as a
tag ``source.<key>``), every report's metrics at ``step`` = batches trained, the result as
tags and the run's status; a sweep's trials are nested under one parent run (its id kept in
the sweep directory, made once under a file lock). Params and tags are named as
``run.hparams`` names them (``lr``, not ``hyperparameters.lr``). A trial resumed, promoted
or restarted continues its MLflow run (its id is kept in the run directory).

MLflow is imported only when ``tracking`` names it. Reports' metrics are sent from a thread of
the tracker's own (:class:`MetricSender`): a slow tracking server never holds training up,
and what queued while a request was out goes in the next one. The run's end waits for what is
queued (at most :data:`DRAIN_SECONDS`, after ``result.json`` is written) before it logs the
result. A tracker that fails (a
server that is down, say) logs one warning and is off for the rest of the run: training goes
on, and ``metrics.jsonl`` has every report.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from detflow._core.artifacts import (
    HPARAMS_FILE,
    JOURNAL_FILE,
    STATE_FILE,
    RunEnd,
    TrialResult,
)
from detflow._core.experiment import Experiment
from detflow._core.files import write_atomic
from detflow._core.tracking import Tracking

__all__ = [
    "DRAIN_SECONDS",
    "MLFLOW_PARENT_FILE",
    "MLFLOW_RUN_FILE",
    "MetricSender",
    "MlflowTracker",
    "Tracker",
    "open_trackers",
]

log = logging.getLogger("detflow")

#: In a run directory: the id of the trial's MLflow run (continued on resume).
MLFLOW_RUN_FILE = "mlflow_run.json"
#: In a sweep directory: the id of the sweep's parent MLflow run.
MLFLOW_PARENT_FILE = "mlflow_parent.json"
#: MLflow's variable for where runs go; unset: :data:`DEFAULT_DIR`.
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: Where runs go without ``MLFLOW_TRACKING_URI``: MLflow's file store in the working
#: directory (``MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ./mlruns``).
DEFAULT_DIR = "mlruns"
#: MLflow's HTTP retry settings, set (unless the environment sets them) so that a tracking
#: server that is down costs one short try, not minutes of retries inside training.
_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
#: The most a run's end waits for the metrics still queued for the tracking server.
DRAIN_SECONDS = 60.0
#: MLflow's limit of metrics in one ``log_batch`` request.
BATCH_METRICS = 1000
_HPARAMS_PREFIX = "hyperparameters."
_MLFLOW_STATUS = {RunEnd.COMPLETED: "FINISHED", RunEnd.STOPPED: "KILLED", RunEnd.REFUSED: "FAILED"}


class Tracker(Protocol):
    """What a run's session tells a tracker (only the chief process has trackers)."""

    def report(self, kind: str, metrics: Mapping[str, float], batches: int) -> None:
        """One report (``train`` or ``validation``) at ``batches`` trained."""

    def finish(self, result: TrialResult) -> None:
        """The run ended with ``result`` (``result.json``'s)."""

    def close(self, *, failing: bool) -> None:
        """The run's process is done with the tracker (``failing``: its code raised)."""


class MetricSender:
    """Calls ``send`` with queued items from a thread of its own, started at the first
    :meth:`put`: each call takes everything queued since the last one, :data:`BATCH_METRICS`
    at most. The first exception ``send`` raises stops it (kept in :attr:`error`, the queue
    dropped); :meth:`drain` waits for the queue to empty, :meth:`stop` ends the thread once
    it is.

    >>> sent = []
    >>> sender = MetricSender(sent.append)
    >>> sender.put([1, 2]); sender.put([3])
    >>> sender.drain(timeout=5.0), sorted(item for batch in sent for item in batch)
    (True, [1, 2, 3])
    >>> sender.stop()
    """

    def __init__(self, send: Callable[[list[Any]], object]) -> None:
        self._send = send
        self._queue: list[Any] = []
        self._out = 0  # items in the call of send that is out
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.error: Exception | None = None

    def put(self, items: list[Any]) -> None:
        """Queue ``items`` to send (nothing once ``send`` has failed or :meth:`stop` ran)."""
        with self._changed:
            if self.error is not None or self._stopped:
                return
            self._queue.extend(items)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="detflow-tracking", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for everything queued to be sent; whether it was
        (False also when ``send`` failed: see :attr:`error`)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (self._queue or self._out) and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self.error is None

    def stop(self) -> None:
        """Let the thread end once the queue is empty; :meth:`put` queues nothing more."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()

    def pending(self) -> int:
        """Items queued or being sent."""
        with self._changed:
            return len(self._queue) + self._out

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._stopped:
                    self._changed.wait()
                if not self._queue:
                    return
                batch = self._queue[:BATCH_METRICS]
                del self._queue[:BATCH_METRICS]
                self._out = len(batch)
            try:
                self._send(batch)
            except Exception as exc:  # the tracker's failure, reported by its thread's owner
                with self._changed:
                    self.error = exc
                    self._queue.clear()
                    self._out = 0
                    self._changed.notify_all()
                return
            with self._changed:
                self._out = 0
                self._changed.notify_all()


def open_trackers(experiment: Experiment, run_dir: Path) -> list[Tracker]:
    """The trackers ``tracking`` names, besides TensorBoard (the session's own writer).

    >>> import tempfile
    >>> exp = Experiment.from_mapping({"hyperparameters": {"global_batch_size": 2}})
    >>> open_trackers(exp, Path(tempfile.mkdtemp()))
    []
    """
    trackers: list[Tracker] = []
    if Tracking.MLFLOW in experiment.tracking:
        trackers.append(MlflowTracker(experiment, run_dir))
    return trackers


class MlflowTracker:
    """A trial as an MLflow run (see the module's description). Every call to MLflow is
    guarded: the first failure logs one warning naming the tracking URI and turns the
    tracker off."""

    def __init__(self, experiment: Experiment, run_dir: Path) -> None:
        self.experiment = experiment
        self.run_dir = run_dir
        self.uri = os.environ.get(TRACKING_URI_ENV) or Path(DEFAULT_DIR).resolve().as_uri()
        self.run_id: str | None = None
        self.parent_id: str | None = None  # the sweep's run, for a trial of a sweep
        self._client: Any = None
        self._sender: MetricSender | None = None  # the reports' metrics, sent in the background
        self._failed = False
        self._guarded(self._start)

    # -- what the session calls -----------------------------------------------------------------
    def report(self, kind: str, metrics: Mapping[str, float], batches: int) -> None:
        if self.run_id is not None:
            self._guarded(self._queue_metrics, metrics, batches)

    def finish(self, result: TrialResult) -> None:
        if self.run_id is not None:
            self._guarded(self._drain)
            self._guarded(self._finish, result)

    def close(self, *, failing: bool) -> None:
        # A run that ends well drains in finish(), once result.json is written: a slow
        # server must not hold up the file a pre-empted trial's sweep reads.
        if failing and self.run_id is not None:
            self._guarded(self._drain)
            self._guarded(self._client.set_terminated, self.run_id, "FAILED")
            self._guarded(self._end_parent)

    # -- MLflow ---------------------------------------------------------------------------------
    def _guarded(self, call: Any, *args: Any) -> None:
        """``call(*args)``; on the first failure one warning, then the tracker is off."""
        if self._failed:
            return
        try:
            call(*args)
        except Exception as exc:  # any failure of the tracker, never training's
            self._failed = True
            self.run_id = None
            reason = " ".join(str(exc).split())[:300] or type(exc).__name__
            if isinstance(exc, ModuleNotFoundError) and exc.name == "mlflow":
                reason = "mlflow is not installed: pip install 'detflow[mlflow]'"
            log.warning(
                "tracking: mlflow logging is off for this run (%s: %s); training goes on, "
                "metrics.jsonl has every report",
                self.uri,
                reason,
            )

    def _start(self) -> None:
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        if not os.environ.get(TRACKING_URI_ENV):  # MLflow 3 asks to opt in to its file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient

        self._client = client = MlflowClient(tracking_uri=self.uri)
        kept = _read_json(self.run_dir / MLFLOW_RUN_FILE)
        if kept.get("uri") == self.uri and isinstance(kept.get("run_id"), str):
            self.run_id = kept["run_id"]
            parent = kept.get("parent_id")
            self.parent_id = parent if isinstance(parent, str) else None
            client.update_run(self.run_id, status="RUNNING")
            return
        experiment_id = _experiment_id(client, self.experiment.name)
        tags = {"detflow.run_dir": str(self.run_dir.resolve())}
        sweep_dir = _sweep_dir(self.run_dir)
        if sweep_dir is not None:
            self.parent_id = _parent_run(client, experiment_id, sweep_dir, self.uri)
            tags["mlflow.parentRunId"] = self.parent_id
            tags["detflow.trial"] = self.run_dir.name
        run = client.create_run(experiment_id, run_name=_run_name(self.run_dir), tags=tags)
        self.run_id = run.info.run_id
        write_atomic(
            self.run_dir / MLFLOW_RUN_FILE,
            json.dumps(
                {"uri": self.uri, "run_id": self.run_id, "parent_id": self.parent_id}
            ).encode(),
        )
        self._log_params()

    def _log_params(self) -> None:
        from mlflow.entities import Param, RunTag

        params, tags = [], []
        for dotted, record in _hyperparameters(self.run_dir, self.experiment).items():
            key = dotted.removeprefix(_HPARAMS_PREFIX)  # lr, as run.hparams["lr"] names it
            params.append(Param(key, _text(record.get("value"), 6000)))
            if "source" in record:
                tags.append(RunTag(f"source.{key}", str(record["source"])))
        for start in range(0, max(len(params), len(tags)), 100):  # MLflow's batch limit
            self._client.log_batch(
                self.run_id, params=params[start : start + 100], tags=tags[start : start + 100]
            )

    def _queue_metrics(self, metrics: Mapping[str, float], batches: int) -> None:
        from mlflow.entities import Metric

        if self._sender is None:
            client, run_id = self._client, self.run_id
            self._sender = MetricSender(lambda rows: client.log_batch(run_id, metrics=rows))
        if self._sender.error is not None:
            raise self._sender.error  # a send in the background failed: warn, then off
        now = int(time.time() * 1000)
        rows = [Metric(name, float(value), now, batches) for name, value in metrics.items()]
        if rows:
            self._sender.put(rows)

    def _drain(self) -> None:
        """Wait for the metrics still queued (at most :data:`DRAIN_SECONDS`), then let the
        sender's thread end: the run's end logs the rest itself."""
        sender = self._sender
        if sender is None:
            return
        sent = sender.drain(DRAIN_SECONDS)
        sender.stop()
        if sent:
            return
        if sender.error is not None:
            raise sender.error
        raise TimeoutError(
            f"{sender.pending()} metrics not sent within {DRAIN_SECONDS:g} s of the run's end"
        )

    def _finish(self, result: TrialResult) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        tags = [
            RunTag(f"detflow.{name}", _text(getattr(result, name), 5000))
            for name in ("status", "batches", "records", "epochs", "target_batches")
        ]
        metrics = []
        metric = self.experiment.searcher.metric
        if result.best_metric is not None:
            metrics.append(Metric(f"best_{metric}", result.best_metric, now, result.batches))
        self._client.log_batch(self.run_id, metrics=metrics, tags=tags)
        self._client.set_terminated(self.run_id, _MLFLOW_STATUS.get(result.status, "FINISHED"))
        self._end_parent()

    def _end_parent(self) -> None:
        """The sweep's run ends when its last trial to end does: each trial's end moves it."""
        if self.parent_id is not None:
            self._client.set_terminated(self.parent_id, "FINISHED")


def _experiment_id(client: Any, name: str) -> str:
    """The MLflow experiment of this name, made by whichever trial comes first."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except Exception:  # another trial made it between the two calls
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _parent_run(client: Any, experiment_id: str, sweep_dir: Path, uri: str) -> str:
    """The sweep's parent run, made once: the first trial makes it under the sweep's lock
    file and keeps its id in the sweep directory; the others read it there."""
    path = sweep_dir / MLFLOW_PARENT_FILE
    with _locked(sweep_dir / f".{MLFLOW_PARENT_FILE}.lock"):
        kept = _read_json(path)
        if kept.get("uri") == uri and isinstance(kept.get("run_id"), str):
            return str(kept["run_id"])
        run = client.create_run(
            experiment_id,
            run_name=sweep_dir.name,
            tags={"detflow.sweep_dir": str(sweep_dir.resolve())},
        )
        run_id = str(run.info.run_id)
        client.set_terminated(run_id, "FINISHED")  # a container of the trials' runs: each
        # trial's end sets its end time again (MlflowTracker._end_parent)
        write_atomic(path, json.dumps({"uri": uri, "run_id": run_id}).encode())
        return run_id


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sweep_dir(run_dir: Path) -> Path | None:
    """The sweep directory holding this trial's run directory, if it is one."""
    parent = run_dir.resolve().parent
    if any((parent / name).exists() for name in (STATE_FILE, JOURNAL_FILE)):
        return parent
    return None


def _run_name(run_dir: Path) -> str:
    sweep = _sweep_dir(run_dir)
    return f"{sweep.name}/{run_dir.name}" if sweep is not None else run_dir.name


def _hyperparameters(run_dir: Path, experiment: Experiment) -> dict[str, dict[str, Any]]:
    """``hparams.json`` (value and source of each merged hyperparameter), else the values."""
    records = _read_json(run_dir / HPARAMS_FILE)
    if records and all(isinstance(r, dict) and "value" in r for r in records.values()):
        return records
    flat = _flat(experiment.hyperparameters, _HPARAMS_PREFIX)
    return {key: {"value": value} for key, value in flat.items()}


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:limit]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
