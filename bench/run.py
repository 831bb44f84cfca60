"""detflow's benchmark suite: every benchmark, one table of figures against baselines.

Run from the repository root (``pip install -e ".[bench]"`` for the baselines)::

    python -m bench                 # the whole suite, ~6-9 min on 2 CPUs
    python -m bench --only startup harness
    python -m bench --quick         # smaller sizes, ~3 min: a smoke run, not for the record

Each row is one figure of detflow's, its baseline measured in the same run, their ratio and
the target. The benchmarks are the modules of this package, at sizes chosen to fit the suite
in under ten minutes; run a module alone for its full report (``python -m bench.startup``,
``bench.harness_overhead``, ``bench.sweep_overhead``, ``bench.search_quality``,
``bench.slurm_submit``). The Slurm submission benchmark is not part of the suite: it needs a
running Slurm and takes ~5 min alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import harness_overhead, startup, sweep_overhead
from bench._common import machine, table

SUITES = ("startup", "harness", "sweep", "local", "asha")


@dataclass(frozen=True)
class Row:
    """One figure: detflow's value, the baseline's, and the target on the ratio or value."""

    what: str
    value: float
    unit: str
    baseline_label: str = "-"
    baseline: float | None = None
    target: str = "-"
    passed: bool | None = None

    def cells(self) -> list[str]:
        ratio = "-" if not self.baseline else f"{self.value / self.baseline:.2f}x"
        base = "-" if self.baseline is None else _fmt(self.baseline, self.unit)
        verdict = "-" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return [
            self.what,
            _fmt(self.value, self.unit),
            self.baseline_label,
            base,
            ratio,
            self.target,
            verdict,
        ]


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:.3f} {unit}" if unit == "s" else f"{value:.0f} {unit}"


# -- the benchmarks -------------------------------------------------------------------------
def bench_startup(work: Path, quick: bool) -> list[Row]:
    timings = startup.measure(5 if quick else 10, work)
    by_label = {timing.label: timing for timing in timings}
    return [
        Row(
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
    return [
        Row(
            "harness: overhead per batch (INFO logging)",
            overhead,
            "ns",
            "raw loop per batch",
            raw.best,
            f"<= {harness_overhead.TARGET_NS:.0f} ns",
            overhead <= harness_overhead.TARGET_NS,
        )
    ]


def bench_sweep(work: Path, quick: bool) -> list[Row]:
    n = 60 if quick else 200
    first_n = 300 if quick else 1000
    sides = sweep_overhead.SIDES
    hydra = sweep_overhead.run_side(sides["hydra"], n, work)
    ours = sweep_overhead.run_side(sides["detflow"], n, work)
    hydra_first = time_to_first_trial(sides["hydra"], first_n, work)
    ours_first = time_to_first_trial(sides["detflow"], first_n, work)
    driver = sweep_overhead.time_driver(first_n, work)
    target_ms = sweep_overhead.TARGET_GAP_MS
    return [
        Row(
            f"sweep: time to first trial, {first_n}-trial random search",
            ours_first,
            "s",
            "Hydra BasicSweeper",
            hydra_first,
            f"<= {sweep_overhead.TARGET_FIRST_S:.0f} s",
            ours_first <= sweep_overhead.TARGET_FIRST_S,
        ),
        Row(
            f"sweep: overhead per trial in-process, N={n}",
            ours.gap * 1e3,
            "ms",
            "Hydra BasicSweeper",
            hydra.gap * 1e3,
            f"<= {target_ms:.0f} ms",
            ours.gap * 1e3 <= target_ms,
        ),
        Row(
            f"sweep: detflow's own driver cost per trial, N={first_n}",
            driver.per_trial * 1e3,
            "ms",
            "(Hydra-free driver)",
            None,
            f"<= {target_ms:.0f} ms",
            driver.per_trial * 1e3 <= target_ms,
        ),
    ]


def bench_local(work: Path, quick: bool) -> list[Row]:
    n = 10 if quick else 20
    sides = sweep_overhead.SIDES
    submitit = sweep_overhead.run_side(sides["submitit_local"], n, work)
    fork = sweep_overhead.run_side(sides["detflow_local"], n, work)
    spawn = sweep_overhead.run_side(sides["detflow_local_spawn"], n, work)
    return [
        Row(
            "local launcher: per-trial overhead (fork server, the default)",
            fork.gap * 1e3,
            "ms",
            "submitit_local",
            submitit.gap * 1e3,
            "<= 200 ms",
            fork.gap * 1e3 <= 200,
        ),
        Row(
            "local launcher: per-trial overhead, start_method=spawn",
            spawn.gap * 1e3,
            "ms",
            "submitit_local",
            submitit.gap * 1e3,
        ),
    ]


def bench_asha(work: Path, quick: bool) -> list[Row]:
    from bench import search_quality

    try:
        import mfpbench  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return [Row("ASHA compute ratio: skipped, pip install mf-prior-bench", 0, "x")]
    seeds, budget = (6, 25.0) if quick else (20, 50.0)
    algorithms = ["random", "asha", "asha3"]
    tasks = [("mfh6_good", a, seed, budget, 4) for a in algorithms for seed in range(seeds)]
    curves = search_quality._run_all(tasks, os.cpu_count() or 1, search_quality.run_one)
    summaries = {s.algorithm: s for s in search_quality.summarise(curves, budget, 400)}
    random = summaries["random"]
    goal = random.final[1]
    random_reach = random.reach(goal) or budget
    rows = []
    for algorithm in ("asha", "asha3"):
        reach = summaries[algorithm].reach(goal)
        ratio = (reach if reach is not None else float("inf")) / random_reach
        rows.append(
            Row(
                f"ASHA: compute to random's final regret, {search_quality.LABELS[algorithm]}",
                ratio,
                "x",
                "random search (= 1)",
                None,
                "<= 0.33",
                ratio <= 1 / 3,
            )
        )
    return rows


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
