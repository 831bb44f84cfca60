"""``Run``: one trial's training for an exact length, with truthful metrics and checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

from detflow import _preemption
from detflow._checkpoint import CheckpointStore, CorruptCheckpoint, write_atomic
from detflow._collective import Collective
from detflow._config import LoadedConfig
from detflow._errors import ConfigError
from detflow._experiment import Experiment
from detflow._progress import make_progress
from detflow._report import (
    Counters,
    MetricsFile,
    Window,
    format_line,
    format_metrics,
    mean_metrics,
)
from detflow._tensorboard import ScalarWriter, open_writer
from detflow._trial import Trial
from detflow._units import Length

__all__ = ["FitResult", "Run", "TrialError"]

log = logging.getLogger("detflow")


class TrialError(RuntimeError):
    """The trial itself failed (a loss that is not finite, data that yields nothing), or
    the harness could not write its files (a full disk): one line that says why."""


def _write_error(exc: OSError, where: str = "") -> TrialError:
    """A one-line :class:`TrialError` for an ``OSError`` of the harness's own writes.

    >>> str(_write_error(OSError(28, "No space left on device", "/runs/a/metrics.jsonl")))
    'cannot write /runs/a/metrics.jsonl: No space left on device; rerun with resume=true to
    continue from the last checkpoint'
    """
    name = exc.filename if exc.filename is not None else where or "the run directory"
    return TrialError(
        f"cannot write {name}: {exc.strerror or exc}; "
        "rerun with resume=true to continue from the last checkpoint"
    )


@contextmanager
def _writing(where: str = "") -> Iterator[None]:
    """Turn an ``OSError`` of the harness's own writes into a one-line :class:`TrialError`."""
    try:
        yield
    except OSError as exc:
        raise _write_error(exc, where) from exc


@dataclass(frozen=True)
class FitResult:
    """How :meth:`Run.fit` ended."""

    status: str  # "completed" or "stopped" (pre-empted: checkpointed, resumable)
    counters: Counters
    target_batches: int
    validation: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None


@dataclass
class _Plan:
    target: int
    validate_every: int
    checkpoint_every: int
    report_every: int
    progress_every: int
    epoch_length: int | None


class Run:
    """A trial's run: its validated config, hyperparameters and run directory.

    Made by :func:`detflow.init`; call :meth:`fit` with your :class:`Trial`.
    """

    def __init__(
        self,
        loaded: LoadedConfig,
        run_dir: Path,
        *,
        max_length: Length | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.loaded = loaded
        self.experiment: Experiment = loaded.experiment
        self.run_dir = run_dir
        self.rank = rank
        self.world_size = world_size
        self.max_length = max_length or loaded.experiment.searcher.max_length
        self._stop_requested = False
        self._tensorboard: ScalarWriter | None = None
        #: Set by a multi-process trial (``detflow.pytorch`` over torch.distributed).
        self.collective: Collective | None = None

    # -- what a trial reads -----------------------------------------------------------------
    @property
    def hparams(self) -> dict[str, Any]:
        """The merged, resolved hyperparameters."""
        return self.experiment.hyperparameters

    @property
    def seed(self) -> int:
        """The experiment's seed."""
        return self.experiment.seed

    @property
    def per_slot_batch_size(self) -> int:
        """Records per batch in this process (the global batch split over slots)."""
        return self.experiment.per_slot_batch_size

    @property
    def aggregation_frequency(self) -> int:
        """Batches per optimizer step."""
        return self.experiment.aggregation_frequency

    @property
    def is_chief(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.rank == 0

    def request_stop(self) -> None:
        """Checkpoint at the next optimizer-step boundary and return from :meth:`fit`."""
        self._stop_requested = True

    # -- training ---------------------------------------------------------------------------
    def plan(self, trial: Trial) -> _Plan:
        """Convert the lengths to batches for this trial's data; log every rounding."""
        exp = self.experiment
        data_length = None if exp.records_per_epoch is not None else trial.epoch_length()
        math_ = exp.batch_math(data_length)
        lengths = {
            "searcher.max_length": self.max_length,
            "min_validation_period": exp.min_validation_period,
            "min_checkpoint_period": exp.min_checkpoint_period,
        }
        batches = {key: math_.to_batches(length, key) for key, length in lengths.items()}
        for key, length in lengths.items():
            note = math_.describe(length, key)
            if note and self.is_chief:
                log.info(note)
        a = exp.aggregation_frequency
        target = batches["searcher.max_length"]
        return _Plan(
            target=target,
            validate_every=batches["min_validation_period"],
            checkpoint_every=batches["min_checkpoint_period"],
            report_every=-(-exp.scheduling_unit // a) * a,
            progress_every=max(1, target // 200),
            epoch_length=math_.batches_per_epoch,
        )

    def fit(self, trial: Trial) -> FitResult:
        """Train until the batches trained reach ``searcher.max_length``; validate and
        checkpoint on their periods and once at the end. Resumes from the run directory's
        last checkpoint when ``resume`` is true.
        """
        if self.world_size > 1 and self.collective is None:
            raise ConfigError(
                "resources.slots_per_trial",
                self.world_size,
                f"1 for {type(trial).__name__}: only trials that join a process group "
                "(detflow.pytorch.TorchTrial) run on several slots",
            )
        plan = self.plan(trial)
        exp = self.experiment
        a = exp.aggregation_frequency
        _preemption.register(self)
        store = CheckpointStore(self.run_dir / "checkpoints")
        counters = Counters()
        validation: dict[str, float] = {}
        best: float | None = None
        loaded = store.load()
        if loaded is not None and not (exp.resume or _requeued()):
            raise ConfigError(
                "resume",
                False,
                f"true to continue from the checkpoint in {store.root}, or a new run directory",
            )
        if loaded is not None:
            meta = loaded.meta
            counters = _saved_counters(loaded.path, meta)
            validation = dict(meta.get("validation") or {})
            best = meta.get("best_metric")
            trial.load_state_dict(loaded.trial_state)
            _set_rng_state(meta.get("rng") or {})
        if self.is_chief:  # reports past the checkpoint (all, without one) will be redone
            with _writing():
                _truncate_metrics(self.run_dir / "metrics.jsonl", counters.batches)
        if loaded is not None and self.is_chief:
            log.info(
                "resumed from %s: %d batches, %d records, %d steps, %d epochs",
                loaded.path,
                counters.batches,
                counters.records,
                counters.steps(a),
                counters.epochs,
            )

        metrics_file = None
        if self.is_chief:
            with _writing():
                metrics_file = MetricsFile(self.run_dir / "metrics.jsonl")
                self._tensorboard = open_writer(self.run_dir, start_batches=counters.batches)
        progress = make_progress(plan.target, counters.batches) if self.is_chief else None
        try:
            result = self._loop(
                trial, plan, counters, store, metrics_file, progress, validation, best
            )
        except BaseException:
            self._close(progress, metrics_file, failing=True)
            raise
        self._close(progress, metrics_file, failing=False)
        if self.is_chief:
            with _writing():
                self._write_result(result, plan)
        return result

    def _close(self, progress: Any, metrics_file: MetricsFile | None, *, failing: bool) -> None:
        """Close what :meth:`fit` opened; while failing, a second error would hide the first."""
        if progress is not None:
            progress.close()
        if metrics_file is not None:
            metrics_file.close()
        writer, self._tensorboard = self._tensorboard, None
        if writer is not None:
            try:
                with _writing(writer.path):
                    writer.close()
            except TrialError:
                if not failing:
                    raise

    def _write_result(self, result: FitResult, plan: _Plan) -> None:
        """``result.json``: how the run ended, read by the sweeper and ``detflow summary``."""
        exp = self.experiment
        unit = self.max_length.unit
        length = exp.batch_math(plan.epoch_length).in_unit(result.counters.batches, unit)
        payload = {
            "status": result.status,
            "records": result.counters.records,
            "batches": result.counters.batches,
            "steps": result.counters.steps(exp.aggregation_frequency),
            "epochs": result.counters.epochs,
            "target_batches": result.target_batches,
            "batches_per_epoch": plan.epoch_length,
            "global_batch_size": exp.global_batch_size,
            "aggregation_frequency": exp.aggregation_frequency,
            "length": str(length),
            "unit": unit.value,
            "metric": result.validation.get(exp.searcher.metric),
            "best_metric": result.best_metric,
            "validation": result.validation,
        }
        write_atomic(self.run_dir / "result.json", (json.dumps(payload, indent=2) + "\n").encode())

    def _loop(
        self,
        trial: Trial,
        plan: _Plan,
        counters: Counters,
        store: CheckpointStore,
        metrics_file: MetricsFile | None,
        progress: Any,
        validation: dict[str, float],
        best: float | None,
    ) -> FitResult:
        exp = self.experiment
        a = exp.aggregation_frequency
        target = plan.target
        train_batch = trial.train_batch
        size_of = trial.batch_size
        isfinite = math.isfinite
        stop_now = self._stop_now
        self._stopping = False
        periods = (
            plan.report_every,
            plan.validate_every,
            plan.checkpoint_every,
            plan.progress_every,
        )
        b = counters.batches
        rows: list[Any] = []
        sizes: list[int] = []
        window_start = time.perf_counter()

        def next_event(at: int) -> int:
            return min(target, *((at // p + 1) * p for p in periods))

        while b < target:
            epoch_data = trial.training_data(counters.epochs)
            batches_in = iter(epoch_data)
            if counters.batch_in_epoch:
                batches_in = islice(batches_in, counters.batch_in_epoch, None)
            epoch_end = (
                b - counters.batch_in_epoch + plan.epoch_length if plan.epoch_length else None
            )
            epoch_over = False
            while not epoch_over:
                stop_at = next_event(b)
                if epoch_end is not None and epoch_end < stop_at:
                    stop_at = epoch_end
                started = b
                for batch in batches_in:
                    metrics = train_batch(batch)
                    try:
                        loss = float(metrics["loss"])
                    except (KeyError, TypeError, ValueError):
                        raise TrialError(
                            "train_batch must return a mapping with a numeric 'loss', "
                            f"got {metrics!r}"
                        ) from None
                    if not isfinite(loss):
                        raise TrialError(f"loss is {loss} at batch {b + 1}")
                    rows.append(metrics)
                    sizes.append(size_of(batch))
                    b += 1
                    if (b % a == 0 and stop_now()) or b >= stop_at:  # stop asked at every step
                        break
                else:
                    epoch_over = True
                    if b == started and counters.batch_in_epoch == 0:
                        raise TrialError(f"training_data({counters.epochs}) yielded no batches")
                new_records = sum(sizes[len(sizes) - (b - started) :]) if b > started else 0
                counters.records += self._global_sum(new_records)
                counters.batch_in_epoch += b - started
                counters.batches = b
                if epoch_end is not None and b >= epoch_end:
                    epoch_over = True
                if epoch_over:
                    counters.epochs += 1
                    counters.batch_in_epoch = 0

                at_target = b >= target
                stopping = self._stopping and b % a == 0
                do_validate = at_target or b % plan.validate_every == 0
                do_checkpoint = at_target or stopping or b % plan.checkpoint_every == 0
                do_report = do_validate or do_checkpoint or b % plan.report_every == 0
                if do_report and rows:
                    now = time.perf_counter()
                    window = self._global_window(
                        Window(sum(sizes), len(rows), now - window_start, mean_metrics(rows, sizes))
                    )
                    self._report("train", "trained", window, counters, metrics_file)
                    rows, sizes = [], []
                    window_start = time.perf_counter()
                if do_validate:
                    validation = self._validate(trial, counters, metrics_file)
                    metric = validation.get(exp.searcher.metric)
                    if metric is not None and (
                        best is None
                        or (metric < best if exp.searcher.smaller_is_better else metric > best)
                    ):
                        best = metric
                if do_checkpoint and b % a == 0:
                    self._checkpoint(trial, store, counters, validation, best, do_validate)
                if progress is not None:
                    progress.update(b)
                if stopping:
                    log.info("stopped at batch %d on request; checkpoint saved", b)
                    _preemption.note_stopped()
                    return FitResult("stopped", counters, target, validation, best)
                if at_target:
                    break
        return FitResult("completed", counters, target, validation, best)

    def _stop_now(self) -> bool:
        """At a step boundary, on every rank: stop here? (All ranks agree.)"""
        if self.collective is None:
            self._stopping = self._stop_requested
        else:
            self._stopping = self.collective.any(self._stop_requested)
        return self._stopping

    def _global_sum(self, value: int) -> int:
        if self.collective is None:
            return value
        return round(self.collective.sum([float(value)])[0])

    def _global_window(self, window: Window) -> Window:
        """A report over every rank: records summed, metrics averaged weighted by records.

        Batches stay this rank's count: one global batch is one batch on every rank.
        """
        if self.collective is None:
            return window
        keys = sorted(window.metrics)
        local = [window.metrics[k] * window.records for k in keys] + [float(window.records)]
        total = self.collective.sum(local)
        records = total[-1]
        metrics = {k: (total[i] / records if records else math.nan) for i, k in enumerate(keys)}
        return Window(round(records), window.batches, window.seconds, metrics)

    def _report(
        self,
        kind: str,
        verb: str,
        window: Window,
        counters: Counters,
        metrics_file: MetricsFile | None,
    ) -> None:
        if not self.is_chief:
            return
        if log.isEnabledFor(logging.INFO):
            log.info(format_line(verb, window))
        if window.metrics and log.isEnabledFor(logging.INFO):
            log.info(
                "%s metrics: %s",
                "training" if kind == "train" else "validation",
                format_metrics(window.metrics),
            )
        assert metrics_file is not None  # the chief always has one
        record = {
            "kind": kind,
            "records": counters.records,
            "batches": counters.batches,
            "steps": counters.steps(self.experiment.aggregation_frequency),
            "epochs": counters.epochs,
            "metrics": window.metrics,
            "window": {
                "records": window.records,
                "batches": window.batches,
                "seconds": window.seconds,
            },
            "time": time.time(),
        }
        try:
            metrics_file.write(record)
            if self._tensorboard is not None:
                self._tensorboard.write(kind, window.metrics, counters.batches)
        except OSError as exc:
            raise _write_error(exc, self._tensorboard.path if self._tensorboard else "") from exc

    def _validate(
        self, trial: Trial, counters: Counters, metrics_file: MetricsFile | None
    ) -> dict[str, float]:
        start = time.perf_counter()
        custom = trial.evaluate()
        if custom is not None:
            metrics = mean_metrics([custom], [1], prefix="validation_")
            records = batches = 0
        else:
            rows: list[Mapping[str, Any]] = []
            sizes: list[int] = []
            for batch in trial.validation_data():
                rows.append(trial.evaluate_batch(batch))
                sizes.append(trial.batch_size(batch))
            metrics = mean_metrics(rows, sizes, prefix="validation_")
            records, batches = sum(sizes), len(rows)
        window = self._global_window(Window(records, batches, time.perf_counter() - start, metrics))
        self._report("validation", "validated", window, counters, metrics_file)
        return window.metrics

    def _checkpoint(
        self,
        trial: Trial,
        store: CheckpointStore,
        counters: Counters,
        validation: dict[str, float],
        best: float | None,
        validated_now: bool,
    ) -> None:
        state = trial.state_dict()
        if not self.is_chief:
            return
        meta = {
            "batches": counters.batches,
            "counters": {
                "records": counters.records,
                "batches": counters.batches,
                "epochs": counters.epochs,
                "batch_in_epoch": counters.batch_in_epoch,
            },
            "steps": counters.steps(self.experiment.aggregation_frequency),
            "validation": validation,
            "best_metric": best,
            "rng": _rng_state(),
        }
        metric = validation.get(self.experiment.searcher.metric) if validated_now else None
        with _writing(str(store.root)):
            store.save(meta, state, metric, self.experiment.searcher.smaller_is_better)


def _requeued() -> bool:
    """Inside a Slurm job that was requeued: always continue from the checkpoint."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss]}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [name, keys.tolist(), pos, has_gauss, cached]
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    numpy = sys.modules.get("numpy")
    if numpy is not None and "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        numpy.random.set_state(
            (name, numpy.array(keys, dtype=numpy.uint32), pos, has_gauss, cached)
        )


def _truncate_metrics(path: Path, batches: int) -> None:
    """Drop reports written after the checkpoint we resume from: they will be redone."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the crash
        if record.get("batches", 0) <= batches:
            kept.append(line)
    write_atomic(path, ("\n".join(kept) + "\n" if kept else "").encode())


def _saved_counters(path: Path, meta: Mapping[str, Any]) -> Counters:
    """A checkpoint's exact counters, or a one-line error naming its ``state.json``."""
    saved = meta.get("counters")
    names = {spec.name for spec in fields(Counters)}
    if (
        isinstance(saved, dict)
        and set(saved) == names
        and all(type(v) is int and v >= 0 for v in saved.values())
        and saved["batches"] == meta.get("batches")
    ):
        return Counters(**saved)
    raise CorruptCheckpoint(
        path / "state.json",
        f"counters {saved!r} are not the exact counters of a run",
        f"delete {path} to resume from the checkpoint before it, or start over in a new run "
        "directory",
    )
