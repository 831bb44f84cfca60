"""detflow's benchmark suite: every benchmark, one table of figures against baselines.

Run from the repository root (``pip install -e ".[bench]"`` for the baselines)::

    python -m bench                 # the whole suite, ~10 min on 2 CPUs
    python -m bench --only startup harness
    python -m bench --only sweep driver --json figures.json
    python -m bench --quick         # smaller sizes, ~4 min: a smoke run, not for the record

Each row is one figure of detflow's, its baseline measured in the same run, their ratio and
the target. ``--json FILE`` writes every row as ``{"id", "value", "unit", "baseline",
"ratio", "target", "verdict"}``; the ids are stable (``bench/README.md`` lists them). The
benchmarks are the modules of this package, at sizes chosen to fit the suite in about ten
minutes; run a module alone for its full report (``python -m bench.startup``,
``bench.harness_overhead``, ``bench.sweep_overhead``, ``bench.driver_scale``,
``bench.search_quality``, ``bench.slurm_submit``). The Slurm submission benchmark is not part
of the suite: it needs a running Slurm and takes ~5 min alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import driver_scale, harness_overhead, startup, sweep_overhead
from bench._common import machine, table

SUITES = ("startup", "harness", "sweep", "driver", "local", "asha")


@dataclass(frozen=True)
class Row:
    """One figure: detflow's value, the baseline's, and the target on the ratio or value.

    ``id`` names the figure in ``--json`` output, the same from run to run.

    >>> Row("harness_ns_per_batch", "harness", 700.0, "ns", "raw", 50.0, "<= 1000 ns", True).json()
    {'id': 'harness_ns_per_batch', 'value': 700.0, 'unit': 'ns', 'baseline': 50.0, \
'ratio': 14.0, 'target': '<= 1000 ns', 'verdict': 'PASS'}
    """

    id: str
    what: str
    value: float
    unit: str
    baseline_label: str = "-"
    baseline: float | None = None
    target: str = "-"
    passed: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None

    @property
    def verdict(self) -> str | None:
        return None if self.passed is None else ("PASS" if self.passed else "FAIL")

    def cells(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        base = "-" if self.baseline is None else _fmt(self.baseline, self.unit)
        return [
            self.what,
            _fmt(self.value, self.unit),
            self.baseline_label,
            base,
            ratio,
            self.target,
            self.verdict or "-",
        ]

    def json(self) -> dict[str, Any]:
        """The row as ``--json`` writes it (a value that is not finite as ``null``)."""
        return {
            "id": self.id,
            "value": _finite(self.value),
            "unit": self.unit,
            "baseline": _finite(self.baseline),
            "ratio": _finite(self.ratio),
            "target": None if self.target == "-" else self.target,
            "verdict": self.verdict,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def slug(text: str) -> str:
    """An id made of a label: lower case, words joined by ``_``.

    >>> slug("detflow app (init + 1-batch fit)")
    'detflow_app_init_1_batch_fit'
    """
    return "_".join(re.findall(r"[a-z0-9]+", text.lower()))


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    if unit == "s" or (unit == "ms" and abs(value) < 10):
        return f"{value:.3f} {unit}"
    return f"{value:.0f} {unit}"


# -- the benchmarks -------------------------------------------------------------------------
def bench_startup(work: Path, quick: bool) -> list[Row]:
    timings = startup.measure(5 if quick else 10, work)
    by_label = {timing.label: timing for timing in timings}
    return [
        Row(
            f"startup_{slug(timing.label)}_s",
            f"start-up: {timing.label}",
            timing.median,
            "s",
            timing.baseline,
            by_label[timing.baseline].median,
            f"<= {startup.TARGET}x",
            timing.median / by_label[timing.baseline].median <= startup.TARGET,
        )
        for timing in timings
        if timing.baseline is not None
    ]


def bench_harness(work: Path, quick: bool) -> list[Row]:
    batches = 100_000 if quick else 300_000
    trial = harness_overhead.NoOpTrial(1000)
    variant = harness_overhead.Variant("INFO", logging.INFO, None)
    os.chdir(work)
    raw, (timing,) = harness_overhead.measure(trial, batches, 3, [variant])
    overhead = timing.best - raw.best
    rows = [
        Row(
            "harness_ns_per_batch",
            "harness: overhead per batch (INFO logging)",
            overhead,
            "ns",
            "raw loop per batch",
            raw.best,
            f"<= {harness_overhead.TARGET_NS:.0f} ns",
            overhead <= harness_overhead.TARGET_NS,
        )
    ]
    lightning = harness_overhead.lightning_timing(10_000 if quick else 20_000, 1000, 3)
    target = f"detflow <= 1/{harness_overhead.LIGHTNING_RATIO:g} of it"
    if isinstance(lightning, str):  # not installed, or it refused the setup: a failed row
        rows.append(
            Row("lightning_ns_per_batch", lightning, math.nan, "ns", "-", None, target, False)
        )
        return rows
    theirs = lightning.per_batch - raw.best
    rows.append(
        Row(
            "lightning_ns_per_batch",
            f"harness: {lightning.label} overhead per batch (no progress bar, logger, "
            "checkpoints, summary)",
            theirs,
            "ns",
            "detflow's overhead per batch",
            overhead,
            target,
            overhead * harness_overhead.LIGHTNING_RATIO <= theirs,
        )
    )
    return rows


def bench_sweep(work: Path, quick: bool) -> list[Row]:
    n = 60 if quick else 200
    first_n = 300 if quick else 1000
    sides = sweep_overhead.SIDES
    hydra = sweep_overhead.run_side(sides["hydra"], n, work)
    ours = sweep_overhead.run_side(sides["detflow"], n, work)
    hydra_first = time_to_first_trial(sides["hydra"], first_n, work)
    ours_first = time_to_first_trial(sides["detflow"], first_n, work)
    target_ms = sweep_overhead.TARGET_GAP_MS
    return [
        Row(
            "sweep_first_trial_s",
            f"sweep: time to first trial, {first_n}-trial random search",
            ours_first,
            "s",
            "Hydra BasicSweeper",
            hydra_first,
            f"<= {sweep_overhead.TARGET_FIRST_S:.0f} s",
            ours_first <= sweep_overhead.TARGET_FIRST_S,
        ),
        Row(
            "sweep_inprocess_ms_per_trial",
            f"sweep: overhead per trial in-process, N={n}",
            ours.gap * 1e3,
            "ms",
            "Hydra BasicSweeper",
            hydra.gap * 1e3,
            f"<= {target_ms:.0f} ms",
            ours.gap * 1e3 <= target_ms,
        ),
    ]


def bench_driver(work: Path, quick: bool) -> list[Row]:
    """The Hydra-free driver at 1,000 and 10,000 instant trials (:mod:`bench.driver_scale`)."""
    searchers = ("random",) if quick else driver_scale.SEARCHERS
    small, large = driver_scale.SIZES
    fsync_before = driver_scale.fsync_latency(work)
    scales = driver_scale.run_all(searchers, (small, large), work, small)
    fsync_after = driver_scale.fsync_latency(work)
    rows: list[Row] = [
        Row(
            "driver_fsync_ms",
            "driver: the disk's fsync of an append (each save waits for one), after the runs",
            fsync_after * 1e3,
            "ms",
            "the same before the runs",
            fsync_before * 1e3,
        )
    ]
    for scale in scales:
        name = "" if scale.searcher == "random" else f"{scale.searcher}_"
        for trials in (small, large):
            run = scale.journal[trials]
            base, measured = scale.baseline_ms(trials)
            growth = scale.growth(trials)
            target = f"<= {driver_scale.TARGET_MS:g} ms"
            passed = run.ms_per_trial <= driver_scale.TARGET_MS
            if trials == large:
                target += f", <= {driver_scale.TARGET_FLAT:g}x N={small:,}'s ({growth:.2f}x)"
                passed = passed and growth <= driver_scale.TARGET_FLAT
            rows.append(
                Row(
                    f"driver_{name}ms_per_trial_n{trials}",
                    f"driver: {scale.searcher} search, cost per trial, N={trials:,}",
                    run.ms_per_trial,
                    "ms",
                    "whole state per save" + ("" if measured else " (estimated)"),
                    base,
                    target,
                    passed,
                )
            )
        for trials in (small, large):
            run = scale.journal[trials]
            rows.append(
                Row(
                    f"driver_{name}ms_per_trial_without_fsync_n{trials}",
                    f"driver: {scale.searcher} search, cost per trial less fsync waits, "
                    f"N={trials:,}",
                    run.ms_per_trial_without_fsync,
                    "ms",
                    "-",
                    None,
                )
            )
        rows.append(
            Row(
                f"driver_{name}peak_rss_mb_n{large}",
                f"driver: {scale.searcher} search, peak memory, N={large:,}",
                scale.journal[large].rss_peak_mb,
                "MB",
                f"the same at N={small:,}",
                scale.journal[small].rss_peak_mb,
            )
        )
    return rows


def bench_local(work: Path, quick: bool) -> list[Row]:
    n = 10 if quick else 20
    sides = sweep_overhead.SIDES
    submitit = sweep_overhead.run_side(sides["submitit_local"], n, work)
    fork = sweep_overhead.run_side(sides["detflow_local"], n, work)
    spawn = sweep_overhead.run_side(sides["detflow_local_spawn"], n, work)
    return [
        Row(
            "local_fork_ms_per_trial",
            "local launcher: per-trial overhead (fork server, the default)",
            fork.gap * 1e3,
            "ms",
            "submitit_local",
            submitit.gap * 1e3,
            "<= 200 ms",
            fork.gap * 1e3 <= 200,
        ),
        Row(
            "local_spawn_ms_per_trial",
            "local launcher: per-trial overhead, start_method=spawn",
            spawn.gap * 1e3,
            "ms",
            "submitit_local",
            submitit.gap * 1e3,
        ),
        trial_start_row(quick),
    ]


#: a 1-batch torch trial's start-to-result in a local sweep, median of 6 (issue 16)


def trial_start_row(quick: bool) -> Row:
    """``local_torch_trial_start_s``: :func:`bench.trial_start.measure`, warm (the fork server
    preloads the trial module) against cold (each trial imports torch), same run."""
    from bench import trial_start

    measured = trial_start.measure(quick)
    return Row(
        measured.id,
        "local launcher: 1-batch torch trial, start to result (median)",
        measured.value,
        measured.unit,
        "same sweep, no preload",
        measured.baseline,
        measured.target,
        measured.passed,
    )


#: The lcbench task of the ``asha`` row (the first of bench.lcbench's tuning tasks).
ASHA_TASK = "3945"


def bench_asha(work: Path, quick: bool) -> list[Row]:
    """``asha_lcbench_compute_ratio``: detflow's asha against its random search on one lcbench
    task, simulated by :mod:`bench.search_quality`: the compute asha needs to reach random
    search's median regret at the budget, over the compute random search itself needed."""
    import importlib.util

    from bench import search_quality

    goal = search_quality.TARGET_FRACTION["asha"]
    target = f"<= {float(goal):.2f}"
    what = f"ASHA: compute to random's final regret, lcbench task {ASHA_TASK}"
    missing = [n for n in ("yahpo_gym", "onnxruntime") if importlib.util.find_spec(n) is None]
    if missing:
        what += f': skipped, {" and ".join(missing)} not installed (pip install -e ".[bench]")'
        return [Row("asha_lcbench_compute_ratio", what, math.nan, "x", "-", None, target, False)]
    from bench import lcbench

    seeds, budget, workers, metric = (5 if quick else 10), 30.0, 4, "val_accuracy"
    best = lcbench.optimum(ASHA_TASK, metric)
    runs = [
        search_quality.Run("lcbench", algorithm, seed, budget, workers, ASHA_TASK, metric, best)
        for algorithm in ("random", "asha")
        for seed in range(seeds)
    ]
    jobs = min(len(runs), os.cpu_count() or 1)
    curves = search_quality._run_all(runs, jobs, search_quality.run_one)
    summaries = search_quality.summarise(curves, budget, 400)
    found = {r.algorithm: r for r in search_quality.results(summaries, budget, workers, metric)}
    asha, random = found["asha"], found["random"]
    ratio = math.inf if asha.compute_to_reach is None else asha.compute_to_reach
    spent = "never" if asha.compute_to_reach_abs is None else f"{asha.compute_to_reach_abs:.2f}"
    return [
        Row(
            "asha_lcbench_compute_ratio",
            f"{what}, {seeds} seeds, budget {budget:g} trials ({spent} vs random's "
            f"{random.compute_to_reach_abs or budget:.2f}), {search_quality.LABELS['asha']}",
            ratio,
            "x",
            "random search, same run (= 1)",
            None,
            target,
            ratio <= float(goal),
        )
    ]


def time_to_first_trial(side: sweep_overhead.Side, n: int, work: Path) -> float:
    """Seconds from starting ``side``'s sweep of ``n`` trials to its first task starting; the
    sweep is then stopped (the rest of it is measured at a smaller N)."""
    tag = f"first-{side.key}-{n}"
    times = work / f"{tag}.times"
    env = dict(os.environ, DETFLOW_BENCH_TIMES=str(times), DETFLOW_TENSORBOARD="0")
    env.pop("HYDRA_FULL_ERROR", None)
    command = [
        sys.executable,
        str(sweep_overhead.APP),
        "-m",
        *side.arguments(n),
        f"hydra.sweep.dir={work / tag}",
    ]
    with open(work / f"{tag}.log", "wb") as log:
        began = time.time()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=work, env=env, start_new_session=True
        )
        try:
            while not (times.exists() and times.read_text().strip()):
                if process.poll() is not None:
                    raise RuntimeError(f"{side.label} ended before its first trial: see {log.name}")
                time.sleep(0.01)
            first = float(times.read_text().split()[0]) - began
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return first


# -- the suite -------------------------------------------------------------------------------
RUNNERS: dict[str, Callable[[Path, bool], list[Row]]] = {
    "startup": bench_startup,
    "harness": bench_harness,
    "sweep": bench_sweep,
    "driver": bench_driver,
    "local": bench_local,
    "asha": bench_asha,
}


def render(rows: list[Row]) -> list[str]:
    header = ["figure", "detflow", "baseline", "baseline value", "ratio", "target", "verdict"]
    return table(header, [row.cells() for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--only", nargs="+", choices=SUITES, default=list(SUITES))
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every row to FILE, as JSON"
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: list[Row] = []
    began = time.perf_counter()
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="detflow-bench-") as scratch:
        for name in args.only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            started = time.perf_counter()
            work = Path(scratch) / name
            work.mkdir()
            try:
                rows += RUNNERS[name](work, args.quick)
            finally:
                os.chdir(cwd)
            print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    print()
    print("\n".join(render(rows)))
    if args.json is not None:
        args.json.write_text(json.dumps([row.json() for row in rows], indent=2) + "\n")
        print(f"\nwrote {len(rows)} rows to {args.json}")
    verdicts = [row.passed for row in rows if row.passed is not None]
    print()
    print(
        f"{sum(verdicts)} of {len(verdicts)} targets met; suite took "
        f"{time.perf_counter() - began:.0f} s; load average at end: "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        "Medians of alternated runs, except the harness (best of 3 runs, the noise floor on a "
        "shared machine). See bench/README.md for what each figure measures."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
