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

from detflow._core.artifacts import CHECKPOINTS_DIR, METRICS_FILE, RunEnd, TrialResult
from detflow._core.errors import ConfigError, CorruptCheckpoint, TrialError
from detflow._core.experiment import Experiment
from detflow._core.files import write_atomic
from detflow._core.units import Length
from detflow._harness import preemption
from detflow._harness.checkpoint import CheckpointStore
from detflow._harness.collective import Collective
from detflow._harness.metrics import (
    Counters,
    MetricsFile,
    Window,
    format_line,
    format_metrics,
    mean_metrics,
)
from detflow._harness.progress import Progress, make_progress
from detflow._harness.schedule import Decision, Plan, Schedule
from detflow._harness.tensorboard import ScalarWriter, open_writer
from detflow._harness.trial import Trial

__all__ = ["FitResult", "Run", "TrialError"]

log = logging.getLogger("detflow")


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

    status: RunEnd
    counters: Counters
    target_batches: int
    validation: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None


@dataclass
class _Progress:
    """What a run has done so far: exact counters, the last validation, the best metric, and
    the training reports not yet logged (one report window)."""

    counters: Counters
    validation: dict[str, float] = field(default_factory=dict)
    best: float | None = None
    rows: list[Mapping[str, Any]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    window_start: float = field(default_factory=time.perf_counter)


@dataclass
class _Outputs:
    """What the chief writes to while training (other ranks write nothing)."""

    store: CheckpointStore
    metrics: MetricsFile | None
    bar: Progress | None


class Run:
    """A trial's run: its validated experiment, hyperparameters and run directory.

    Made by :func:`detflow.init`; call :meth:`fit` with your :class:`Trial`.
    """

    def __init__(
        self,
        experiment: Experiment,
        run_dir: Path,
        *,
        max_length: Length | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.experiment = experiment
        self.run_dir = run_dir
        self.rank = rank
        self.world_size = world_size
        self.max_length = max_length or experiment.searcher.max_length
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
    def plan(self, trial: Trial) -> Plan:
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
        return Plan(
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
        preemption.register(self)
        store = CheckpointStore(self.run_dir / CHECKPOINTS_DIR)
        progress = self._restore(trial, store)
        outputs = _Outputs(store, None, None)
        if self.is_chief:
            with _writing():
                outputs.metrics = MetricsFile(self.run_dir / METRICS_FILE)
                self._tensorboard = open_writer(
                    self.run_dir, start_batches=progress.counters.batches
                )
            outputs.bar = make_progress(plan.target, progress.counters.batches)
        try:
            result = self._train(
                trial, Schedule(plan, self.aggregation_frequency), progress, outputs
            )
        except BaseException:
            self._close(outputs, failing=True)
            raise
        self._close(outputs, failing=False)
        if self.is_chief:
            with _writing():
                self._result(result, plan).write(self.run_dir)
        return result

    def _restore(self, trial: Trial, store: CheckpointStore) -> _Progress:
        """The progress to continue from: the last checkpoint's (trial state and RNG loaded),
        or a fresh start; reports past it are dropped from ``metrics.jsonl``."""
        exp = self.experiment
        progress = _Progress(Counters())
        loaded = store.load()
        if loaded is not None and not (exp.resume or _requeued()):
            raise ConfigError(
                "resume",
                False,
                f"true to continue from the checkpoint in {store.root}, or a new run directory",
            )
        if loaded is not None:
            meta = loaded.meta
            progress.counters = _saved_counters(loaded.path, meta)
            progress.validation = dict(meta.get("validation") or {})
            progress.best = meta.get("best_metric")
            trial.load_state_dict(loaded.trial_state)
            _set_rng_state(meta.get("rng") or {})
        if self.is_chief:  # reports past the checkpoint (all, without one) will be redone
            with _writing():
                _truncate_metrics(self.run_dir / METRICS_FILE, progress.counters.batches)
        if loaded is not None and self.is_chief:
            c = progress.counters
            log.info(
                "resumed from %s: %d batches, %d records, %d steps, %d epochs",
                loaded.path,
                c.batches,
                c.records,
                c.steps(exp.aggregation_frequency),
                c.epochs,
            )
        return progress

    def _close(self, outputs: _Outputs, *, failing: bool) -> None:
        """Close what :meth:`fit` opened; while failing, a second error would hide the first."""
        if outputs.bar is not None:
            outputs.bar.close()
        if outputs.metrics is not None:
            outputs.metrics.close()
        writer, self._tensorboard = self._tensorboard, None
        if writer is not None:
            try:
                with _writing(writer.path):
                    writer.close()
            except TrialError:
                if not failing:
                    raise

    def _result(self, result: FitResult, plan: Plan) -> TrialResult:
        """``result.json``: how the run ended, read by the sweeper and ``detflow summary``."""
        exp = self.experiment
        unit = self.max_length.unit
        length = exp.batch_math(plan.epoch_length).in_unit(result.counters.batches, unit)
        return TrialResult(
            status=result.status,
            records=result.counters.records,
            batches=result.counters.batches,
            steps=result.counters.steps(exp.aggregation_frequency),
            epochs=result.counters.epochs,
            target_batches=result.target_batches,
            batches_per_epoch=plan.epoch_length,
            global_batch_size=exp.global_batch_size,
            aggregation_frequency=exp.aggregation_frequency,
            length=length,
            unit=unit.value,
            metric=result.validation.get(exp.searcher.metric),
            best_metric=result.best_metric,
            validation=result.validation,
        )

    def _train(
        self, trial: Trial, schedule: Schedule, progress: _Progress, outputs: _Outputs
    ) -> FitResult:
        """Epochs of stretches of batches, each up to the next event of ``schedule``."""
        plan = schedule.plan
        counters = progress.counters
        while counters.batches < plan.target:
            batches_in = iter(trial.training_data(counters.epochs))
            if counters.batch_in_epoch:
                batches_in = islice(batches_in, counters.batch_in_epoch, None)
            epoch_end = (
                counters.batches - counters.batch_in_epoch + plan.epoch_length
                if plan.epoch_length
                else None
            )
            epoch_over = False
            while not epoch_over:
                stop_at = schedule.next_event(counters.batches, epoch_end)
                epoch_over, stop = self._train_stretch(
                    trial, batches_in, stop_at, epoch_end, schedule, progress
                )
                decision = schedule.decide(counters.batches, stop_requested=stop)
                self._act(trial, decision, progress, outputs)
                if outputs.bar is not None:
                    outputs.bar.update(counters.batches)
                if decision.stop:
                    log.info("stopped at batch %d on request; checkpoint saved", counters.batches)
                    preemption.note_stopped()
                    return self._fit_result(RunEnd.STOPPED, progress, plan)
                if decision.at_target:
                    break
        return self._fit_result(RunEnd.COMPLETED, progress, plan)

    @staticmethod
    def _fit_result(status: RunEnd, progress: _Progress, plan: Plan) -> FitResult:
        return FitResult(status, progress.counters, plan.target, progress.validation, progress.best)

    def _train_stretch(
        self,
        trial: Trial,
        batches_in: Iterator[Any],
        stop_at: int,
        epoch_end: int | None,
        schedule: Schedule,
        progress: _Progress,
    ) -> tuple[bool, bool]:
        """Train batches until ``stop_at``, a requested stop or the end of the epoch's data;
        update the counters. Returns (the epoch is over, a stop was requested)."""
        counters = progress.counters
        # The hot path: locals only, one modulo and one comparison per batch.
        train_batch, size_of, isfinite = trial.train_batch, trial.batch_size, math.isfinite
        append_row, append_size = progress.rows.append, progress.sizes.append
        a, stop_now = schedule.aggregation_frequency, self._stop_now
        started = b = counters.batches
        stop = epoch_over = False
        for batch in batches_in:
            metrics = train_batch(batch)
            try:
                loss = float(metrics["loss"])
            except (KeyError, TypeError, ValueError):
                raise TrialError(
                    f"train_batch must return a mapping with a numeric 'loss', got {metrics!r}"
                ) from None
            if not isfinite(loss):
                raise TrialError(f"loss is {loss} at batch {b + 1}")
            append_row(metrics)
            append_size(size_of(batch))
            b += 1
            if b % a == 0 and stop_now():  # a stop is asked for at every step
                stop = True
                break
            if b >= stop_at:
                break
        else:
            epoch_over = True
            if b == started and counters.batch_in_epoch == 0:
                raise TrialError(f"training_data({counters.epochs}) yielded no batches")
        sizes = progress.sizes
        new_records = sum(sizes[len(sizes) - (b - started) :]) if b > started else 0
        counters.records += self._global_sum(new_records)
        counters.batch_in_epoch += b - started
        counters.batches = b
        if epoch_end is not None and b >= epoch_end:
            epoch_over = True
        if epoch_over:
            counters.epochs += 1
            counters.batch_in_epoch = 0
        return epoch_over, stop

    def _act(
        self, trial: Trial, decision: Decision, progress: _Progress, outputs: _Outputs
    ) -> None:
        """Report, validate and checkpoint as ``decision`` says."""
        exp = self.experiment
        counters = progress.counters
        if decision.report and progress.rows:
            now = time.perf_counter()
            window = self._global_window(
                Window(
                    sum(progress.sizes),
                    len(progress.rows),
                    now - progress.window_start,
                    mean_metrics(progress.rows, progress.sizes),
                )
            )
            self._report("train", "trained", window, counters, outputs.metrics)
            progress.rows, progress.sizes = [], []
            progress.window_start = time.perf_counter()
        if decision.validate:
            progress.validation = self._validate(trial, counters, outputs.metrics)
            metric = progress.validation.get(exp.searcher.metric)
            if metric is not None and _better(
                metric, progress.best, exp.searcher.smaller_is_better
            ):
                progress.best = metric
        if decision.checkpoint:
            self._checkpoint(trial, outputs.store, progress, decision.validate)

    def _stop_now(self) -> bool:
        """At a step boundary, on every rank: stop here? (All ranks agree.)"""
        if self.collective is None:
            return self._stop_requested
        return self.collective.any(self._stop_requested)

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
        self, trial: Trial, store: CheckpointStore, progress: _Progress, validated_now: bool
    ) -> None:
        counters, validation = progress.counters, progress.validation
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
            "best_metric": progress.best,
            "rng": _rng_state(),
        }
        metric = validation.get(self.experiment.searcher.metric) if validated_now else None
        with _writing(str(store.root)):
            store.save(meta, state, metric, self.experiment.searcher.smaller_is_better)


def _better(metric: float, best: float | None, smaller_is_better: bool) -> bool:
    """Whether ``metric`` beats the best so far (none: it does)."""
    return best is None or (metric < best if smaller_is_better else metric > best)


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
