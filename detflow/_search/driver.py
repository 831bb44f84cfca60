"""The sweep driver: asks the searcher, starts trials, records results, resumes.

Hydra-free: it sees a :class:`TrialLauncher` (start a trial, wait for some to end) and the
sweep directory. A new trial or promotion starts the moment a slot frees up; a blocking
launcher simply returns a whole wave from :meth:`TrialLauncher.wait`.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from detflow._core.artifacts import (
    LOCK_FILE,
    RESULTS_FILE,
    STATE_FILE,
    RunEnd,
    TrialResult,
    TrialStatus,
    read_results_csv,
    results_header,
    results_row,
)
from detflow._core.errors import ConfigError, MalformedResults
from detflow._core.files import write_atomic
from detflow._core.text import fraction_text
from detflow._search.searchers import Job, Searcher, TrialRecord

__all__ = ["SweepDriver", "SweepSummary", "TrialLauncher", "TrialOutcome"]

log = logging.getLogger("detflow.sweep")


@dataclass(frozen=True)
class TrialOutcome:
    """A trial's job ended: ``error`` is the last line of its exception, if it failed."""

    trial_id: int
    error: str | None = None
    log: str | None = None


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
        Holds ``searcher.json``, ``results.csv`` and one directory per trial.
    overrides_for:
        The Hydra overrides of a job (its hyperparameters, length, directory).
    max_concurrent:
        Trials running at once.
    unit:
        The searcher's length unit, for ``results.csv``.
    """

    def __init__(
        self,
        searcher: Searcher,
        launcher: TrialLauncher,
        sweep_dir: Path,
        overrides_for: Callable[[Job], list[str]],
        max_concurrent: int,
        unit: str,
    ) -> None:
        self.searcher = searcher
        self.launcher = launcher
        self.sweep_dir = sweep_dir
        self.overrides_for = overrides_for
        self.max_concurrent = max_concurrent
        self.unit = unit
        self._running: dict[int, Job] = {}
        self._results: dict[int, TrialResult] = {}  # result.json of each ended trial
        self._rows: dict[int, tuple[tuple[Any, ...], str]] = {}  # results.csv line per trial

    def trial_dir(self, trial_id: int) -> Path:
        """Where trial ``trial_id`` writes its run (Hydra's ``hydra.sweep.subdir``)."""
        return self.sweep_dir / str(trial_id)

    def run(self) -> SweepSummary:
        """Search until the searcher is done; write state and results after every event."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(self.sweep_dir / LOCK_FILE, "a") as lock:  # "a": a refused resume changes nothing
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    "hydra.sweep.dir", str(self.sweep_dir), "a sweep directory no other sweep uses"
                ) from None
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
                asked: list[Job] = []
                while len(self._running) + len(asked) < self.max_concurrent:
                    new = self.searcher.ask()
                    if new is None:
                        break
                    asked.append(new)
                if asked:
                    self._save_state()  # on disk before any of them starts: resume relaunches
                for job in asked:
                    self._start(job)
                if not self._running:
                    break
                for outcome in self.launcher.wait():
                    self._finish(outcome)
                # A crash before this save loses nothing: the trials told since the last save
                # are still in flight there, and on resume they end at once from their results.
                self._save_state()
            return self.summary()

    def _start(self, job: Job) -> None:
        verb = "promoting" if job.promotion else "starting"
        log.info(
            "%s trial %d to %s %s%s",
            verb,
            job.trial_id,
            fraction_text(job.length),
            self.unit,
            "".join(f" {k}={v}" for k, v in job.hparams.items()),
        )
        self._running[job.trial_id] = job
        self.launcher.start(job.trial_id, self.overrides_for(job))

    def _finish(self, outcome: TrialOutcome) -> None:
        job = self._running.pop(outcome.trial_id)
        result = self.read_result(outcome.trial_id)
        if result is not None:
            self._results[outcome.trial_id] = result
        error = outcome.error
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
            return
        metric = result.metric if result and error is None else None
        length = result.length if result else Fraction(0)
        self.searcher.tell(outcome.trial_id, metric, length, error=error)
        if error is not None:
            where = f" (log: {outcome.log})" if outcome.log else ""
            log.error("trial %d failed: %s%s", outcome.trial_id, error, where)
        else:
            log.info(
                "trial %d reached %s %s: %s=%s",
                outcome.trial_id,
                fraction_text(length),
                self.unit,
                self.searcher.metric,
                metric,
            )

    def _reached(self, job: Job) -> bool:
        """Whether the trial's ``result.json`` says it completed this job's length."""
        result = self.read_result(job.trial_id)
        return (
            result is not None and result.status is RunEnd.COMPLETED and result.length >= job.length
        )

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
        path = self.sweep_dir / STATE_FILE
        if not path.exists():
            return
        try:
            state = json.loads(path.read_text())
            self.searcher.load_state_dict(state["searcher"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                str(path),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                "the state of this same search (same searcher settings and space); "
                "use a new hydra.sweep.dir for a different search",
            ) from None
        results = self.sweep_dir / RESULTS_FILE
        try:  # the next save rewrites it: refuse rather than lose a hand edit unseen
            read_results_csv(results)
        except MalformedResults as exc:
            raise ConfigError(
                str(results),
                f"row {exc.row} {exc.text[:60]!r}: {exc.why}",
                "rows as detflow's sweeper writes them; delete the file and the sweep "
                "rewrites it from searcher.json",
            ) from None
        if not results.exists():
            write_atomic(results, self.results_csv().encode())
        log.info("resuming the search in %s", self.sweep_dir)

    def _save_state(self) -> None:
        state = {"version": 1, "searcher": self.searcher.state_dict()}
        write_atomic(self.sweep_dir / STATE_FILE, json.dumps(state).encode())
        write_atomic(self.sweep_dir / RESULTS_FILE, self.results_csv().encode())

    def results_csv(self) -> str:
        """One row per trial: id, status, hyperparameters, lengths, metrics, error."""
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
            shown = (
                columns,
                trial.status,
                trial.rung,
                trial.length_trained,
                batches,
                trial.best_metric,
                trial.last_metric,
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
                        trial.error or "",
                        self.trial_dir(trial.trial_id),
                    ]
                )
                cached = (shown, line)
                self._rows[trial.trial_id] = cached
            out.write(cached[1])
        return out.getvalue()

    def summary(self) -> SweepSummary:
        """The trials, the best one and the batches trained in all (promotions continue)."""
        trials = self.searcher.trials()
        batches = 0
        for trial in trials:
            batches += self._batches_of(trial.trial_id) or 0
        return SweepSummary(trials, self.searcher.best(), batches)


def _left_from_before(result: TrialResult, job: Job) -> bool:
    """A completed result short of the job's length: the rung before's, not this job's."""
    return result.status is RunEnd.COMPLETED and result.length < job.length


def _blank(value: float | None) -> str:
    return "" if value is None else repr(value)
