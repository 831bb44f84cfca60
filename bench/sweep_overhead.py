"""Sweep overhead: detflow's sweeper against Hydra's BasicSweeper on the same no-op task.

Row ``sweep_inprocess_ms_per_trial`` (:func:`measure_inprocess`): detflow's overhead per
trial of an in-process sweep (``hydra/launcher=basic``) of N=200 no-op trials (60 with
``quick``); baseline: Hydra's BasicSweeper's on the same sweep, measured in the same run.

Run from the repository root::

    python -m bench.sweep_overhead                  # 1000 trials in-process, 50 as processes
    python -m bench.sweep_overhead --trials 200     # quick
    python -m bench.sweep_overhead --profile        # only cProfile the detflow driver

Every side runs ``bench/_sweep_app.py -m`` in a fresh process, one job at a time. Each job
is the same: ``detflow.init(cfg)`` and a one-batch ``fit`` of a no-op trial, which appends
its start and end times to a file. The sides:

- **Hydra BasicSweeper** (``hydra/sweeper=basic 'hyperparameters.x=range(0,N)'``): it
  composes every job's config before it launches the first.
- **detflow** (``hydra/sweeper=detflow searcher.name=random searcher.max_trials=N``, same
  space, ``max_concurrent_trials=1``).

Each runs with ``hydra/launcher=basic`` (in-process) and with ``hydra/launcher=detflow_local``
(one process per trial, ``--local-trials`` of them). Measured from the outside:

- **time to first trial**: from just before the sweep's process is started to the first
  job's task function starting (target: <= 1 s);
- **overhead per trial**: the wall time between consecutive jobs that no task function
  accounts for, ``(last task end - first task start - sum of task durations) / (N - 1)``
  (target: <= 30 ms). With ``detflow_local`` this gap includes a Python start-up per trial,
  reported as the per-trial launch cost; ``total/trial`` is ``(wall - sum of tasks) / N``;
- **driver CPU/trial**: the sweeping process's own CPU time (``getrusage`` at exit), less the
  task functions' CPU when they ran in it, divided by N.

A Hydra-free run of :class:`detflow._search.driver.SweepDriver` with an instant launcher (a job
"ends" as soon as it starts) isolates detflow's own bookkeeping per trial, at two sizes to
show how it grows with the number of trials. ``--profile`` runs only the in-process detflow
sweep, under :mod:`cProfile`, at the same two sizes, and lists where the time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from bench._common import machine, table
from detflow._core.artifacts import RunEnd, TrialResult, TrialStatus
from detflow._search.driver import SweepDriver, TrialOutcome
from detflow._search.searchers import Job, RandomSearcher
from detflow._search.space import Choice

APP = Path(__file__).with_name("_sweep_app.py")
TARGET_GAP_MS = 30.0
TARGET_FIRST_S = 1.0


# -- one sweep, measured from the outside -------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """One way of running the sweep."""

    key: str
    label: str
    arguments: Callable[[int], list[str]]
    in_process: bool
    baseline: str | None = None  # the side this one is compared with


def _detflow(launcher: str, *extra: str) -> Callable[[int], list[str]]:
    def arguments(n: int) -> list[str]:
        return [
            "hydra/sweeper=detflow",
            f"hydra/launcher={launcher}",
            *extra,
            "searcher.name=random",
            f"searcher.max_trials={n}",
            "searcher.max_concurrent_trials=1",
            f"hyperparameters.x=range(0,{n})",
        ]

    return arguments


def _basic(launcher: str) -> Callable[[int], list[str]]:
    def arguments(n: int) -> list[str]:
        extra = {
            "detflow_local": ["hydra.launcher.max_parallel=1"],
            # submitit_local starts a whole batch at once: batches of one job each.
            "submitit_local": ["hydra.sweeper.max_batch_size=1"],
        }.get(launcher, [])
        return [
            "hydra/sweeper=basic",
            f"hydra/launcher={launcher}",
            *extra,
            # The same command line as detflow's: each job composes the same overrides.
            "searcher.name=random",
            f"searcher.max_trials={n}",
            "searcher.max_concurrent_trials=1",
            f"hyperparameters.x=range(0,{n})",
        ]

    return arguments


SIDES = {
    side.key: side
    for side in (
        Side("hydra", "Hydra BasicSweeper, basic launcher", _basic("basic"), True),
        Side("detflow", "detflow random, basic launcher", _detflow("basic"), True, "hydra"),
        Side(
            "hydra_local",
            "Hydra BasicSweeper, detflow_local",
            _basic("detflow_local"),
            False,
        ),
        Side(
            "detflow_local",
            "detflow random, detflow_local",
            _detflow("detflow_local"),
            False,
            "submitit_local",
        ),
        Side(
            "detflow_local_spawn",
            "detflow random, detflow_local (spawn)",
            _detflow("detflow_local", "hydra.launcher.start_method=spawn"),
            False,
            "submitit_local",
        ),
        Side(
            "submitit_local",
            "Hydra BasicSweeper, submitit_local",
            _basic("submitit_local"),
            False,
        ),
    )
}


@dataclass(frozen=True)
class Measurement:
    """What one sweep took; times in seconds."""

    side: Side
    trials: int
    wall: float
    first: float  # process start -> first task start
    starts: tuple[float, ...]  # task start times, relative to the process start, sorted
    last_end: float  # the last task's end, relative to the process start
    task_wall: float  # sum of the task functions' durations
    task_cpu: float  # sum of the task functions' CPU times
    process_cpu: float  # the sweeping process's own CPU time (user + system)
    phases: dict[str, float]  # wall seconds the sweeping process spent in each timed phase

    @property
    def gap(self) -> float:
        """Wall time between consecutive jobs that no task accounts for, per trial."""
        if self.trials < 2:
            return float("nan")
        span = self.last_end - self.starts[0]
        return (span - self.task_wall) / (self.trials - 1)

    @property
    def total(self) -> float:
        """``(wall - sum of task durations) / N``: start-up and shut-down included."""
        return (self.wall - self.task_wall) / self.trials

    @property
    def driver_cpu(self) -> float:
        """The sweeping process's CPU per trial, less what the tasks used in it."""
        own = self.process_cpu - (self.task_cpu if self.side.in_process else 0.0)
        return own / self.trials


def run_side(side: Side, n: int, workdir: Path, profile: Path | None = None) -> Measurement:
    """Run ``side``'s sweep of ``n`` jobs in a fresh process and measure it."""
    tag = f"{side.key}-{n}" + ("-profiled" if profile else "")
    times = workdir / f"{tag}.times"
    rusage = workdir / f"{tag}.rusage"
    sweep_dir = workdir / tag
    env = dict(os.environ, DETFLOW_BENCH_TIMES=str(times), DETFLOW_BENCH_RUSAGE=str(rusage))
    env["DETFLOW_TENSORBOARD"] = "0"  # no event files: the task stays a no-op
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += [str(APP), "-m", *side.arguments(n), f"hydra.sweep.dir={sweep_dir}"]
    with open(workdir / f"{tag}.log", "wb") as output:
        began = time.time()
        code = subprocess.call(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
        wall = time.time() - began
    rows = [line.split() for line in times.read_text().splitlines()] if times.exists() else []
    if code != 0 or len(rows) != n:
        tail = (workdir / f"{tag}.log").read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(
            f"{side.label}: exit status {code}, {len(rows)} of {n} jobs ran; log tail:\n"
            + "\n".join(tail)
        )
    spans = sorted((float(r[0]) - began, float(r[1]) - began, float(r[2])) for r in rows)
    usage = json.loads(rusage.read_text())
    measurement = Measurement(
        side=side,
        trials=n,
        wall=wall,
        first=spans[0][0],
        starts=tuple(s for s, _, _ in spans),
        task_wall=sum(e - s for s, e, _ in spans),
        task_cpu=sum(c for _, _, c in spans),
        process_cpu=float(usage["user"]) + float(usage["system"]),
        phases={str(k): float(v) for k, v in usage["phases"].items()},
        last_end=max(e for _, e, _ in spans),
    )
    return measurement


# -- detflow's driver alone, without Hydra -----------------------------------------------------
class InstantLauncher:
    """A :class:`~detflow._search.driver.TrialLauncher` whose jobs end as they start.

    A started job writes the ``result.json`` a one-batch trial would (timed apart, as "task").
    """

    def __init__(self, sweep_dir: Path) -> None:
        self.sweep_dir = sweep_dir
        self.started: list[int] = []
        self.task_seconds = 0.0

    def start(self, trial_id: int, overrides: list[str]) -> None:
        began = time.perf_counter()
        directory = self.sweep_dir / str(trial_id)
        directory.mkdir(parents=True, exist_ok=True)
        metric = trial_id / 7
        TrialResult(
            RunEnd.COMPLETED,
            records=1,
            batches=1,
            steps=1,
            epochs=1,
            target_batches=1,
            batches_per_epoch=None,
            global_batch_size=1,
            aggregation_frequency=1,
            length=Fraction(1),
            unit="batches",
            metric=metric,
            best_metric=metric,
            validation={"validation_loss": metric},
        ).write(directory)
        self.task_seconds += time.perf_counter() - began
        self.started.append(trial_id)

    def wait(self) -> list[TrialOutcome]:
        ended, self.started = self.started, []
        return [TrialOutcome(trial_id) for trial_id in ended]


@dataclass(frozen=True)
class DriverTiming:
    """One Hydra-free :class:`SweepDriver` run; seconds per trial."""

    trials: int
    per_trial: float  # driver wall per trial, the instant "task" excluded
    cpu: float  # driver CPU per trial (``time.process_time``), the "task" included
    fsyncs: float  # os.fsync calls per trial
    save_state: float  # of which in _save_state (searcher.json + results.csv, atomic + fsync)
    results_csv: float  # of which building results.csv (re-reads every result.json)
    fsync: float  # of which in os.fsync


@contextmanager
def _timed(owner: Any, name: str, totals: dict[str, float]) -> Iterator[None]:
    """Accumulate the wall time spent in ``owner.name`` into ``totals[name]``, and count the
    calls in ``totals[name + " calls"]``."""
    original = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - began
            totals[f"{name} calls"] = totals.get(f"{name} calls", 0.0) + 1

    setattr(owner, name, timed)
    try:
        yield
    finally:
        setattr(owner, name, original)


def time_driver(n: int, workdir: Path) -> DriverTiming:
    """Run a random search of ``n`` instant trials through :class:`SweepDriver`."""
    sweep_dir = workdir / f"driver-{n}"
    searcher = RandomSearcher({"x": Choice(tuple(range(n)))}, max_length=1, max_trials=n, seed=0)
    launcher = InstantLauncher(sweep_dir)

    def overrides_for(job: Job) -> list[str]:
        return [f"++x={job.hparams['x']}", f"hydra.sweep.subdir={job.trial_id}"]

    driver = SweepDriver(searcher, launcher, sweep_dir, overrides_for, 1, "batches")
    totals: dict[str, float] = {}
    with (
        _timed(driver, "_save_state", totals),
        _timed(driver, "results_csv", totals),
        _timed(os, "fsync", totals),
    ):
        began, cpu_began = time.perf_counter(), time.process_time()
        summary = driver.run()
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    completed = summary.count(TrialStatus.COMPLETED)
    if completed != n:
        raise RuntimeError(f"driver benchmark: {completed} of {n} completed")
    return DriverTiming(
        trials=n,
        per_trial=(wall - launcher.task_seconds) / n,
        cpu=cpu / n,
        fsyncs=totals.get("fsync calls", 0.0) / n,
        save_state=totals.get("_save_state", 0.0) / n,
        results_csv=totals.get("results_csv", 0.0) / n,
        fsync=totals.get("fsync", 0.0) / n,
    )


@dataclass(frozen=True)
class InProcess:
    """Row ``sweep_inprocess_ms_per_trial``: detflow's in-process overhead per trial (ms)
    and Hydra BasicSweeper's (the baseline), on the same sweep of no-op trials."""

    value: float
    baseline: float
    trials: int
    id: str = "sweep_inprocess_ms_per_trial"
    unit: str = "ms"
    target: str = f"<= {TARGET_GAP_MS:.0f} ms"

    @property
    def passed(self) -> bool:
        return self.value <= TARGET_GAP_MS


def measure_inprocess(quick: bool, workdir: Path) -> InProcess:
    """Both in-process sweeps (N=200, 60 with ``quick``), Hydra's first."""
    n = 60 if quick else 200
    hydra = run_side(SIDES["hydra"], n, workdir)
    ours = run_side(SIDES["detflow"], n, workdir)
    return InProcess(ours.gap * 1e3, hydra.gap * 1e3, n)


# -- the profile ------------------------------------------------------------------------------
#: (path suffix, function) -> label, for the profile's named rows.
NAMED = {
    ("detflow/_hydra/sweeper.py", "run_sweep"): "run_sweep (the sweeper, start to end)",
    ("detflow/_hydra/sweeper.py", "_validate_points"): "  validate every point (load_config x N)",
    ("detflow/_search/driver.py", "run"): "  SweepDriver.run (the search loop)",
    ("detflow/_search/driver.py", "_save_state"): "    _save_state (2 per trial)",
    ("detflow/_core/files.py", "write_atomic"): "      write_atomic (fsync file + dir)",
    ("~", "<built-in method posix.fsync>"): "        os.fsync (driver and task)",
    ("detflow/_search/searchers.py", "state_dict"): "      Searcher.state_dict",
    ("detflow/_search/driver.py", "results_csv"): "      results_csv",
    ("detflow/_search/driver.py", "read_result"): "        read_result (result.json)",
    ("detflow/_search/searchers.py", "trials"): "        Searcher.trials",
    ("hydra/_internal/core_plugins/basic_launcher.py", "launch"): "    BasicLauncher.launch",
    ("hydra/_internal/config_loader_impl.py", "load_sweep_config"): "      compose the config",
    ("detflow/_hydra/derive.py", "compose"): "      derive the config (compose once)",
    ("hydra/core/utils.py", "run_job"): "      run_job (job dir, logging, yaml)",
    ("bench/_sweep_app.py", "task"): "        the task (init + 1-batch fit)",
}


def profile_rows(path: Path, trials: int) -> list[tuple[str, float, int]]:
    """(label, cumulative seconds, calls) of the :data:`NAMED` functions in a profile."""
    stats: Any = pstats.Stats(str(path))
    found: dict[str, tuple[float, int]] = {}
    for (filename, _line, function), (_cc, calls, _tt, cumulative, _callers) in stats.stats.items():
        for (suffix, name), label in NAMED.items():
            if function == name and filename.endswith(suffix):
                old = found.get(label, (0.0, 0))
                found[label] = (old[0] + cumulative, old[1] + calls)
    return [(label, *found.get(label, (0.0, 0))) for label in NAMED.values()]


def top_costs(path: Path, limit: int) -> list[tuple[str, float, float, int]]:
    """The ``limit`` functions with the most own time: (where, own s, cumulative s, calls)."""
    stats: Any = pstats.Stats(str(path))
    rows = []
    for (filename, line, function), (_cc, calls, own, cumulative, _c) in stats.stats.items():
        where = f"{_short(filename)}:{line}({function})" if line else function
        rows.append((where, own, cumulative, calls))
    rows.sort(key=lambda row: -row[1])
    return rows[:limit]


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- output -----------------------------------------------------------------------------------
def fsync_latency(directory: Path, repeats: int = 20) -> float:
    """Median seconds of one small write + ``os.fsync`` in ``directory``."""
    samples = []
    path = directory / "fsync-probe"
    with open(path, "wb") as handle:
        for _ in range(repeats):
            handle.write(b"x" * 512)
            handle.flush()
            began = time.perf_counter()
            os.fsync(handle.fileno())
            samples.append(time.perf_counter() - began)
    path.unlink()
    samples.sort()
    return samples[len(samples) // 2]


def _ratio(value: float, base: float | None) -> str:
    return "-" if base is None or base <= 0 else f"{value / base:.2f}x"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def render(measurements: list[Measurement]) -> list[str]:
    by_key = {(m.side.key, m.trials): m for m in measurements}
    header = [
        "sweep",
        "N",
        "to 1st trial",
        "vs Hydra",
        "overhead/trial",
        "vs Hydra",
        "total/trial",
        "driver CPU/trial",
        "task/trial",
        "wall",
        f"target 1st <= {TARGET_FIRST_S:.0f} s",
        f"target <= {TARGET_GAP_MS:.0f} ms",
    ]
    rows = []
    for m in measurements:
        base = by_key.get((m.side.baseline, m.trials)) if m.side.baseline else None
        gated = m.side.in_process and m.side.key.startswith("detflow")
        rows.append(
            [
                m.side.label,
                str(m.trials),
                f"{m.first:.2f} s",
                _ratio(m.first, base.first if base else None),
                f"{m.gap * 1e3:.1f} ms",
                _ratio(m.gap, base.gap if base else None),
                f"{m.total * 1e3:.1f} ms",
                f"{m.driver_cpu * 1e3:.1f} ms",
                f"{m.task_wall / m.trials * 1e3:.1f} ms",
                f"{m.wall:.1f} s",
                _verdict(m.first <= TARGET_FIRST_S) if gated else "-",
                _verdict(m.gap * 1e3 <= TARGET_GAP_MS) if gated else "-",
            ]
        )
    return table(header, rows)


def render_breakdown(measurements: list[Measurement]) -> list[str]:
    """Where an in-process sweep's time went, from the phases the app timed (wall, per trial)."""
    header = [
        "sweep",
        "N",
        "compose/trial",
        "run_job - task/trial",
        "detflow _save_state/trial",
        "other/trial",
        "up-front validation",
    ]
    rows = []
    for m in measurements:
        if not m.side.in_process:
            continue
        spent = m.phases
        # BasicSweeper's up-front validation composes through load_sweep_config too.
        # detflow derives each job's config (compose once); Hydra composes each in full.
        compose = spent.get("derive") or spent.get("compose", 0.0) - spent.get("validate", 0.0)
        run_job = spent.get("run_job", 0.0) - m.task_wall
        save = spent.get("save_state", 0.0)
        validation = spent.get("validate", 0.0) + spent.get("validate_points", 0.0)
        other = m.wall - m.task_wall - compose - run_job - save - validation
        rows.append(
            [
                m.side.label,
                str(m.trials),
                f"{compose / m.trials * 1e3:.1f} ms",
                f"{run_job / m.trials * 1e3:.1f} ms",
                f"{save / m.trials * 1e3:.1f} ms",
                f"{other / m.trials * 1e3:.1f} ms",
                f"{validation:.2f} s",
            ]
        )
    return table(header, rows)


def render_driver(timings: list[DriverTiming]) -> list[str]:
    header = [
        "N",
        "driver/trial",
        "driver CPU/trial",
        "_save_state/trial",
        "results_csv/trial",
        "fsync/trial",
        "fsyncs/trial",
    ]
    rows = [
        [
            str(t.trials),
            f"{t.per_trial * 1e3:.2f} ms",
            f"{t.cpu * 1e3:.2f} ms",
            f"{t.save_state * 1e3:.2f} ms",
            f"{t.results_csv * 1e3:.2f} ms",
            f"{t.fsync * 1e3:.2f} ms",
            f"{t.fsyncs:.0f}",
        ]
        for t in timings
    ]
    return table(header, rows)


def render_profile(profiles: dict[int, Path]) -> list[str]:
    sizes = sorted(profiles)
    named = {n: profile_rows(path, n) for n, path in profiles.items()}
    header = ["function (cumulative)"]
    for n in sizes:
        header += [f"N={n} calls", f"N={n} ms/trial"]
    if len(sizes) > 1:
        header.append(f"growth {sizes[0]}->{sizes[-1]}")
    rows = []
    for i, label in enumerate(NAMED.values()):
        row = [label]
        per_trial = []
        for n in sizes:
            _, seconds, calls = named[n][i]
            per_trial.append(seconds / n)
            row += [str(calls), f"{seconds / n * 1e3:.2f}"]
        if len(sizes) > 1:
            row.append(_ratio(per_trial[-1], per_trial[0]))
        rows.append(row)
    lines = table(header, rows)
    biggest = sizes[-1]
    lines += ["", f"top own-time functions, N={biggest} (under cProfile):"]
    top = top_costs(profiles[biggest], 15)
    lines += table(
        ["function", "own s", "cumulative s", "calls"],
        [[w, f"{own:.2f}", f"{cum:.2f}", str(calls)] for w, own, cum, calls in top],
    )
    return lines


# -- main -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=1000, help="jobs per in-process sweep")
    parser.add_argument(
        "--local-trials",
        type=int,
        default=50,
        help="jobs per sweep with a process per trial (default 50; 0 skips them)",
    )
    parser.add_argument(
        "--small",
        type=int,
        default=None,
        help="a second, smaller detflow sweep size, for the trend (default: trials / 5)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="only cProfile the detflow sweep (basic launcher) at both sizes",
    )
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=sorted(SIDES),
        default=list(SIDES),
        help="which sweeps to run (default: all)",
    )
    parser.add_argument(
        "--keep", type=Path, default=None, help="keep sweep directories, logs and profiles here"
    )
    args = parser.parse_args(argv)
    if args.trials < 2 or args.local_trials < 0:
        parser.error("--trials must be >= 2 and --local-trials >= 0")
    small = args.small if args.small is not None else max(2, args.trials // 5)
    sizes = sorted({small, args.trials})

    with tempfile.TemporaryDirectory(prefix="detflow-sweep-bench-") as scratch:
        workdir = args.keep or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        workdir = workdir.resolve()
        print(f"machine: {machine()}")
        print(f"fsync latency in {workdir}: {fsync_latency(workdir) * 1e3:.1f} ms (median)")
        print()

        if args.profile:
            profiles: dict[int, Path] = {}
            for n in sizes:
                path = workdir / f"detflow-{n}.prof"
                print(f"profiling detflow, N={n} ...", file=sys.stderr, flush=True)
                run_side(SIDES["detflow"], n, workdir, profile=path)
                profiles[n] = path
            print("cProfile of the detflow sweep (basic launcher), ms per trial:")
            for line in render_profile(profiles):
                print(line)
            return 0

        print("detflow's SweepDriver alone (no Hydra; a job ends as soon as it starts):")
        for line in render_driver([time_driver(n, workdir) for n in sizes]):
            print(line)
        print()

        plan: list[tuple[str, int]] = [("hydra", args.trials)]
        plan += [("detflow", n) for n in sizes]
        if args.local_trials:
            local = ("hydra_local", "submitit_local", "detflow_local", "detflow_local_spawn")
            plan += [(key, args.local_trials) for key in local]
        plan = [(key, n) for key, n in plan if key in args.sides]
        measurements = []
        for key, n in plan:
            print(f"running {SIDES[key].label}, N={n} ...", file=sys.stderr, flush=True)
            measurements.append(run_side(SIDES[key], n, workdir))
        print("sweeps of no-op jobs (init + 1-batch fit), one job at a time:")
        for line in render(measurements):
            print(line)
        print()
        print(
            "to 1st trial: process start -> first task start. overhead/trial: wall between "
            "consecutive jobs not spent in a task, (last end - first start - sum of tasks) / "
            "(N - 1); with detflow_local it is the per-trial launch cost (a Python process per "
            "trial). total/trial: (wall - sum of tasks) / N. driver CPU/trial: the sweeping "
            "process's CPU, less the tasks' when in-process, / N. Targets apply to detflow "
            "in-process."
        )
        print()
        print("in-process sweeps, where the time went (wall, per trial):")
        for line in render_breakdown(measurements):
            print(line)
        print(
            "compose: Hydra's load_sweep_config per job at launch (BasicSweeper composes "
            "each job once more up front, its validation, counted apart; detflow derives "
            "each job's config from one composed per sweep); run_job - task: "
            "Hydra's job set-up (job dir, logging, .hydra/*.yaml); detflow _save_state: "
            "searcher.json + results.csv; other: the rest (start-up, imports, sweeper and "
            "launcher code, shut-down)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
