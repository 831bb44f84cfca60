"""What reporting to an MLflow tracking server costs the training loop.

Run from the repository root (``pip install -e ".[mlflow]"``)::

    python -m bench.tracking_overhead                      # 200 reports, 0 and 50 ms latency
    python -m bench.tracking_overhead --reports 500 --latency-ms 0 20 100

A real ``mlflow server`` (sqlite store, one worker, on 127.0.0.1) is started for the run;
``--latency-ms`` puts a relay in front of it that holds each chunk sent to the server that
long, as a tracking server across a network would (a cluster's nodes and a lab's server,
say). For each latency, ``--reports`` reports of 3 metrics each are made, timed in the
training loop's own thread:

- **baseline**: ``MlflowClient.log_batch(run_id, metrics=...)`` per report, as detflow's
  tracker called it before its reports went through a background sender;
- **detflow**: :class:`detflow._harness.tracking.MlflowTracker` ``.report(...)`` per report
  (queued; :class:`~detflow._harness.tracking.MetricSender` sends them), then the run's end
  (``close`` + ``finish``, which waits for the queue), timed apart.

Both write to their own MLflow run of the same server; the metric histories are read back
and checked complete. Printed: milliseconds per report in the loop, the end's wait, the
requests each made, and the ratio baseline / detflow of the loop's time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from bench._common import table


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Relay:
    """A TCP relay to ``port`` that holds each chunk sent towards it ``latency`` seconds."""

    def __init__(self, port: int, latency: float) -> None:
        self.target, self.latency = port, latency
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, delayed: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if delayed:
                    time.sleep(self.latency)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def start_server(where: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    log = open(where / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{where / 'mlflow.db'}", "--default-artifact-root", str(where / "art"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server, port
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((where / "server.log").read_text()) from None
            time.sleep(0.5)


def _metrics(i: int) -> dict[str, float]:
    return {"loss": 1.0 / (i + 1), "accuracy": i / 1000, "lr": 0.1}


def baseline(uri: str, reports: int) -> tuple[float, str]:
    """Seconds in the loop for ``reports`` synchronous ``log_batch`` calls; the run's id."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("bench") or client.create_experiment("bench")
    eid = experiment if isinstance(experiment, str) else experiment.experiment_id
    run_id = str(client.create_run(eid, run_name="baseline").info.run_id)
    began = time.perf_counter()
    for i in range(reports):
        now = int(time.time() * 1000)
        rows = [Metric(k, v, now, i + 1) for k, v in _metrics(i).items()]
        client.log_batch(run_id, metrics=rows)
    loop = time.perf_counter() - began
    client.set_terminated(run_id, "FINISHED")
    return loop, run_id


def detflow_tracker(uri: str, reports: int, run_dir: Path) -> tuple[float, float, str, Any]:
    """Seconds in the loop for ``reports`` tracker reports, seconds of the run's end, the
    run's id and the sender (for its request count)."""
    from detflow._core.artifacts import RunEnd, TrialResult
    from detflow._core.experiment import Experiment
    from detflow._harness.tracking import MlflowTracker

    os.environ["MLFLOW_TRACKING_URI"] = uri
    exp = Experiment.from_mapping(
        {"name": "bench", "hyperparameters": {"global_batch_size": 2}, "tracking": ["mlflow"]}
    )
    tracker = MlflowTracker(exp, run_dir)
    assert tracker.run_id is not None, "the tracker could not start its run"
    run_id = tracker.run_id
    began = time.perf_counter()
    for i in range(reports):
        tracker.report("train", _metrics(i), i + 1)
    loop = time.perf_counter() - began
    began = time.perf_counter()
    tracker.close(failing=False)
    tracker.finish(
        TrialResult(
            RunEnd.COMPLETED, records=2 * reports, batches=reports, steps=reports, epochs=1,
            target_batches=reports, batches_per_epoch=reports, global_batch_size=2,
            aggregation_frequency=1, length=Fraction(reports), unit="batches", metric=None,
            best_metric=None,
        )
    )  # fmt: skip
    end = time.perf_counter() - began
    return loop, end, run_id, tracker


@contextlib.contextmanager
def _counting_requests() -> Iterator[list[int]]:
    """The metrics of each report-metrics ``log_batch`` request made meanwhile."""
    from mlflow import MlflowClient

    calls: list[int] = []
    original = MlflowClient.log_batch

    def counted(self: Any, run_id: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("metrics") and not kwargs.get("tags"):  # the run's end logs tags
            calls.append(len(kwargs["metrics"]))
        return original(self, run_id, *args, **kwargs)

    MlflowClient.log_batch = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        MlflowClient.log_batch = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else "")
    parser.add_argument("--reports", type=int, default=200, help="reports per measurement")
    parser.add_argument(
        "--latency-ms", type=float, nargs="+", default=[0.0, 50.0], help="added per request"
    )
    args = parser.parse_args(argv)
    if args.reports < 1 or any(x < 0 for x in args.latency_ms):
        parser.error("--reports must be positive and --latency-ms at least 0")
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory(prefix="detflow-bench-mlflow-") as tmp:
        where = Path(tmp)
        server, port = start_server(where)
        rows = []
        try:
            for latency in args.latency_ms:
                relay = Relay(port, latency / 1000) if latency else None
                uri = f"http://127.0.0.1:{relay.port if relay else port}"
                base_loop, base_id = baseline(uri, args.reports)
                run_dir = where / f"run-{latency:g}"
                run_dir.mkdir()
                with _counting_requests() as calls:
                    loop, end, run_id, _ = detflow_tracker(uri, args.reports, run_dir)
                client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
                for rid in (base_id, run_id):
                    got = len(client.get_metric_history(rid, "loss"))
                    assert got == args.reports, f"run {rid}: {got} of {args.reports} reports"
                rows.append(
                    [
                        f"{latency:g}",
                        f"{1000 * base_loop / args.reports:.2f}",
                        f"{args.reports}",
                        f"{1000 * loop / args.reports:.3f}",
                        f"{1000 * end:.0f}",
                        f"{len(calls)}",
                        f"{base_loop / loop:.0f}x",
                    ]
                )
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print(f"{args.reports} reports of 3 metrics to a local mlflow server (sqlite, 1 worker)")
    header = [
        "latency ms",
        "baseline ms/report",
        "baseline requests",
        "detflow ms/report",
        "detflow end wait ms",
        "detflow requests",
        "loop: baseline / detflow",
    ]
    for line in table(header, rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
