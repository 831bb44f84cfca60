"""How detflow's sweep driver scales: cost per trial and memory at 10^3 to 10^5 trials.

Run from the repository root::

    python -m bench.driver_scale             # 1,000 and 10,000 trials, random and asha
    python -m bench.driver_scale --full      # and 100,000
    python -m bench.driver_scale --sizes 2000 --searchers random

The Hydra-free :class:`~detflow._search.driver.SweepDriver` runs a search of instant trials:
:class:`InstantLauncher` writes each job's ``result.json`` as it starts (timed apart, as the
"task", and left out) and ends it at the next wait; one trial at a time
(``max_concurrent=1``: every ask and every tell is a save of its own, the worst case). Each
run is a fresh Python process, so that its peak memory (``ru_maxrss``) is its own.

The driver saves its state after every event: an append of the events to
``searcher.journal.jsonl`` (fsync'd) and, now and then, a snapshot (``searcher.json`` and
``results.csv``, see :class:`~detflow._search.state_store.SnapshotPolicy`). The baseline is
the way before the journal: the whole state rewritten on every save
(``SnapshotPolicy.every_save()``). It is run in full at the smaller sizes; at 10,000 trials
and more, where it would take many minutes, it is estimated in the same run: the journal
run's cost without its saves, plus its saves at the mean cost of a whole-state save over
the run (the mean of one timed on an empty state and one on the run's final state: the
cost grows with the trials, linearly). Where both are there (``--measure-baseline-up-to``)
the table shows the estimate beside the measurement.

Targets (issue 16): at most 2 ms per trial at 10,000 trials, and at most 1.5x the cost at
1,000 trials (flat).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from bench._common import machine, table
from detflow._core.artifacts import (
    RESULTS_FILE,
    STATE_FILE,
    RunEnd,
    SweepState,
    TrialResult,
    TrialStatus,
)
from detflow._core.files import write_atomic
from detflow._search.driver import SweepDriver, TrialOutcome
from detflow._search.searchers import Job, Searcher, make_searcher
from detflow._search.space import Interval
from detflow._search.state_store import SnapshotPolicy

TARGET_MS = 2.0
TARGET_FLAT = 1.5
SIZES = (1_000, 10_000)
FULL_SIZES = (1_000, 10_000, 100_000)
SEARCHERS = ("random", "asha")
MODES = ("journal", "rewrite")  # rewrite: the whole state on every save (the baseline)
#: the largest size at which the baseline is run in full (above: estimated)
MEASURE_BASELINE_UP_TO = 1_000


class InstantLauncher:
    """A :class:`~detflow._search.driver.TrialLauncher` whose jobs end as they start.

    A started job writes the ``result.json`` of a one-batch-per-unit trial (timed apart, as
    the task); ``wait`` ends every started job.
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir
        self.started: list[int] = []
        self.jobs = 0
        self.task_seconds = 0.0

    def start(self, trial_id: int, overrides: list[str]) -> None:
        began = time.perf_counter()
        values = dict(item.split("=", 1) for item in overrides)
        length = Fraction(values["length"])
        metric = abs(math.log10(float(values["lr"])) + 2.5) + 1 / float(length)
        batches = math.ceil(length)
        result = TrialResult(
            RunEnd.COMPLETED,
            records=batches,
            batches=batches,
            steps=batches,
            epochs=batches,
            target_batches=batches,
            batches_per_epoch=1,
            global_batch_size=1,
            aggregation_frequency=1,
            length=length,
            unit="batches",
            metric=metric,
            best_metric=metric,
        )
        directory = self.sweep_dir / str(trial_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "result.json").write_text(json.dumps(result.to_json()))
        self.task_seconds += time.perf_counter() - began
        self.started.append(trial_id)
        self.jobs += 1

    def wait(self) -> list[TrialOutcome]:
        ended, self.started = self.started, []
        return [TrialOutcome(trial_id) for trial_id in ended]


def overrides_for(job: Job) -> list[str]:
    return [f"lr={job.hparams['lr']!r}", f"length={job.length}", f"trial={job.trial_id}"]


def build_searcher(name: str, trials: int) -> Searcher:
    """``name`` over one log-uniform hyperparameter; asha: divisor 4, 3 rungs up to 16."""
    return make_searcher(
        name,
        space={"lr": Interval(1e-4, 1e-1, log=True)},
        max_length=16,
        max_trials=trials,
        seed=0,
        metric="validation_loss",
        smaller_is_better=True,
        divisor=4,
        max_rungs=3,
    )


@dataclass(frozen=True)
class ScaleRun:
    """One driver run: its wall time and what the saves cost, memory, the baseline estimate."""

    searcher: str
    trials: int
    mode: str
    jobs: int  # trials started and promotions
    seconds: float  # the driver's wall time, the tasks left out
    save_seconds: float  # of which in _save_state
    saves: int
    snapshots: int  # saves that wrote searcher.json whole
    rss_before_mb: float  # the process before the run
    rss_peak_mb: float  # the process's peak (ru_maxrss)
    whole_save_empty_s: float  # one whole-state save, as the baseline makes, of an empty state
    whole_save_final_s: float  # ... and of the run's final state
    fsyncs: int  # os.fsync calls in the run
    fsync_seconds: float  # the run's time in os.fsync: the disk's, not the driver's

    @property
    def ms_per_trial(self) -> float:
        return self.seconds / self.trials * 1e3

    @property
    def ms_per_trial_without_fsync(self) -> float:
        """The driver's own cost per trial: its time less what it waited for the disk."""
        return (self.seconds - self.fsync_seconds) / self.trials * 1e3

    @property
    def estimated_rewrite_ms_per_trial(self) -> float:
        """What the run would cost with the whole state rewritten on every save."""
        mean_save = (self.whole_save_empty_s + self.whole_save_final_s) / 2
        return (self.seconds - self.save_seconds + self.saves * mean_save) / self.trials * 1e3


def run_one(name: str, trials: int, mode: str, work: Path) -> ScaleRun:
    """One run in this process (``--one``)."""
    rss_before = _rss_mb()
    sweep_dir = work / f"{name}-{trials}-{mode}"
    launcher = InstantLauncher(sweep_dir)
    policy = SnapshotPolicy.every_save() if mode == "rewrite" else SnapshotPolicy()
    driver = SweepDriver(
        build_searcher(name, trials),
        launcher,
        sweep_dir,
        overrides_for,
        1,
        "batches",
        snapshots=policy,
    )
    counts = {"saves": 0, "snapshots": 0, "seconds": 0.0}
    save, written = driver._save_state, driver._store.snapshot_written

    def counted_save(*, final: bool = False) -> None:
        began = time.perf_counter()
        try:
            save(final=final)
        finally:
            counts["seconds"] += time.perf_counter() - began
            counts["saves"] += 1

    def counted_snapshot(size: int, seconds: float, *, final: bool = False) -> None:
        counts["snapshots"] += 1
        written(size, seconds, final=final)

    driver._save_state = counted_save  # type: ignore[method-assign]
    driver._store.snapshot_written = counted_snapshot  # type: ignore[method-assign]
    fsync = os.fsync
    synced = {"calls": 0, "seconds": 0.0}

    def timed_fsync(fd: int) -> None:
        began = time.perf_counter()
        try:
            fsync(fd)
        finally:
            synced["seconds"] += time.perf_counter() - began
            synced["calls"] += 1

    os.fsync = timed_fsync
    try:
        began = time.perf_counter()
        summary = driver.run()
        wall = time.perf_counter() - began
    finally:
        os.fsync = fsync
    if summary.failed or summary.count(TrialStatus.RUNNING) or len(summary.trials) != trials:
        raise RuntimeError(f"{name} {trials}: {summary.failed} failed of {len(summary.trials)}")
    final_save = _whole_save_seconds(driver, sweep_dir)
    empty = SweepDriver(
        build_searcher(name, trials), launcher, work / "empty", overrides_for, 1, "batches"
    )
    (work / "empty").mkdir(exist_ok=True)
    empty_save = _whole_save_seconds(empty, work / "empty")
    return ScaleRun(
        name,
        trials,
        mode,
        launcher.jobs,
        wall - launcher.task_seconds,
        counts["seconds"],
        int(counts["saves"]),
        int(counts["snapshots"]),
        rss_before,
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        empty_save,
        final_save,
        int(synced["calls"]),
        synced["seconds"],
    )


def _whole_save_seconds(driver: SweepDriver, sweep_dir: Path, repeats: int = 3) -> float:
    """The median seconds of one save as the driver made them before the journal: the whole
    ``searcher.json`` and ``results.csv``, each written atomically."""
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        SweepState.write(
            sweep_dir / STATE_FILE, driver.searcher.state_dict(), driver.driver_state()
        )
        write_atomic(sweep_dir / RESULTS_FILE, driver.results_csv().encode())
        samples.append(time.perf_counter() - began)
    return sorted(samples)[len(samples) // 2]


def fsync_latency(directory: Path, repeats: int = 20) -> float:
    """Median seconds of one small append + ``os.fsync`` in ``directory``: what each save
    waits for at least (the disk's, not detflow's)."""
    samples = []
    path = directory / "fsync-probe"
    with open(path, "ab") as handle:
        for _ in range(repeats):
            handle.write(b"x" * 200)
            handle.flush()
            began = time.perf_counter()
            os.fsync(handle.fileno())
            samples.append(time.perf_counter() - began)
    path.unlink()
    return sorted(samples)[len(samples) // 2]


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(name: str, trials: int, mode: str, work: Path) -> ScaleRun:
    """One run in a fresh Python process (its own peak memory)."""
    command = [sys.executable, "-m", "bench.driver_scale", "--one", name, str(trials), mode]
    done = subprocess.run(
        [*command, "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return ScaleRun(**json.loads(done.stdout.strip().splitlines()[-1]))


@dataclass(frozen=True)
class Scale:
    """The runs of one searcher at every size: the journal's, and the baseline's where run."""

    searcher: str
    journal: dict[int, ScaleRun]
    rewrite: dict[int, ScaleRun]

    def baseline_ms(self, trials: int) -> tuple[float, bool]:
        """The baseline's ms per trial at ``trials`` and whether it was measured (or estimated)."""
        if trials in self.rewrite:
            return self.rewrite[trials].ms_per_trial, True
        return self.journal[trials].estimated_rewrite_ms_per_trial, False

    def growth(self, trials: int) -> float:
        """Cost per trial at ``trials`` over the cost at the smallest size."""
        smallest = min(self.journal)
        return self.journal[trials].ms_per_trial / self.journal[smallest].ms_per_trial


def run_all(
    searchers: tuple[str, ...], sizes: tuple[int, ...], work: Path, baseline_up_to: int
) -> list[Scale]:
    scales = []
    for name in searchers:
        journal: dict[int, ScaleRun] = {}
        rewrite: dict[int, ScaleRun] = {}
        for trials in sizes:
            print(f"  {name} {trials:,} trials ...", file=sys.stderr, flush=True)
            journal[trials] = measure(name, trials, "journal", work)
            if trials <= baseline_up_to:
                rewrite[trials] = measure(name, trials, "rewrite", work)
        scales.append(Scale(name, journal, rewrite))
    return scales


def render(scales: list[Scale]) -> list[str]:
    header = [
        "searcher",
        "trials",
        "jobs",
        "ms/trial",
        "without fsync",
        "fsyncs/trial",
        "of which saves",
        "snapshots",
        "peak RSS",
        "growth vs smallest",
        "baseline ms/trial",
        "estimated baseline",
        "ratio",
        f"target <= {TARGET_MS:g} ms, <= {TARGET_FLAT:g}x",
    ]
    rows = []
    for scale in scales:
        for trials, run in sorted(scale.journal.items()):
            base, measured = scale.baseline_ms(trials)
            growth = scale.growth(trials)
            ok = run.ms_per_trial <= TARGET_MS and growth <= TARGET_FLAT
            rows.append(
                [
                    scale.searcher,
                    f"{trials:,}",
                    f"{run.jobs:,}",
                    f"{run.ms_per_trial:.3f}",
                    f"{run.ms_per_trial_without_fsync:.3f}",
                    f"{run.fsyncs / run.trials:.1f}",
                    f"{run.save_seconds / run.trials * 1e3:.3f}",
                    f"{run.snapshots}",
                    f"{run.rss_peak_mb:.0f} MB",
                    f"{growth:.2f}x",
                    f"{base:.3f}" + ("" if measured else " (est.)"),
                    f"{run.estimated_rewrite_ms_per_trial:.3f}",
                    f"{run.ms_per_trial / base:.2f}x",
                    "PASS" if ok else "FAIL",
                ]
            )
    return table(header, rows, left=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="also 100,000 trials")
    parser.add_argument("--sizes", type=int, nargs="+", help="trial counts (default 1000 10000)")
    parser.add_argument("--searchers", nargs="+", choices=SEARCHERS, default=list(SEARCHERS))
    parser.add_argument(
        "--measure-baseline-up-to",
        type=int,
        default=MEASURE_BASELINE_UP_TO,
        help="run the whole-state-rewrite baseline in full up to this many trials",
    )
    parser.add_argument(
        "--one", nargs=3, metavar=("SEARCHER", "TRIALS", "MODE"), help=argparse.SUPPRESS
    )
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        name, trials, mode = args.one
        if name not in SEARCHERS or mode not in MODES:
            parser.error(f"--one: searcher one of {SEARCHERS}, mode one of {MODES}")
        with tempfile.TemporaryDirectory(prefix="driver-scale-", dir=args.work) as scratch:
            run = run_one(name, int(trials), mode, Path(scratch))
        print(json.dumps(asdict(run)))
        return 0
    sizes = tuple(args.sizes or (FULL_SIZES if args.full else SIZES))
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="driver-scale-") as work:
        before = fsync_latency(Path(work))
        scales = run_all(tuple(args.searchers), sizes, Path(work), args.measure_baseline_up_to)
        after = fsync_latency(Path(work))
    print(f"fsync of a 200-byte append, before / after: {before * 1e3:.2f} / {after * 1e3:.2f} ms")
    print("\n".join(render(scales)))
    print(
        "\nms/trial: the driver's wall time per trial (each trial's and promotion's instant "
        "task left out), max_concurrent=1; without fsync: less its time in os.fsync (the "
        "disk's latency, above); baseline: the whole state rewritten on every save "
        "(before the journal), measured, or (est.) estimated from a whole-state save timed "
        "on an empty and on the final state; peak RSS: the run's process."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
