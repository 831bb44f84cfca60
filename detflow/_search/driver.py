"""The sweep driver: asks the searcher, starts trials, records results, resumes.

Hydra-free: it sees a :class:`TrialLauncher` (start a trial, wait for some to end) and the
sweep directory. A new trial or promotion starts the moment a slot frees up; a blocking
launcher simply returns a whole wave from :meth:`TrialLauncher.wait`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn, Protocol, runtime_checkable

from detflow._core.artifacts import (
    CHECKPOINTS_DIR,
    JOURNAL_FILE,
    PARENT_FILE,
    RESULTS_FILE,
    STATE_FILE,
    RunEnd,
    SweepState,
    TrialResult,
    TrialStatus,
    results_header,
    results_row,
)
from detflow._core.checkpoints import (
    BEST_POINTER,
    LATEST_POINTER,
    checkpoint_metric,
    pointer,
    retain,
)
from detflow._core.errors import ConfigError
from detflow._core.experiment import CheckpointPolicy
from detflow._core.files import DirectoryLock, fsync_dir, write_atomic
from detflow._core.journal import EventJournal
from detflow._core.schema import ExperimentConfig
from detflow._core.text import fraction_text, hparams_text, number_text
from detflow._search.pbt import PbtSearcher
from detflow._search.searchers import Job, Searcher, TrialRecord, rank_key
from detflow._search.state_store import (
    EventKind,
    SnapshotPolicy,
    SweepStore,
    ask_event,
    count_event,
    replay,
    tell_event,
)

__all__ = [
    "LengthFormatter",
    "SweepDriver",
    "SweepInterrupted",
    "SweepSummary",
    "TrialLauncher",
    "TrialOutcome",
    "best_line",
    "length_text",
]

log = logging.getLogger("detflow.sweep")
_DEFAULTS = ExperimentConfig()  # the schema is the one table of defaults

#: How a job's target reads in the sweep's lines: its length in the searcher's unit and its
#: hyperparameters (which may set the batch size) -> e.g. ``"41 batches (0.25 epochs)"``.
#: The sweeper, which knows the batch geometry, gives one; see :func:`length_text`.
LengthFormatter = Callable[[Fraction, Mapping[str, Any]], str]


def length_text(batches: int | None, length: Fraction, unit: str) -> str:
    """A length as the sweep's lines write it: whole batches, the searcher's unit beside them
    (4 significant digits); the unit alone where the batches are not known.

    >>> length_text(41, Fraction(1, 4), "epochs"), length_text(4, Fraction(183, 50), "batches")
    ('41 batches (0.25 epochs)', '4 batches')
    >>> length_text(1, Fraction(1, 3), "epochs"), length_text(None, Fraction(1), "epochs")
    ('1 batch (0.3333 epochs)', '1 epoch')
    """
    given = _amount(length, unit)
    if batches is None:
        return given
    counted = _amount(batches, "batches")
    return counted if unit == "batches" else f"{counted} ({given})"


def best_line(
    trial_id: int,
    hparams: Mapping[str, Any],
    metric: str,
    best: float | None,
    trained: str,
    order: Sequence[str] = (),
) -> str:
    """The line that names a sweep's best trial: the sweep's last lines and ``detflow
    summary`` print this same line. ``best`` is the trial's best ``metric`` at any validation;
    ``order`` the search's order of the keys.

    >>> best_line(3, {"hyperparameters.lr": 0.118432}, "validation_loss", 0.0827512,
    ...           "360 batches (8 epochs)")
    'best: trial 3 (lr=0.1184), validation_loss 0.08275, trained 360 batches (8 epochs)'
    """
    chosen = hparams_text(hparams, order)
    return (
        f"best: trial {trial_id}"
        + (f" ({chosen})" if chosen else "")
        + f", {metric} {number_text(best)}, trained {trained}"
    )


def _amount(value: int | Fraction, unit: str) -> str:
    text = number_text(value)
    if text == "1":
        unit = "batch" if unit == "batches" else unit.removesuffix("s")
    return f"{text} {unit}"


@dataclass(frozen=True)
class TrialOutcome:
    """A trial's job ended: ``error`` is the last line of its exception, if it failed.

    ``lost`` says that the job ended without a result of its own, and how (``"killed by
    signal 9"``): its process (or Slurm job) died before it could report, from a signal, the
    memory limit or a lost node. ``raised_at``: the trial's own code raised ``error`` (an
    exception that is none of detflow's errors), with the run at this batch count. A launcher
    sets them where it knows; the driver decides whether a restart from the trial's last
    checkpoint may cure it (``max_restarts``).
    """

    trial_id: int
    error: str | None = None
    log: str | None = None
    lost: str | None = None
    raised_at: int | None = None


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped on request (Ctrl-C, :meth:`SweepDriver.request_stop`) and saved its
    state: the same command resumes it. ``stopped``: trials that checkpointed and ended
    before their target; ``left``: trials in flight that had not ended (never started, or
    still running where the launcher leaves them, as Slurm's does). Both start first on
    resume, from their last checkpoint."""

    def __init__(self, stopped: list[int], left: list[int]) -> None:
        super().__init__(f"stopped trials {stopped}, left in flight {left}")
        self.stopped = stopped
        self.left = left


@runtime_checkable
class TrialLauncher(Protocol):
    """What the driver needs of a launcher: start without blocking, then wait for ends."""

    def start(self, trial_id: int, overrides: list[str]) -> None:
        """Start ``trial_id``'s job with these Hydra overrides."""

    def wait(self) -> list[TrialOutcome]:
        """Block until at least one started job has ended; return every ended one."""


@dataclass(frozen=True)
class SweepSummary:
    """How a sweep ended."""

    trials: list[TrialRecord]
    best: TrialRecord | None
    batches_trained: int
    #: restarts of each trial that was restarted (``max_restarts``)
    restarts: dict[int, int] = field(default_factory=dict)

    def count(self, status: TrialStatus) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def failed(self) -> int:
        return self.count(TrialStatus.FAILED)


class SweepDriver:
    """Runs a search to the end in ``sweep_dir``; the same call on the same directory resumes.

    Parameters
    ----------
    searcher:
        The search algorithm (fresh; its saved state is loaded from ``sweep_dir``).
    launcher:
        Starts trials and reports when they end.
    sweep_dir:
        Holds ``searcher.json`` (and ``searcher.journal.jsonl``, the events since it),
        ``results.csv`` and one directory per trial.
    overrides_for:
        The Hydra overrides of a job (its hyperparameters, length, directory).
    max_concurrent:
        Trials running at once.
    unit:
        The searcher's length unit, for ``results.csv``.
    length_text:
        How a job's target reads in the log (:data:`LengthFormatter`); by default its length
        in ``unit``.
    max_restarts:
        Times a trial that ended without a result (:attr:`TrialOutcome.lost`), or whose code
        raised (once at a batch: twice at the same batch is deterministic), is started again
        from its last checkpoint. ConfigErrors, non-finite losses and detflow's other errors
        are never retried.
    checkpoints:
        Which checkpoints of an ended trial are kept (``checkpoint_storage``); pruned only
        once the state says the trial ended, never one a promotion or a resume needs.
    snapshots:
        When a save writes the whole state rather than appending its events to the
        journal (:class:`~detflow._search.state_store.SnapshotPolicy`).
    """

    def __init__(
        self,
        searcher: Searcher,
        launcher: TrialLauncher,
        sweep_dir: Path,
        overrides_for: Callable[[Job], list[str]],
        max_concurrent: int,
        unit: str,
        *,
        length_text: LengthFormatter | None = None,
        max_restarts: int = _DEFAULTS.max_restarts,
        checkpoints: CheckpointPolicy | None = None,
        snapshots: SnapshotPolicy | None = None,
    ) -> None:
        self.searcher = searcher
        self.launcher = launcher
        self.sweep_dir = sweep_dir
        self.overrides_for = overrides_for
        self.max_concurrent = max_concurrent
        self.unit = unit
        self.length_text: LengthFormatter = length_text or self._plain_length
        self._running: dict[int, Job] = {}
        self._refusal: ConfigError | None = None  # a config every trial would refuse
        self._results: dict[int, TrialResult] = {}  # result.json of each ended trial
        self._rows: dict[int, tuple[tuple[Any, ...], str]] = {}  # results.csv line per trial
        self._stop_requested = False  # Ctrl-C: see request_stop
        self.max_restarts = max_restarts
        self.checkpoints = checkpoints or CheckpointPolicy()
        self._restarts: dict[int, int] = {}  # trial id -> restarts so far (in the state)
        self._raised_at: dict[int, int] = {}  # trial id -> batch its code last raised at
        self._pruned: dict[int, bool] = {}  # trial id -> all its checkpoints deleted (or kept)
        self._store = SweepStore(sweep_dir, snapshots or SnapshotPolicy())  # the state on disk

    def trial_dir(self, trial_id: int) -> Path:
        """Where trial ``trial_id`` writes its run (Hydra's ``hydra.sweep.subdir``)."""
        return self.sweep_dir / str(trial_id)

    def run(self) -> SweepSummary:
        """Search until the searcher is done; every event is on disk before the sweep acts
        on it (the journal, or the whole state: :meth:`_save_state`)."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        lock = DirectoryLock.acquire(self.sweep_dir)
        if lock is None:
            raise ConfigError(
                "hydra.sweep.dir", str(self.sweep_dir), "a sweep directory no other sweep uses"
            )
        try:
            self._load_state()
            for job in self.searcher.in_flight():
                if self._reached(job):  # it ended before the last save: record, don't rerun
                    self._running[job.trial_id] = job
                    self._finish(TrialOutcome(job.trial_id))
                    continue
                log.info("resuming trial %d (rung %d)", job.trial_id, job.rung)
                self._start(job)
            self._save_state()  # what resuming recorded is on disk even if nothing is left
            while True:
                if self._stop_requested:
                    self._wind_down([])
                asked: list[Job] = []
                while (
                    self._refusal is None and len(self._running) + len(asked) < self.max_concurrent
                ):
                    new = self._ask()
                    if new is None:
                        break
                    asked.append(new)
                if asked:
                    self._save_state()  # on disk before any of them starts: resume relaunches
                for job in asked:
                    self._start(job)
                if not self._running:
                    break
                ended = self.launcher.wait()
                if self._stop_requested:  # Ctrl-C: these and the running trials end the sweep
                    self._wind_down(ended)
                for outcome in ended:
                    self._finish(outcome)
                # A crash before this save loses nothing: the trials told since the last save
                # are still in flight there, and on resume they end at once from their results.
                self._save_state()
                self._prune_checkpoints(final=False)  # only trials the state says ended
            self._save_state(final=True)  # the whole state: searcher.json says all, no journal
            if self._refusal is not None:  # the running trials ended: the search ends with it
                raise self._refusal
            self._prune_checkpoints(final=True)
            return self.summary()
        finally:
            self._store.close()
            lock.release()

    def request_stop(self) -> None:
        """Stop the sweep: no new trial, no relaunch; :meth:`run` waits for the running trials
        to end, saves the state and raises :class:`SweepInterrupted`. Safe in a signal
        handler (a flag); the launcher is asked separately to stop its trials."""
        self._stop_requested = True

    def _wind_down(self, ended: list[TrialOutcome]) -> NoReturn:
        """After a stop request: record the trials that end (a trial stopped before its
        target stays in flight in the state, to resume from its checkpoint), wait for the
        others while the launcher still runs any, save the state, raise."""
        stopped: list[int] = []
        while True:
            for outcome in ended:
                result = self.read_result(outcome.trial_id)
                if outcome.error is None and result is not None and result.status is RunEnd.STOPPED:
                    del self._running[outcome.trial_id]
                    stopped.append(outcome.trial_id)
                elif self._finish(outcome):  # it died: it continues when the sweep resumes
                    stopped.append(outcome.trial_id)
            self._save_state()
            if not self._running:
                break
            ended = self.launcher.wait()
            if not ended:  # the rest never started, or the launcher leaves them running
                break
        self._save_state(final=True)  # the whole state: the same command resumes from it
        raise SweepInterrupted(sorted(stopped), sorted(self._running))

    def _plain_length(self, length: Fraction, hparams: Mapping[str, Any]) -> str:
        return length_text(None, length, self.unit)

    def _start(self, job: Job, verb: str | None = None) -> None:
        verb = verb or ("promoting" if job.promotion else "starting")
        chosen = hparams_text(job.hparams, self.searcher.keys)
        log.info(
            "%s trial %d to %s%s",
            verb,
            job.trial_id,
            self.length_text(job.length, job.hparams),
            f" {chosen}" if chosen else "",
        )
        self._running[job.trial_id] = job
        parent = self.parent_of(job.trial_id)
        if parent is not None and not job.promotion:
            self._copy_checkpoint(job.trial_id, parent)
        self.launcher.start(job.trial_id, self.overrides_for(job))

    # -- pbt: a child starts from its parent's checkpoint ----------------------------------
    def parent_of(self, trial_id: int) -> int | None:
        """The trial whose checkpoint ``trial_id`` started from (pbt), else None."""
        if isinstance(self.searcher, PbtSearcher):
            return self.searcher.parent_of(trial_id)
        return None

    def _copied_batches(self, trial_id: int) -> int:
        """The batches of the checkpoint a pbt child started from (its ``parent.json``), 0
        for any other trial."""
        if self.parent_of(trial_id) is None:
            return 0
        try:
            origin = json.loads((self.trial_dir(trial_id) / PARENT_FILE).read_text())
            return int(origin["batches"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0  # the child never started

    def _copy_checkpoint(self, trial_id: int, parent: int) -> None:
        """Copy the parent's latest checkpoint into the child's own ``checkpoints/`` (its
        first, ``latest`` and ``best``), so the child resumes from it as a promotion does
        and no later file of the parent changes it; the copy holds no best metric (the
        child's best is of its own validations), and ``parent.json`` says where it came
        from. Done before the parent trains on (the searcher asks a generation's children
        first); a child that has a checkpoint of its own (a resume, a restart) keeps it."""
        root = self.trial_dir(trial_id) / CHECKPOINTS_DIR
        if pointer(root, LATEST_POINTER) is not None:
            return
        source = self.trial_dir(parent) / CHECKPOINTS_DIR
        name = pointer(source, LATEST_POINTER)
        if name is None or not (source / name).is_dir():
            raise ConfigError(
                str(source),
                "no checkpoint",
                f"trial {parent}'s checkpoint at the end of its generation, for its child "
                f"trial {trial_id} to start from (checkpoint_storage keeps the latest)",
            )
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source / name, tmp)
        meta = json.loads((tmp / "state.json").read_text())
        meta["best_metric"] = None  # the child's best is its own validations' best
        write_atomic(tmp / "state.json", json.dumps(meta).encode())
        shutil.rmtree(root / name, ignore_errors=True)
        os.replace(tmp, root / name)
        fsync_dir(root)
        metric = checkpoint_metric(root, name)
        mark = json.dumps({"name": name, "metric": metric}).encode()
        origin = {"parent": parent, "batches": int(name)}
        write_atomic(self.trial_dir(trial_id) / PARENT_FILE, json.dumps(origin).encode())
        write_atomic(root / BEST_POINTER, mark)
        write_atomic(root / LATEST_POINTER, mark)  # last: the copy is complete
        log.info(
            "trial %d starts from trial %d's checkpoint at batch %d", trial_id, parent, int(name)
        )

    def _finish(self, outcome: TrialOutcome) -> bool:
        """Record how a trial's job ended: tell the searcher, or start the job again (a stop
        before its target; a restart). True when it stays in flight for a resume (it died
        after a stop request: nothing starts now)."""
        job = self._running.pop(outcome.trial_id)
        result = self.read_result(outcome.trial_id)
        if result is not None:
            self._results[outcome.trial_id] = result
        error = outcome.error
        if outcome.lost is not None:
            if result is not None and result.refused is None and _completes(result, job):
                error = None  # it ended before its process could report: result.json says so
            else:
                error = error or f"the job ended without a result ({outcome.lost})"
        refused = result is not None and result.refused is not None
        if error is not None and not refused:
            repeated = outcome.raised_at is not None and (
                self._raised_at.get(outcome.trial_id) == outcome.raised_at
            )
            again = self._restart(outcome, error, job, repeated=repeated)
            if again is None:
                return True
            if again:
                return False
            error = self._failure_text(outcome.trial_id, error, outcome.raised_at, repeated)
        if result is not None and result.refused is not None and self._refusal is None:
            self._refusal = result.refused.error()  # every trial would refuse it: start no more
            error = error or str(self._refusal)
            log.error(
                "trial %d refused the experiment's config: no more trials start", job.trial_id
            )
        if error is None and result is None:
            error = "the trial ended without a result.json (did it call detflow.init().fit()?)"
        elif error is None and result is not None and _left_from_before(result, job):
            error = (
                f"the trial ended without a result.json for {fraction_text(job.length)} "
                f"{self.unit} (the last one is for {fraction_text(result.length)})"
            )
        if error is None and result is not None and result.status is RunEnd.STOPPED:
            log.info("trial %d was stopped before its target; relaunching it", job.trial_id)
            self._start(job)
            return False
        metric = result.metric if result and error is None else None
        length = result.length if result else Fraction(0)
        best = result.best_metric if result and error is None else None
        self._tell(outcome.trial_id, metric, length, error=error, best=best)
        if error is not None:
            where = f" (log: {outcome.log})" if outcome.log else ""
            log.error("trial %d failed: %s%s", outcome.trial_id, error, where)
        else:
            log.info(
                "trial %d reached %s: %s=%s",
                outcome.trial_id,
                length_text(result.batches if result else None, length, self.unit),
                self.searcher.metric,
                number_text(metric),
            )
        return False

    # -- restarts (max_restarts): the one place that decides --------------------------------
    def _restart(
        self, outcome: TrialOutcome, error: str, job: Job, *, repeated: bool
    ) -> bool | None:
        """Start a failed job again from its last checkpoint, if a restart may cure it and
        ``max_restarts`` allows one: True when restarted, False when the failure stands,
        None when it would be restarted but the sweep is stopping (it stays in flight).

        A restart may cure a job that ended without a result (:attr:`TrialOutcome.lost`),
        and an exception of the trial's code (:attr:`TrialOutcome.raised_at`) unless it
        ``repeated``: raised at the same batch as the trial's last one. Nothing else:
        detflow's own errors (a ConfigError, a non-finite loss, a full disk) are
        deterministic, and so is a config every trial refuses.
        """
        if outcome.lost is not None:
            why = f"ended without a result ({outcome.lost})"
        elif outcome.raised_at is not None and not repeated:
            self._raised_at[outcome.trial_id] = outcome.raised_at
            self._store.record(
                count_event(EventKind.RAISED_AT, outcome.trial_id, outcome.raised_at)
            )
            why = f"raised {error} at batch {outcome.raised_at}"
        else:
            return False
        if self._refusal is not None:
            return False
        trial_id = outcome.trial_id
        if self._stop_requested:
            log.warning(
                "trial %d %s; it continues from its last checkpoint when the sweep resumes",
                trial_id,
                why,
            )
            return None
        done = self._restarts.get(trial_id, 0)
        if done >= self.max_restarts:
            return False
        self._restarts[trial_id] = done + 1
        self._store.record(count_event(EventKind.RESTARTS, trial_id, done + 1))
        self._save_state()  # the count on disk before the restart starts: a resume keeps it
        log.warning(
            "trial %d %s; restart %d of %d from its last checkpoint",
            trial_id,
            why,
            done + 1,
            self.max_restarts,
        )
        self._start(job, "restarting")
        return True

    def _failure_text(
        self, trial_id: int, error: str, raised_at: int | None, repeated: bool
    ) -> str:
        """The error a failed trial is recorded with, and what restarts were made of it."""
        restarts = self._restarts.get(trial_id, 0)
        notes = []
        if repeated:
            notes.append(f"raised again at batch {raised_at}: not retried")
        if restarts:
            notes.append(f"after {restarts} restart{'' if restarts == 1 else 's'}")
        return f"{error} ({'; '.join(notes)})" if notes else error

    # -- checkpoint_storage: what ended trials keep -----------------------------------------
    def _prune_checkpoints(self, *, final: bool) -> None:
        """Delete the checkpoints ``checkpoint_storage`` does not keep, of trials that ended
        (the state on disk says so: a crash after this loses nothing a resume needs). Until
        ``final`` (the search is over), ``save_experiment_best`` prunes a trial once as many
        ended trials rank above it: trials that may still be promoted or restarted are left
        be. One line per trial pruned."""
        policy = self.checkpoints
        top = policy.save_experiment_best
        if top is None and policy.save_trial_latest >= 1:
            return  # what a run keeps while it trains is all it keeps
        ended = [t for t in self.searcher.trials() if t.status.finished]
        smaller = self.searcher.smaller_is_better
        ranked = sorted(
            (t for t in ended if t.status is not TrialStatus.FAILED and t.best_metric is not None),
            key=lambda t: rank_key(t.rung, t.best_metric or 0.0, t.trial_id, smaller),
        )
        place = {t.trial_id: i for i, t in enumerate(ranked)}
        for trial in ended:
            if self._pruned.get(trial.trial_id):
                continue  # nothing of it is left
            out = top is not None and place.get(trial.trial_id, top) >= top
            root = self.trial_dir(trial.trial_id) / CHECKPOINTS_DIR
            if out:
                deleted = retain(root, latest=0, best=0, smaller_is_better=smaller)
                self._pruned[trial.trial_id] = True
                if deleted:
                    log.info(
                        "trial %d: deleted its %s: not among the best %d trials "
                        "(checkpoint_storage.save_experiment_best)",
                        trial.trial_id,
                        _checkpoints_text(deleted),
                        top,
                    )
                continue
            if trial.trial_id in self._pruned and not final:
                continue  # kept as its trial's policy says, waiting to see where it ranks
            deleted = retain(
                root,
                latest=policy.save_trial_latest,
                best=policy.save_trial_best,
                smaller_is_better=smaller,
                keep_one=top is not None,
            )
            self._pruned[trial.trial_id] = False
            if deleted:
                keeping = f"its latest {policy.save_trial_latest} and best {policy.save_trial_best}"
                if top is not None and not (policy.save_trial_latest or policy.save_trial_best):
                    keeping = f"its best, for the best {top} trials"
                log.info(
                    "trial %d: deleted %s, keeping %s (checkpoint_storage)",
                    trial.trial_id,
                    _checkpoints_text(deleted),
                    keeping,
                )

    def _reached(self, job: Job) -> bool:
        """Whether the trial's ``result.json`` says it completed this job's length."""
        result = self.read_result(job.trial_id)
        return result is not None and _completes(result, job)

    def read_result(self, trial_id: int) -> TrialResult | None:
        """The trial's ``result.json``, if it wrote one."""
        return TrialResult.read(self.trial_dir(trial_id))

    def _batches_of(self, trial_id: int) -> int | None:
        """The batches the trial trained, read once from disk (on resume) and then kept."""
        if trial_id not in self._results:
            result = self.read_result(trial_id)
            if result is None:
                return None
            self._results[trial_id] = result
        return self._results[trial_id].batches

    def _load_state(self) -> None:
        """The saved state: ``searcher.json`` loaded into the searcher, then the journal's
        events since replayed onto it; written whole again when there were any."""
        path = self.sweep_dir / STATE_FILE
        journal_path = self.sweep_dir / JOURNAL_FILE
        saved = SweepState.load(path)
        read = EventJournal.read(journal_path)
        if saved is None:
            if read.entries:
                raise ConfigError(
                    str(journal_path),
                    f"{len(read.entries)} events without a {STATE_FILE}",
                    f"the journal of the {STATE_FILE} beside it; restore that file, or use a "
                    "new hydra.sweep.dir to start the search over",
                )
            return
        try:
            self.searcher.load_state_dict(saved.searcher)
            self._load_driver_state(saved.driver)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise ConfigError(
                str(path),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                "the state of this same search (same searcher settings and space); "
                "use a new hydra.sweep.dir for a different search",
            ) from None
        replayed = replay(
            self.searcher,
            read,
            journal_path,
            first_seq=saved.events,
            restarts=self._restarts,
            raised_at=self._raised_at,
        )
        self._restarts, self._raised_at = replayed.restarts, replayed.raised_at
        self._store.seq = replayed.next_seq
        if read.torn:
            log.warning(
                "%s: its last line was cut short by a crash and is ignored (the event it "
                "held had not been acted on)",
                journal_path,
            )
        self.searcher.news(str)  # learned before the crash: told of then, not again
        if read.entries or read.torn:
            log.info("replayed %d events of %s", replayed.events, journal_path)
            self._save_state(final=True)  # one snapshot again, the journal folded into it
        else:
            # results.csv is a report of the state: rebuilt from it on every run
            write_atomic(self.sweep_dir / RESULTS_FILE, self.results_csv().encode())
        log.info("resuming the search in %s", self.sweep_dir)

    def _ask(self) -> Job | None:
        """The searcher's next job, recorded in the state's journal."""
        job = self.searcher.ask()
        if job is not None:
            self._store.record(ask_event(job))
        return job

    def _tell(
        self,
        trial_id: int,
        metric: float | None,
        length: Fraction,
        *,
        error: str | None,
        best: float | None,
    ) -> None:
        """Tell the searcher how a job ended, recorded in the state's journal."""
        self.searcher.tell(trial_id, metric, length, error=error, best=best)
        self._store.record(tell_event(trial_id, metric, length, error, best))
        for line in self.searcher.news(lambda at: length_text(None, at, self.unit)):
            log.info("%s", line)

    def _save_state(self, *, final: bool = False) -> None:
        """Put every event since the last save on disk: appended to the journal, or the
        whole state (``searcher.json`` and ``results.csv``) when the store says a snapshot
        is due, or ``final`` (the sweep ends or stops: no journal is left)."""
        store = self._store
        if not (final or store.snapshot_due()):
            store.append()
            return
        began = time.perf_counter()
        size = SweepState.write(
            self.sweep_dir / STATE_FILE,
            self.searcher.state_dict(),
            self.driver_state(),
            events=store.seq,
        )
        write_atomic(self.sweep_dir / RESULTS_FILE, self.results_csv().encode())
        store.snapshot_written(size, time.perf_counter() - began, final=final)

    def driver_state(self) -> dict[str, Any]:
        """What the driver saves besides the searcher's state: each restarted trial's
        restarts, and the batch its code last raised at (a second raise there is final)."""
        return {
            "restarts": {str(k): v for k, v in sorted(self._restarts.items())},
            "raised_at": {str(k): v for k, v in sorted(self._raised_at.items())},
        }

    def _load_driver_state(self, state: Mapping[str, Any]) -> None:
        """:meth:`driver_state` as saved; ``ValueError`` when it is not one."""
        known = {t.trial_id for t in self.searcher.trials()}
        loaded: dict[str, dict[int, int]] = {}
        for name in ("restarts", "raised_at"):
            entries = state.get(name) or {}
            if not isinstance(entries, dict):
                raise ValueError(f"driver.{name} is not a mapping")
            counts: dict[int, int] = {}
            for key, value in entries.items():
                if not (key.isdigit() and int(key) in known) or type(value) is not int or value < 0:
                    raise ValueError(f"driver.{name} has {key!r}: {value!r}, not a trial's count")
                counts[int(key)] = value
            loaded[name] = counts
        self._restarts, self._raised_at = loaded["restarts"], loaded["raised_at"]

    def results_csv(self) -> str:
        """One row per trial: id, status, hyperparameters, lengths, metrics, error, and
        the trial a pbt child started from (``parent``)."""
        trials = self.searcher.trials()
        keys = sorted({k for t in trials for k in t.hparams})
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(results_header(keys, self.unit))
        # A trial's line is formatted again only when what it shows has changed: a save is
        # then O(changed trials), not O(all trials), in a sweep of thousands.
        columns = tuple(keys)
        for trial in trials:
            batches = self._batches_of(trial.trial_id)
            restarts = self._restarts.get(trial.trial_id, 0)
            shown = (
                columns,
                trial.status,
                trial.rung,
                trial.length_trained,
                batches,
                trial.best_metric,
                trial.last_metric,
                restarts,
                trial.error,
            )
            cached = self._rows.get(trial.trial_id)
            if cached is None or cached[0] != shown:
                line = results_row(
                    [
                        trial.trial_id,
                        trial.status,
                        trial.rung,
                        *(trial.hparams.get(k, "") for k in keys),
                        fraction_text(trial.length_trained),
                        "" if batches is None else batches,
                        _blank(trial.best_metric),
                        _blank(trial.last_metric),
                        restarts,
                        trial.error or "",
                        self.trial_dir(trial.trial_id),
                        _blank(self.parent_of(trial.trial_id)),  # a trial's parent never changes
                    ]
                )
                cached = (shown, line)
                self._rows[trial.trial_id] = cached
            out.write(cached[1])
        return out.getvalue()

    def summary(self) -> SweepSummary:
        """The trials, the best one and the batches trained in all (promotions continue; a
        pbt child's count less the batches of the checkpoint it copied)."""
        trials = self.searcher.trials()
        batches = 0
        for trial in trials:
            trained = self._batches_of(trial.trial_id) or 0
            batches += trained - self._copied_batches(trial.trial_id)
        return SweepSummary(trials, self.searcher.best(), batches, dict(self._restarts))


def _completes(result: TrialResult, job: Job) -> bool:
    """The result of a run that completed this job's length."""
    return result.status is RunEnd.COMPLETED and result.length >= job.length


def _checkpoints_text(names: Sequence[str]) -> str:
    """``2 checkpoints (at batches 40, 80)``."""
    batches = ", ".join(str(int(name)) for name in names)
    plural = "s" if len(names) > 1 else ""
    return f"{len(names)} checkpoint{plural} (at batch{'es' if plural else ''} {batches})"


def _left_from_before(result: TrialResult, job: Job) -> bool:
    """A completed result short of the job's length: the rung before's, not this job's."""
    return result.status is RunEnd.COMPLETED and result.length < job.length


def _blank(value: float | int | None) -> str:
    return "" if value is None else repr(value)
