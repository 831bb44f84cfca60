"""The one training loop of a run: what :meth:`Run.fit` and :meth:`Run.batches` both drive.

A :class:`Session` holds a run's exact counters, its :class:`Schedule`, the report window and
the files it writes. Whoever trains (``fit``'s tight loop over a :class:`Trial`, or the
generator a user's own loop iterates) tells it how far training got (:meth:`Session.count`),
asks what is due there (:meth:`Session.decide`) and hands it the reports, validations and
checkpoint states; the session turns them into log lines, ``metrics.jsonl`` records,
checkpoints and ``result.json``. Lengths, periods, counters, lines and files therefore mean
the same whichever style a trial is written in.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from itertools import islice
from pathlib import Path
from typing import Any

from detflow._core.artifacts import (
    METRICS_FILE,
    Refusal,
    RunEnd,
    TrialResult,
    read_metrics_file,
)
from detflow._core.errors import ConfigError, CorruptCheckpoint, TrialError
from detflow._core.experiment import Experiment
from detflow._core.files import write_atomic
from detflow._core.text import number_text
from detflow._core.tracking import Tracking
from detflow._core.units import Length, Unit
from detflow._harness import preemption
from detflow._harness.checkpoint import CheckpointStore
from detflow._harness.collective import Collective
from detflow._harness.metrics import (
    Counters,
    MetricsFile,
    Window,
    format_line,
    mean_metrics,
    where_text,
)
from detflow._harness.progress import Progress, make_progress
from detflow._harness.schedule import Decision, Plan, Schedule
from detflow._harness.tensorboard import ScalarWriter, open_writer
from detflow._harness.tracking import Tracker, open_trackers

__all__ = [
    "VALIDATION_PREFIX",
    "FitResult",
    "Restored",
    "Session",
    "failure_batch",
    "load_checkpoint",
]

log = logging.getLogger("detflow")

#: Put before every validation metric's name (``loss`` -> ``validation_loss``), unless the
#: name starts with it already; ``searcher.metric`` names a metric with it.
VALIDATION_PREFIX = "validation_"

#: The decision at a batch where nothing is due.
_NOTHING = Decision(report=False, validate=False, checkpoint=False, stop=False, at_target=False)


@dataclass
class _Position:
    """Where this process's latest run is in its training: the counters of its session, and
    the batch a failure named (``fit`` knows the batch being trained, its counters do not)."""

    counters: Counters | None = None
    failed_at: int | None = None


_POSITION = _Position()


def failure_batch() -> int | None:
    """The batch count at which this process's latest run was when its code raised: the batch
    being trained when ``fit``'s ``train_batch`` (or the data) raised, else the batches the
    run had counted (a user's loop counts each batch as it hands it out); ``None`` when no run
    had begun training in this process. The worker reports it, so that the sweep driver can
    tell an error raised twice at the same batch (not retried) from one that was not.
    """
    if _POSITION.failed_at is not None:
        return _POSITION.failed_at
    return None if _POSITION.counters is None else _POSITION.counters.batches


@dataclass(frozen=True)
class FitResult:
    """How a run's training ended."""

    status: RunEnd
    counters: Counters
    target_batches: int
    validation: dict[str, float] = field(default_factory=dict)
    best_metric: float | None = None


@dataclass
class Restored:
    """Where a run starts: the last checkpoint's counters, metrics, trial state and RNG, or
    a fresh start (``state`` is ``None``)."""

    counters: Counters = field(default_factory=Counters)
    validation: dict[str, float] = field(default_factory=dict)
    best: float | None = None
    state: dict[str, Any] | None = None
    rng: dict[str, Any] = field(default_factory=dict)
    #: the RNG as the checkpoint's epoch began (data iterated again each epoch)
    epoch_rng: dict[str, Any] | None = None


def write_error(exc: OSError, where: str = "") -> TrialError:
    """A one-line :class:`TrialError` for an ``OSError`` of the harness's own writes.

    >>> str(write_error(OSError(28, "No space left on device", "/runs/a/metrics.jsonl")))
    'cannot write /runs/a/metrics.jsonl: No space left on device; free space and rerun with
    resume=true to continue from the last checkpoint'
    """
    name = exc.filename if exc.filename is not None else where or "the run directory"
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return TrialError(
        f"cannot write {name}: {exc.strerror or exc}; "
        f"{'free space and ' if full else ''}rerun with resume=true to continue from the last "
        "checkpoint"
    )


@contextmanager
def _writing(where: str = "") -> Iterator[None]:
    """Turn an ``OSError`` of the harness's own writes into a one-line :class:`TrialError`."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, where) from exc


def load_checkpoint(
    store: CheckpointStore, experiment: Experiment, run_dir: Path, *, is_chief: bool, resume: bool
) -> Restored:
    """The run's start: its last checkpoint when there is one (``resume`` must then be true),
    else a fresh start. Reports past the checkpoint (all, without one) are dropped from
    ``metrics.jsonl``: they will be made again."""
    loaded = store.load()
    if loaded is not None and not resume:
        raise ConfigError(
            "resume",
            False,
            f"true to continue from the checkpoint in {store.root}, or a new run directory",
        )
    restored = Restored()
    if loaded is not None:
        meta = loaded.meta
        restored = Restored(
            counters=_saved_counters(loaded.path, meta),
            validation=dict(meta.get("validation") or {}),
            best=meta.get("best_metric"),
            state=loaded.trial_state,
            rng=dict(meta.get("rng") or {}),
            epoch_rng=meta.get("epoch_rng"),
        )
    if is_chief:  # a fresh start keeps nothing (an initial validation is made again)
        kept_up_to = restored.counters.batches if loaded is not None else -1
        with _writing():
            _truncate_metrics(run_dir / METRICS_FILE, kept_up_to)
    if loaded is not None and is_chief:
        c = restored.counters
        log.info(
            "resumed from %s: %d batches, %d records, %d steps, %d epochs",
            loaded.path,
            c.batches,
            c.records,
            c.steps(experiment.aggregation_frequency),
            c.epochs,
        )
    return restored


class Session:
    """One run's training in progress: counters, schedule, report window and files.

    Parameters
    ----------
    experiment, run_dir, max_length:
        The run's.
    plan:
        Its lengths in batches (see :meth:`Run.plan`).
    restored:
        Where it starts (:func:`load_checkpoint`).
    store:
        Its checkpoints (:class:`CheckpointStore`, with what it keeps).
    is_chief:
        Whether this process writes files and log lines (rank 0).
    collective:
        The ranks of a multi-slot trial, or ``None``.
    stop_now:
        Asked at every optimizer-step boundary: stop here? (The same answer on every rank.)
    rewind_epochs:
        Whether each epoch's data is drawn with the RNG (the same iterable, e.g. a shuffling
        ``DataLoader``): the RNG at each epoch's start is then kept in checkpoints, and a
        resume inside an epoch draws the epoch's batches with it again.
    """

    def __init__(
        self,
        experiment: Experiment,
        run_dir: Path,
        max_length: Length,
        plan: Plan,
        restored: Restored,
        *,
        store: CheckpointStore,
        is_chief: bool,
        collective: Collective | None,
        stop_now: Callable[[], bool],
        rewind_epochs: bool = False,
    ) -> None:
        self.experiment = experiment
        self.run_dir = run_dir
        self.max_length = max_length
        self.plan = plan
        self.schedule = Schedule(plan, experiment.aggregation_frequency)
        self.restored = restored
        self.counters = restored.counters
        self.validation = restored.validation
        self.best = restored.best
        self.is_chief = is_chief
        self.collective = collective
        self.stop_now = stop_now
        self.rewind_epochs = rewind_epochs
        self.store = store
        # what the current report window holds
        self.rows: list[Mapping[str, Any]] = []
        self.sizes: list[int] = []
        self.window_records = 0  # this rank's
        self.window_batches = 0
        self.window_start = time.perf_counter()
        self.touched = self.window_start  # the last moment training handed something over
        self.batch_records = 0  # records of the batch in a user's loop now
        # what happened at which batch count
        self.decision = _NOTHING
        self.validated_at: int | None = None
        self.checkpointed_at: int | None = None
        self.stopped = False
        if restored.state is not None and restored.counters.batches >= plan.target:
            # the checkpoint is the end of this length: validated and saved there
            self.validated_at = self.checkpointed_at = restored.counters.batches
        self._decided_at = restored.counters.batches
        self._synced_at = restored.counters.batches
        self._pending_records = 0  # this rank's records not yet in counters.records
        self._epoch_rng: dict[str, Any] | None = restored.epoch_rng
        self._stop_noted = False
        self._metrics: MetricsFile | None = None
        self._tensorboard: ScalarWriter | None = None
        self._trackers: list[Tracker] = []  # tracking's others (mlflow), the chief's
        self._bar: Progress | None = None
        self._closed = False
        _POSITION.counters, _POSITION.failed_at = self.counters, None

    # -- start and end ----------------------------------------------------------------------
    def start(self) -> None:
        """Set the checkpoint's RNG (after the trial's state was loaded) and open the files."""
        _set_rng_state(self.restored.rng)
        if self.is_chief:
            with _writing():
                self._metrics = MetricsFile(self.run_dir / METRICS_FILE)
                if Tracking.TENSORBOARD in self.experiment.tracking:
                    self._tensorboard = open_writer(
                        self.run_dir, start_batches=self.counters.batches
                    )
            self._trackers = open_trackers(self.experiment, self.run_dir)

    def open_bar(self) -> None:
        """Show the progress bar (the chief's, on a terminal) as training begins."""
        if self.is_chief and self._bar is None and not self._closed:
            self._bar = make_progress(self.plan.target, self.counters.batches)

    def close_bar(self) -> None:
        """Take the progress bar off the terminal (the log stays)."""
        bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()

    def close(self, *, failing: bool) -> None:
        """Close what :meth:`start` opened; while failing, a second error would hide the first."""
        if self._closed:
            return
        self._closed = True
        self.close_bar()
        if self._metrics is not None:
            self._metrics.close()
        for tracker in self._trackers:
            tracker.close(failing=failing)
        writer, self._tensorboard = self._tensorboard, None
        if writer is not None:
            try:
                with _writing(writer.path):
                    writer.close()
            except TrialError:
                if not failing:
                    raise

    def finish(self, status: RunEnd) -> FitResult:
        """Close the files, write ``result.json`` and say in one line how the run ended."""
        self._sync()
        self.close(failing=False)
        result = FitResult(status, self.counters, self.plan.target, self.validation, self.best)
        if self.is_chief:
            trial_result = self._trial_result(status)
            with _writing():
                trial_result.write(self.run_dir)
            for tracker in self._trackers:
                tracker.finish(trial_result)
            log.info(self._summary(trial_result))
        return result

    def refuse(self, error: ConfigError) -> None:
        """End the run at once on a config value training showed wrong: ``result.json``
        says so (a sweep then starts no more trials), and ``error`` is raised."""
        self.close(failing=True)
        if self.is_chief:
            refusal = Refusal(error.key, str(error.value), error.expected)
            refused = self._trial_result(RunEnd.REFUSED, refusal)
            with _writing():
                refused.write(self.run_dir)
            for tracker in self._trackers:
                tracker.finish(refused)
        raise error

    def note_failure(self, batch: int) -> None:
        """The trial's code raised while training ``batch`` (see :func:`failure_batch`)."""
        if _POSITION.counters is self.counters:
            _POSITION.failed_at = batch

    def stop_here(self) -> None:
        """The run stops on request at this step boundary, its checkpoint saved."""
        if self.is_chief:
            log.info("stopped at batch %d on request; checkpoint saved", self.counters.batches)
        preemption.note_stopped()
        self.stopped = True

    def note_unsaved_stop(self) -> None:
        """A stop was asked for and the loop did not checkpoint where it could stop: say so
        once; training goes on to the next step boundary, where it is asked again."""
        if self._stop_noted or not self.is_chief:
            return
        self._stop_noted = True
        log.warning(
            "a stop was requested at batch %d, but the loop did not call run.checkpoint(state) "
            "where run.should_checkpoint was true: training goes on and stops at the next "
            "checkpoint",
            self.counters.batches,
        )

    # -- training ---------------------------------------------------------------------------
    def start_epoch(self, data: Callable[[int], Iterable[Any]]) -> tuple[Iterator[Any], int | None]:
        """The current epoch's batches, without those trained before a resume, and the batch
        count at which the epoch ends (when its length is known)."""
        counters = self.counters
        skip = counters.batch_in_epoch
        rewind = self.rewind_epochs
        now = _rng_state() if rewind else None
        if rewind and skip and self._epoch_rng is not None:
            _set_rng_state(self._epoch_rng)  # draw this epoch's order as it was drawn
        elif rewind and not skip:
            self._epoch_rng = now
        batches = iter(data(counters.epochs))
        if skip:
            skipped = sum(1 for _ in islice(batches, skip))
            if skipped < skip:
                raise TrialError(
                    f"the training data of epoch {counters.epochs} has {skipped} batches, fewer "
                    f"than the {skip} the checkpoint trained of it: it changed since"
                )
        if rewind and skip and now is not None:
            _set_rng_state(now)
        plan = self.plan
        end = counters.batches - skip + plan.epoch_length if plan.epoch_length else None
        return batches, end

    def count(self, batches: int, records: int, *, exhausted: bool, epoch_end: int | None) -> bool:
        """Training reached ``batches`` with ``records`` more (this rank's); whether that ends
        the epoch (its data ran out, or its known length was reached)."""
        counters = self.counters
        new = batches - counters.batches
        counters.batches = batches
        counters.batch_in_epoch += new
        self.window_batches += new
        self._pending_records += records
        if exhausted or (epoch_end is not None and batches >= epoch_end):
            counters.epochs += 1
            counters.batch_in_epoch = 0
            return True
        return False

    def decide(self, stop: bool) -> Decision:
        """What is due at the batch count reached (nothing twice at the same count)."""
        batches = self.counters.batches
        if batches == self._decided_at and not stop:
            self.decision = _NOTHING
            return _NOTHING
        self._decided_at = batches
        self._sync()
        self.decision = self.schedule.decide(batches, stop_requested=stop)
        if self._bar is not None:  # before any line of this batch: the bar they redraw is current
            self._bar.update(batches)
        return self.decision

    def add_training_metrics(self, metrics: Mapping[str, Any], records: int) -> None:
        """One batch's training metrics, weighted by its ``records``; a ``loss`` that is
        not a finite number fails the run at once."""
        if not isinstance(metrics, Mapping):
            raise TrialError(f"training metrics are a mapping of names to numbers, not {metrics!r}")
        if "loss" in metrics:
            try:
                loss = float(metrics["loss"])
            except (TypeError, ValueError):
                raise TrialError(f"the training 'loss' must be a number, got {metrics!r}") from None
            if not math.isfinite(loss):
                raise TrialError(f"loss is {loss} at batch {self.counters.batches}")
        self.rows.append(metrics)
        self.sizes.append(records)

    def report_training(self) -> None:
        """Log and record the training since the last report, if any."""
        if not self.window_batches:
            return
        self._sync()
        now = time.perf_counter()
        window = self._global_window(
            Window(
                self.window_records,
                self.window_batches,
                now - self.window_start,
                mean_metrics(self.rows, self.sizes),
            )
        )
        self._report("train", "trained", window)
        self.rows, self.sizes = [], []
        self.window_records = self.window_batches = 0
        self.window_start = self.touched = time.perf_counter()

    @property
    def initial_validation_due(self) -> bool:
        """Whether ``perform_initial_validation`` asks for a validation now: before the first
        batch of a fresh start (a resumed run made it when it started)."""
        return (
            self.experiment.perform_initial_validation
            and self.restored.state is None
            and self.counters.batches == 0
            and self.validated_at is None
        )

    def record_validation(self, window: Window, *, initial: bool = False) -> None:
        """Log and record a validation (its metrics named with :data:`VALIDATION_PREFIX`),
        keep the best ``searcher.metric``; a validation without that metric refuses the run
        (:meth:`refuse`). ``initial``: ``perform_initial_validation``'s, before the first
        batch, reported at batch 0; the untrained model's metric is no candidate for the
        best (no checkpoint holds it)."""
        self._sync()
        window = self._global_window(window)
        self._report("validation", "validated", window, initial=initial)
        self.validation = window.metrics
        self.validated_at = self.counters.batches
        self._handed_over()
        settings = self.experiment.searcher
        metric = window.metrics.get(settings.metric)
        if metric is None:
            reported = ", ".join(sorted(window.metrics)) or "none"
            self.refuse(
                ConfigError(
                    "searcher.metric",
                    settings.metric,
                    f"one of the metrics the trial reports: {reported}",
                )
            )
            return
        if not initial and _better(metric, self.best, settings.smaller_is_better):
            self.best = metric

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Save ``state`` with the exact counters, the metrics and the RNG."""
        self._sync()
        counters = self.counters
        self.checkpointed_at = counters.batches
        if not self.is_chief:
            self._handed_over()
            return
        meta: dict[str, Any] = {
            "batches": counters.batches,
            "counters": {spec.name: getattr(counters, spec.name) for spec in fields(Counters)},
            "steps": counters.steps(self.experiment.aggregation_frequency),
            "validation": self.validation,
            "best_metric": self.best,
            "rng": _rng_state(),
        }
        if self._epoch_rng is not None:
            meta["epoch_rng"] = self._epoch_rng
        settings = self.experiment.searcher
        validated_now = self.validated_at == counters.batches
        metric = self.validation.get(settings.metric) if validated_now else None
        with _writing(str(self.store.root)):
            self.store.save(meta, state, metric, settings.smaller_is_better)
        self._handed_over()

    def loop(
        self, data: Callable[[int], Iterable[Any]], size_of: Callable[[Any], int]
    ) -> Iterator[Any]:
        """The batches of a user's own loop, epoch after epoch, to the target or a stop.

        Each batch is counted as it is handed out; at a batch where something is due the
        decision is made before the loop's body runs (``run.should_validate`` ...), and what
        the body left undone of it is seen to when it asks for the next batch.
        """
        counters, plan, schedule = self.counters, self.plan, self.schedule
        a, stop_now, count = schedule.aggregation_frequency, self.stop_now, self.count
        try:
            self.open_bar()
            while counters.batches < plan.target:
                batches, epoch_end = self.start_epoch(data)
                stop_at = schedule.next_event(counters.batches, epoch_end)
                started = b = counters.batches
                for batch in batches:
                    b += 1
                    try:
                        self.batch_records = size = size_of(batch)
                    except (TypeError, AttributeError, IndexError) as exc:
                        raise TrialError(
                            f"cannot count the records of a batch of type {type(batch).__name__} "
                            f"({exc}): give run.batches(data, batch_size=...) a function that can"
                        ) from None
                    stop = b % a == 0 and stop_now()
                    if not stop and b < stop_at:
                        count(b, size, exhausted=False, epoch_end=None)
                        self.decision = _NOTHING
                        yield batch
                        continue
                    epoch_over = count(b, size, exhausted=False, epoch_end=epoch_end)
                    decision = self.decide(stop)
                    self.touched = time.perf_counter()
                    yield batch
                    if decision.report:
                        self.report_training()
                    if decision.stop:
                        if self.checkpointed_at == b:
                            self.stop_here()
                            return
                        self.note_unsaved_stop()
                    if decision.at_target:
                        return
                    if epoch_over:
                        break
                    stop_at = schedule.next_event(b, epoch_end)
                else:
                    if b == started and counters.batch_in_epoch == 0:
                        raise TrialError(
                            f"the training data yielded no batches in epoch {counters.epochs}: "
                            "give run.batches() data it can iterate again each epoch (a list, "
                            "a DataLoader) or a function of the epoch"
                        )
                    count(b, 0, exhausted=True, epoch_end=epoch_end)
        finally:
            self.close_bar()

    # -- internals --------------------------------------------------------------------------
    def _handed_over(self) -> None:
        """A validation or checkpoint ended: the next window's time starts here, unless it
        already holds training (a loop that validates off its schedule)."""
        self.touched = now = time.perf_counter()
        if not self.window_batches:
            self.window_start = now

    def _sync(self) -> None:
        """Bring ``counters.records`` up to date over every rank (at the same batch counts on
        every rank, so the collective call matches)."""
        if self.counters.batches == self._synced_at:
            return
        self._synced_at = self.counters.batches
        records, self._pending_records = self._pending_records, 0
        self.window_records += records
        self.counters.records += self._global_sum(records)

    def _global_sum(self, value: int) -> int:
        if self.collective is None:
            return value
        return round(self.collective.sum([float(value)])[0])

    def _global_window(self, window: Window) -> Window:
        """A report over every rank: records summed, metrics averaged weighted by records
        (equally over ranks when records were not counted).

        Batches stay this rank's count: one global batch is one batch on every rank.
        """
        if self.collective is None:
            return window
        keys = sorted(window.metrics)
        weight = 1.0 if window.records is None else float(window.records)
        local = [window.metrics[k] * weight for k in keys] + [weight]
        total = self.collective.sum(local)
        weights = total[-1]
        metrics = {k: (total[i] / weights if weights else math.nan) for i, k in enumerate(keys)}
        records = None if window.records is None else round(weights)
        return Window(records, window.batches, window.seconds, metrics)

    def _report(self, kind: str, verb: str, window: Window, *, initial: bool = False) -> None:
        if not self.is_chief:
            return
        counters = self.counters
        if log.isEnabledFor(logging.INFO):
            where = (
                "batch 0, before training"
                if initial
                else where_text(counters, self.plan.epoch_length, self.plan.target)
            )
            log.info(format_line(verb, window, where))
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
        assert self._metrics is not None  # the chief always has one
        try:
            self._metrics.write(record)
            if self._tensorboard is not None:
                self._tensorboard.write(kind, window.metrics, counters.batches)
        except OSError as exc:
            raise write_error(exc, self._tensorboard.path if self._tensorboard else "") from exc
        for tracker in self._trackers:
            tracker.report(kind, window.metrics, counters.batches)

    def _trial_result(self, status: RunEnd, refused: Refusal | None = None) -> TrialResult:
        """``result.json``: how the run ended, read by the sweeper and ``detflow summary``."""
        exp, counters, plan = self.experiment, self.counters, self.plan
        unit = self.max_length.unit
        return TrialResult(
            status=status,
            records=counters.records,
            batches=counters.batches,
            steps=counters.steps(exp.aggregation_frequency),
            epochs=counters.epochs,
            target_batches=plan.target,
            batches_per_epoch=plan.epoch_length,
            global_batch_size=exp.global_batch_size,
            aggregation_frequency=exp.aggregation_frequency,
            length=exp.batch_math(plan.epoch_length).in_unit(counters.batches, unit),
            unit=unit.value,
            metric=self.validation.get(exp.searcher.metric),
            best_metric=self.best,
            validation=self.validation,
            refused=refused,
        )

    def _summary(self, result: TrialResult) -> str:
        """The run's last line: how it ended, how much it trained, its metric, its files."""
        metric = self.experiment.searcher.metric
        trained = _length_text(result, self.counters.records)
        if result.status is RunEnd.STOPPED:
            how = f"stopped on request after {trained} of {result.target_batches} batches"
            then = "; resume=true continues it from its checkpoint"
        else:
            how, then = f"completed {trained}", ""
        shown = f"no {metric}"
        if result.metric is not None:
            shown = f"{metric} {number_text(result.metric)}"
        if result.best_metric is not None:
            shown += f" (best {number_text(result.best_metric)})"
        return f"{how}: {shown}; run directory {self.run_dir.resolve()}{then}"


def _length_text(result: TrialResult, records: int) -> str:
    """``225 batches (5 epochs)``: whole batches, the length in the user's unit beside them.

    >>> from fractions import Fraction
    >>> r = TrialResult(RunEnd.COMPLETED, records=600, batches=19, steps=19, epochs=0,
    ...                 target_batches=19, batches_per_epoch=None, global_batch_size=32,
    ...                 aggregation_frequency=1, length=Fraction(608), unit="records",
    ...                 metric=None, best_metric=None)
    >>> _length_text(r, 600)
    '19 batches (600 records)'
    """
    unit = Unit(result.unit)
    if unit is Unit.BATCHES:
        return f"{result.batches} batches"
    amount = records if unit is Unit.RECORDS else result.length
    return f"{result.batches} batches ({number_text(amount)} {unit.value})"


def _better(metric: float, best: float | None, smaller_is_better: bool) -> bool:
    """Whether ``metric`` beats the best so far (none: it does)."""
    return best is None or (metric < best if smaller_is_better else metric > best)


def _rng_state() -> dict[str, Any]:
    """Python's RNG, and NumPy's and torch's (CPU) when the trial's code imported them."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss]}
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        name, keys, pos, has_gauss, cached = numpy.random.get_state()
        state["numpy"] = [name, keys.tolist(), pos, has_gauss, cached]
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        state["torch"] = torch.get_rng_state().tolist()
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
    torch = sys.modules.get("torch")
    if torch is not None and "torch" in state:
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _truncate_metrics(path: Path, batches: int) -> None:
    """Drop reports written after the checkpoint we resume from: they will be redone."""
    if not path.exists():
        return
    records, _ = read_metrics_file(path)  # a torn last line is dropped; other damage refused
    lines = path.read_bytes().split(b"\n")[: len(records)]  # one line per record, as written
    kept = [line for line, r in zip(lines, records, strict=True) if _batches_of(r) <= batches]
    write_atomic(path, b"".join(line + b"\n" for line in kept))


def _batches_of(record: Mapping[str, Any]) -> int:
    value = record.get("batches", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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
