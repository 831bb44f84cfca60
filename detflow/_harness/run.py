"""``Run``: one trial's training for an exact length, with truthful metrics and checkpoints.

Two ways to train, one machinery (:class:`~detflow._harness.session.Session`): give a
:class:`Trial` to :meth:`Run.fit`, or keep your own loop over :meth:`Run.batches`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from pathlib import Path
from typing import Any, TypeAlias

from detflow._core.artifacts import RunEnd
from detflow._core.errors import ConfigError, TrialError
from detflow._core.experiment import Experiment
from detflow._core.units import Length
from detflow._harness import preemption
from detflow._harness.checkpoint import CheckpointStore, checkpoint_root
from detflow._harness.collective import Collective
from detflow._harness.metrics import Window, mean_metrics
from detflow._harness.schedule import Plan
from detflow._harness.session import (
    VALIDATION_PREFIX,
    FitResult,
    Restored,
    Session,
    load_checkpoint,
)
from detflow._harness.trial import Trial, records_in

__all__ = ["FitResult", "Run", "TrialError"]

log = logging.getLogger("detflow")

#: What :meth:`Run.batches` iterates: data iterated again each epoch, or a function giving
#: each epoch's batches (``data(epoch)``).
Data: TypeAlias = Iterable[Any] | Callable[[int], Iterable[Any]]


class Run:
    """A trial's run: its validated experiment, hyperparameters and run directory.

    Made by :func:`detflow.init`. Train with :meth:`fit` and your :class:`Trial`, or in your
    own loop: :meth:`restore`, ``for batch in`` :meth:`batches`, :meth:`report_training`,
    :attr:`should_validate` / :meth:`report_validation`, :attr:`should_checkpoint` /
    :meth:`checkpoint`, then :meth:`finish`. Both keep the same lengths, periods, counters,
    log lines, checkpoints, resume and pre-emption.
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
        self._restored: Restored | None = None  # what restore() read
        self._read: Restored | None = None  # where the run starts, once read (_loaded)
        self._initial: Window | None = None  # perform_initial_validation's, before the loop
        self._initial_asked = time.perf_counter()  # when should_validate first said so
        self._loop: Session | None = None  # the loop over batches(), once started
        self._finished: FitResult | None = None  # how finish() ended it
        self._checkpoints: CheckpointStore | None = None  # see _store
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
        """Checkpoint at the next optimizer-step boundary and stop (:meth:`fit` returns, the
        loop over :meth:`batches` ends once :meth:`checkpoint` saved it)."""
        self._stop_requested = True

    # -- training with a Trial ----------------------------------------------------------------
    def plan(self, trial: Trial) -> Plan:
        """Convert the lengths to batches for this trial's data; log every rounding."""
        measure = self.experiment.records_per_epoch is None
        return self._plan(trial.epoch_length() if measure else None)

    def fit(self, trial: Trial) -> FitResult:
        """Train until the batches trained reach ``searcher.max_length``; validate and
        checkpoint on their periods and once at the end. Resumes from the run directory's
        last checkpoint when ``resume`` is true.
        """
        self._check_slots(
            f"1 for {type(trial).__name__}: only trials that join a process group "
            "(detflow.pytorch.TorchTrial) run on several slots"
        )
        plan = self.plan(trial)
        restored = self._load()
        if restored.state is not None:
            trial.load_state_dict(restored.state)
        session = self._open_session(plan, restored, rewind_epochs=False)
        try:
            if session.initial_validation_due:
                session.record_validation(_evaluate(trial), initial=True)
            self._train(trial, session)
        except BaseException:
            session.close(failing=True)
            raise
        return session.finish(RunEnd.STOPPED if session.stopped else RunEnd.COMPLETED)

    def _train(self, trial: Trial, session: Session) -> None:
        """Epochs of stretches of batches, each up to the next event of the schedule."""
        counters, schedule = session.counters, session.schedule
        session.open_bar()
        while counters.batches < session.plan.target:
            batches_in, epoch_end = session.start_epoch(trial.training_data)
            epoch_over = False
            while not epoch_over:
                stop_at = schedule.next_event(counters.batches, epoch_end)
                epoch_over, stop = self._train_stretch(
                    trial, batches_in, stop_at, epoch_end, session
                )
                decision = session.decide(stop)
                if decision.report:
                    session.report_training()
                if decision.validate:
                    session.record_validation(_evaluate(trial))
                if decision.checkpoint:
                    session.save_checkpoint(trial.state_dict())
                if decision.stop:
                    session.stop_here()
                    return
                if decision.at_target:
                    return

    def _train_stretch(
        self,
        trial: Trial,
        batches_in: Iterator[Any],
        stop_at: int,
        epoch_end: int | None,
        session: Session,
    ) -> tuple[bool, bool]:
        """Train batches until ``stop_at``, a requested stop or the end of the epoch's data;
        count them. Returns (the epoch is over, a stop was requested)."""
        counters = session.counters
        # The hot path: locals only, one modulo and one comparison per batch.
        train_batch, size_of, isfinite = trial.train_batch, trial.batch_size, math.isfinite
        append_row, append_size = session.rows.append, session.sizes.append
        a, stop_now = session.schedule.aggregation_frequency, session.stop_now
        started = b = counters.batches
        stop = exhausted = False
        try:  # free in Python 3.11 until something raises
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
                exhausted = True
                if b == started and counters.batch_in_epoch == 0:
                    raise TrialError(f"training_data({counters.epochs}) yielded no batches")
        except Exception:
            session.note_failure(b + 1)  # the batch being trained (or drawn) when it raised
            raise
        sizes = session.sizes
        records = sum(sizes[len(sizes) - (b - started) :]) if b > started else 0
        epoch_over = session.count(b, records, exhausted=exhausted, epoch_end=epoch_end)
        return epoch_over, stop

    # -- training in your own loop --------------------------------------------------------------
    def restore(self) -> dict[str, Any] | None:
        """The state given to the last :meth:`checkpoint` when the run continues from it
        (``resume=true``, an ASHA promotion, a requeued Slurm job), else ``None``.

        Call it before :meth:`batches`, which then skips what was trained and sets the RNG
        (Python's, NumPy's, torch's) to the checkpoint's.

        Examples
        --------
        >>> import tempfile, detflow
        >>> run = detflow.init({"hyperparameters": {"global_batch_size": 2}},
        ...                    run_dir=tempfile.mkdtemp())
        >>> run.restore() is None  # a fresh start
        True
        """
        if self._restored is None:
            self._restored = self._loaded()
        return self._restored.state

    def batches(
        self, data: Data, *, batch_size: Callable[[Any], int] | None = None
    ) -> Iterator[Any]:
        """The batches to train, epoch after epoch, until the batches trained reach
        ``searcher.max_length`` (or a requested stop, once :meth:`checkpoint` saved it).

        ``data`` is iterated again each epoch (a list, a ``DataLoader``: its epoch length is
        ``len(data)`` unless ``records_per_epoch`` is set), or is a function of the epoch
        giving its batches. Each batch is counted as it is handed out, its records by
        ``batch_size`` (default: its length, or its first element's for ``(inputs,
        targets)``). For an exact resume each epoch must give the same batches in the same
        order from the RNG at its start (which detflow saves with every checkpoint).

        Examples
        --------
        >>> import tempfile, detflow
        >>> run = detflow.init({"hyperparameters": {"global_batch_size": 2},
        ...                     "searcher": {"max_length": "3 batches"},
        ...                     "min_validation_period": "2 batches"}, run_dir=tempfile.mkdtemp())
        >>> state = run.restore() or {"seen": 0}
        >>> for batch in run.batches([[1, 2], [3, 4]]):
        ...     state["seen"] += len(batch)
        ...     run.report_training({"loss": 1.0 / state["seen"]})
        ...     if run.should_validate:
        ...         run.report_validation({"loss": 0.5})
        ...     if run.should_checkpoint:
        ...         run.checkpoint(state)
        >>> run.finish().counters.batches, state["seen"]
        (3, 6)
        """
        if self._loop is not None:
            raise TrialError("run.batches() is iterated once per run: keep one loop over it")
        self._check_slots(
            "1, or join the trial's process group before the loop "
            "(detflow.pytorch.init_distributed(run))"
        )
        epoch_data = data if callable(data) else (lambda epoch: data)
        restored = self._restored
        if restored is None:
            restored = self._loaded()
            if restored.state is not None:
                raise TrialError(
                    f"there is a checkpoint at batch {restored.counters.batches} to continue "
                    "from: call state = run.restore() before run.batches() and continue "
                    "from that state"
                )
        if self._initial_pending():
            raise TrialError(
                "perform_initial_validation is true: validate before the loop, where "
                "run.should_validate is true (if run.should_validate: "
                "run.report_validation(evaluate(state)), then for batch in run.batches(data))"
            )
        measure = self.experiment.records_per_epoch is None
        plan = self._plan(_epoch_length(epoch_data(0)) if measure else None)
        session = self._open_session(plan, restored, rewind_epochs=not callable(data))
        self._loop = session
        if self._initial is not None and session.initial_validation_due:
            try:
                session.record_validation(self._initial, initial=True)
            except BaseException:
                session.close(failing=True)
                raise
        size_of = batch_size or records_in
        return session.loop(epoch_data, size_of)

    def report_training(self, metrics: Mapping[str, Any]) -> None:
        """The metrics of the batch just trained (a ``loss`` must be a finite number); the
        harness averages them over each report, weighted by records."""
        session = self._looping("report_training")
        session.add_training_metrics(metrics, session.batch_records)
        if session.decision.report:
            session.report_training()

    @property
    def should_validate(self) -> bool:
        """Whether to validate now (:meth:`report_validation`): a validation period ended,
        or the target was reached; before the loop, ``perform_initial_validation`` on a fresh
        start (not on a resume: the run made it when it started)."""
        session = self._loop
        if session is None:
            due = self._initial_pending()
            if due:
                self._initial_asked = time.perf_counter()
            return due
        return session.decision.validate and session.validated_at != session.counters.batches

    @property
    def should_checkpoint(self) -> bool:
        """Whether to :meth:`checkpoint` now: a checkpoint period ended, the target was
        reached, or a stop was requested (the loop stops once the checkpoint is saved)."""
        session = self._loop
        return (
            session is not None
            and session.decision.checkpoint
            and session.checkpointed_at != session.counters.batches
        )

    def report_validation(self, metrics: Mapping[str, Any], *, records: int | None = None) -> None:
        """Validation metrics at the batch count reached, named with ``validation_`` (so
        ``searcher.metric: validation_loss`` is the ``loss`` given here). ``records``: how
        many records they cover, when counted (on several slots: each slot's own, so the
        means are weighted by them).

        Before the loop, with ``perform_initial_validation``, it reports the validation made
        before the first batch (where :attr:`should_validate` is true: a fresh start); the
        loop records it at batch 0.
        """
        if self._loop is None and self.experiment.perform_initial_validation:
            if not self._initial_pending():
                raise TrialError(
                    "run.report_validation() before the loop over run.batches(data) reports "
                    "perform_initial_validation's validation once, on a fresh start: call it "
                    "only where run.should_validate is true"
                )
            seconds = time.perf_counter() - self._initial_asked
            named = mean_metrics([metrics], [1], prefix=VALIDATION_PREFIX)
            self._initial = Window(records, None, seconds, named)
            return
        session = self._looping("report_validation")
        if session.decision.report:
            session.report_training()
        seconds = time.perf_counter() - session.touched
        named = mean_metrics([metrics], [1], prefix=VALIDATION_PREFIX)
        session.record_validation(Window(records, None, seconds, named))

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save ``state`` (JSON values, numpy arrays or, once torch is imported, tensors)
        with the exact counters: :meth:`restore` returns it when the run continues."""
        session = self._looping("checkpoint")
        batches, a = session.counters.batches, self.aggregation_frequency
        if batches % a:
            raise TrialError(
                f"run.checkpoint() at batch {batches} falls inside an optimizer step "
                f"(aggregation_frequency {a}): checkpoint where run.should_checkpoint is true"
            )
        if session.decision.report:
            session.report_training()
        session.save_checkpoint(state)

    def finish(self) -> FitResult:
        """End the loop's run: write ``result.json`` and say in one line how it ended.

        The loop must have reached the target with a validation and a checkpoint there
        (both due then), or stopped on request once its checkpoint was saved; else a
        one-line :class:`TrialError` says what is missing.
        """
        session = self._looping("finish")
        if self._finished is None:
            missing = _unfinished(session)
            if missing is not None:
                session.close(failing=True)
                raise TrialError(missing)
            self._finished = session.finish(RunEnd.STOPPED if session.stopped else RunEnd.COMPLETED)
        return self._finished

    # -- shared -------------------------------------------------------------------------------
    def _plan(self, data_length: int | None) -> Plan:
        """The lengths in batches, for data of ``data_length`` batches an epoch (when known
        and ``records_per_epoch`` is not set); log every rounding."""
        exp = self.experiment
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

    def _check_slots(self, expected: str) -> None:
        """Several slots need a process group (``self.collective``) to count over."""
        if self.world_size > 1 and self.collective is None:
            raise ConfigError("resources.slots_per_trial", self.world_size, expected)

    def _store(self) -> CheckpointStore:
        """The run's checkpoints (``checkpoint_storage``'s directory and what it keeps)."""
        if self._checkpoints is None:
            policy = self.experiment.checkpoint_storage
            root = checkpoint_root(
                self.run_dir, policy.storage_path, self.experiment.name, create=self.is_chief
            )
            latest, best = policy.while_training
            self._checkpoints = CheckpointStore(root, keep_latest=latest, keep_best=best)
        return self._checkpoints

    def _loaded(self) -> Restored:
        """Where the run starts (:meth:`_load`), read once."""
        if self._read is None:
            self._read = self._load()
        return self._read

    def _initial_pending(self) -> bool:
        """``perform_initial_validation`` still to report, before the loop: a fresh start."""
        return (
            self.experiment.perform_initial_validation
            and self._loop is None
            and self._initial is None
            and self._loaded().state is None
        )

    def _load(self) -> Restored:
        """Track this run for stop requests; read where it starts (its last checkpoint)."""
        preemption.register(self)
        resume = self.experiment.resume or _requeued()
        return load_checkpoint(
            self._store(), self.experiment, self.run_dir, is_chief=self.is_chief, resume=resume
        )

    def _open_session(self, plan: Plan, restored: Restored, *, rewind_epochs: bool) -> Session:
        session = Session(
            self.experiment,
            self.run_dir,
            self.max_length,
            plan,
            restored,
            store=self._store(),
            is_chief=self.is_chief,
            collective=self.collective,
            stop_now=self._stop_now,
            rewind_epochs=rewind_epochs,
        )
        session.start()
        return session

    def _looping(self, name: str) -> Session:
        """The loop's session; a one-line error when ``name`` is called outside one."""
        session = self._loop
        if session is None:
            raise TrialError(
                f"run.{name}() belongs to a loop over run.batches(data): start the loop first"
            )
        return session

    def _stop_now(self) -> bool:
        """At a step boundary, on every rank: stop here? (All ranks agree.)"""
        if self.collective is None:
            return self._stop_requested
        return self.collective.any(self._stop_requested)


def _evaluate(trial: Trial) -> Window:
    """A trial's validation: its own :meth:`Trial.evaluate`, or its batches averaged and
    counted."""
    start = time.perf_counter()
    custom = trial.evaluate()
    if custom is not None:
        metrics = mean_metrics([custom], [1], prefix=VALIDATION_PREFIX)
        return Window(None, None, time.perf_counter() - start, metrics)
    rows: list[Mapping[str, Any]] = []
    sizes: list[int] = []
    for batch in trial.validation_data():
        rows.append(trial.evaluate_batch(batch))
        sizes.append(trial.batch_size(batch))
    metrics = mean_metrics(rows, sizes, prefix=VALIDATION_PREFIX)
    return Window(sum(sizes), len(rows), time.perf_counter() - start, metrics)


def _unfinished(session: Session) -> str | None:
    """What a loop's run lacks to end truthfully, in one line; ``None``: nothing."""
    counters, target = session.counters, session.plan.target
    if session.stopped:
        return None
    if counters.batches < target:
        return (
            f"the loop ended at batch {counters.batches} of {target}: iterate run.batches(data) "
            "to its end (it ends by itself at the target, or at a requested stop)"
        )
    missing = [
        call
        for call, at in (
            ("run.report_validation(metrics)", session.validated_at),
            ("run.checkpoint(state)", session.checkpointed_at),
        )
        if at != counters.batches
    ]
    if not missing:
        return None
    return (
        f"the loop reached its target, batch {target}, without {' and '.join(missing)} "
        "there: call them when run.should_validate and run.should_checkpoint are true (or "
        "after the loop, before run.finish())"
    )


def _epoch_length(data: Iterable[Any]) -> int | None:
    """Batches in one epoch of ``data``, when it can tell (``len``)."""
    return len(data) if isinstance(data, Sized) else None


def _requeued() -> bool:
    """Inside a Slurm job that was requeued: always continue from the checkpoint."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
