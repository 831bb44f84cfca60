"""Search quality: detflow's ASHA vs random search vs Optuna (TPE + Hyperband) on MFHartmann6.

Run from the repository root (needs ``pip install optuna mf-prior-bench``; nothing is
downloaded)::

    python -m bench.search_quality                     # budget 50, 20 seeds, 2 benchmarks
    python -m bench.search_quality --quick             # budget 25, 10 seeds
    python -m bench.search_quality --plot bench/search_quality.png

The benchmarks are ``mfh6_good`` and ``mfh6_terrible`` of ``mf-prior-bench``: the 6-D
Hartmann function with a fidelity ``z`` in 1..100; below ``z = 100`` the function is biased
(flattened; at the terrible preset, inverted at the lowest fidelities) and noisy. At
``z = 100`` it is the true, noiseless Hartmann 6.

Each algorithm is driven through its ask/tell interface by a simulator of ``--workers``
workers (default 4). A job "trains" a config from the fidelity it has reached to a higher
one; it costs ``(z_end - z_start) / 100`` of one full-length trial, in simulated time on its
worker, and its result is the benchmark's value at ``z_end``. A free worker asks for the next
job at once. Algorithms:

- **random**: detflow's ``RandomSearcher``, every trial at ``z = 100``;
- **asha**: detflow's :class:`~detflow._search.searchers.AshaSearcher` with detflow's defaults
  (``divisor=4``, ``max_rungs=5``), ``max_length = 100`` in units of ``z``, rounded up to a
  whole ``z`` (the rounding merges equal rungs: rungs at z = 1, 2, 7, 25, 100); a promotion
  continues from the trial's checkpoint, paying only for the extra fidelity;
- **asha (divisor 4, 4 rungs)**: ``max_rungs=4`` (rungs at z = 2, 7, 25, 100);
- **asha (divisor 3)**: ``divisor=3``, ``max_rungs=5`` (rungs at z = 2, 4, 12, 34, 100),
  Optuna's reduction factor;
- **optuna**: Optuna's TPE sampler with its ``HyperbandPruner(min_resource=1,
  max_resource=100, reduction_factor=3)``, ``study.ask`` / ``trial.report`` /
  ``trial.should_prune`` / ``study.tell``; a trial reports at z = 1, 3, 9, 27, 81 (its
  pruner's rungs, the only steps at which it can prune) and 100;
- **optuna TPE, full length**: the same sampler without a pruner, for reference.

The verdicts hold detflow's defaults (``asha``) and each variant to the targets: reach random
search's final regret with at most 1/3 of the compute random search needed for it, and be no
worse than Optuna (TPE + Hyperband) in compute to reach it and in regret at the budget.

The incumbent after each result is the config an algorithm would pick: the best value at the
highest fidelity observed so far (detflow's ``Searcher.best()`` rule; for Optuna it is
``study.best_trial`` once a trial has completed). Its **regret** is its true value at
``z = 100`` minus the benchmark's optimum (``benchmark.optimum`` queried at ``z = 100``).
**Compute** is the worker time spent so far, running jobs included, in full-length trials.
Curves are the median over seeds of the regret at each compute level.
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import detflow
from bench._common import table
from detflow._search.searchers import Job, Searcher, make_searcher
from detflow._search.space import Interval, Space

BENCHMARKS = ("mfh6_good", "mfh6_terrible")
ALGORITHMS = ("random", "asha", "asha_r4", "asha3", "optuna", "tpe")
LABELS = {
    "random": "random (full length)",
    "asha": "detflow asha (divisor 4, 5 rungs)",
    "asha_r4": "detflow asha (divisor 4, 4 rungs)",
    "asha3": "detflow asha (divisor 3, 5 rungs)",
    "optuna": "optuna TPE + Hyperband",
    "tpe": "optuna TPE, full length",
}
#: ASHA variants: name -> (divisor, max_rungs).
ASHA = {"asha": (4, 5), "asha_r4": (4, 4), "asha3": (3, 5)}
TARGET_FRACTION = Fraction(1, 3)


# -- the benchmark ------------------------------------------------------------------------------
class Problem:
    """One seeded mfpbench benchmark: values at a fidelity, regret at the top fidelity."""

    def __init__(self, name: str, seed: int) -> None:
        import mfpbench  # type: ignore[import-untyped]

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.bench: Any = mfpbench.get(name, seed=seed)
        self.name = name
        low, high, _step = self.bench.fidelity_range
        self.z_min, self.z_max = int(low), int(high)
        self.keys: list[str] = list(self.bench.space.keys())
        self.optimum = self.value(dict(self.bench.optimum.as_dict()), self.z_max)
        self._regret: dict[tuple[float, ...], float] = {}

    def value(self, config: dict[str, float], z: int) -> float:
        """The benchmark's value (to minimise) of ``config`` trained to fidelity ``z``."""
        return float(self.bench.query(config, at=z).error)

    def regret(self, config: dict[str, float]) -> float:
        """True value at the top fidelity minus the optimum's."""
        key = tuple(config[k] for k in self.keys)
        if key not in self._regret:
            self._regret[key] = self.value(config, self.z_max) - self.optimum
        return self._regret[key]

    def space(self) -> Space:
        """The benchmark's box as detflow's search space."""
        space: Space = {}
        for key in self.keys:
            hp = self.bench.space[key]
            space[key] = Interval(float(hp.lower), float(hp.upper))
        return space


# -- algorithms behind one interface ------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """A job on one worker: train ``config`` from fidelity ``start`` to ``end``."""

    trial: int
    config: dict[str, float]
    start: int
    end: int
    token: Any = None  # the algorithm's own handle (a detflow Job, an Optuna trial)


class Policy(Protocol):
    """An algorithm as the simulator drives it."""

    def start(self) -> Segment | None:
        """The next job for a free worker, or None if there is none now."""

    def finish(self, segment: Segment, value: float) -> Segment | None:
        """``segment`` reached its end with ``value``; the same worker's next job, if any."""


class DetflowPolicy:
    """A detflow ``Searcher``, lengths in units of the fidelity ``z``."""

    def __init__(self, searcher: Searcher, problem: Problem) -> None:
        self.searcher = searcher
        self.problem = problem
        self.trained: dict[int, int] = {}

    def fidelity(self, length: Fraction) -> int:
        z = math.ceil(length * self.problem.z_max / self.searcher.max_length)
        return min(max(z, self.problem.z_min), self.problem.z_max)

    def start(self) -> Segment | None:
        job = self.searcher.ask()
        if job is None:
            return None
        start = self.trained.get(job.trial_id, 0)
        return Segment(job.trial_id, job.hparams, start, self.fidelity(job.length), job)

    def finish(self, segment: Segment, value: float) -> Segment | None:
        job: Job = segment.token
        self.searcher.tell(job.trial_id, value, job.length)
        self.trained[job.trial_id] = segment.end
        return None


class OptunaPolicy:
    """Optuna's TPE sampler with its Hyperband pruner (or none), through ask / report / tell."""

    def __init__(
        self, problem: Problem, seed: int, reduction_factor: int = 3, prune: bool = True
    ) -> None:
        import optuna
        from optuna.distributions import BaseDistribution, FloatDistribution

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.problem = problem
        self.study = optuna.create_study(
            # HyperbandPruner puts a trial in a bracket by a hash of the study's name and the
            # trial's number: a fixed name makes the run reproducible.
            study_name=f"{problem.name}-{seed}",
            direction="minimize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.HyperbandPruner(
                min_resource=problem.z_min,
                max_resource=problem.z_max,
                reduction_factor=reduction_factor,
            )
            if prune
            else optuna.pruners.NopPruner(),
        )
        space = problem.space()
        self.distributions: dict[str, BaseDistribution] = {
            key: FloatDistribution(dim.low, dim.high)
            for key, dim in space.items()
            if isinstance(dim, Interval)
        }
        steps = {problem.z_max}
        step = problem.z_min
        while prune and step < problem.z_max:
            steps.add(step)
            step *= reduction_factor
        self.steps = sorted(steps)

    def start(self) -> Segment | None:
        trial = self.study.ask(self.distributions)
        config = {key: float(trial.params[key]) for key in self.distributions}
        return Segment(trial.number, config, 0, self.steps[0], trial)

    def finish(self, segment: Segment, value: float) -> Segment | None:
        trial = segment.token
        trial.report(value, segment.end)
        if segment.end >= self.problem.z_max:
            self.study.tell(trial, value)
            return None
        if trial.should_prune():
            self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
            return None
        end = self.steps[self.steps.index(segment.end) + 1]
        return Segment(segment.trial, segment.config, segment.end, end, trial)


def make_policy(algorithm: str, problem: Problem, seed: int, budget: float) -> Policy:
    """The algorithm ``algorithm``, seeded, with trials enough for ``budget``."""
    if algorithm in ("optuna", "tpe"):
        return OptunaPolicy(problem, seed, prune=algorithm == "optuna")
    common: dict[str, Any] = {
        "space": problem.space(),
        "max_length": problem.z_max,
        "max_trials": 1_000_000,  # the compute budget ends the search, not a trial count
        "seed": seed,
        "metric": "value",
        "smaller_is_better": True,
    }
    if algorithm == "random":
        return DetflowPolicy(make_searcher("random", **common), problem)
    divisor, max_rungs = ASHA[algorithm]
    searcher = make_searcher(
        "asha",
        divisor=divisor,
        max_rungs=max_rungs,
        steps_of=lambda length: math.ceil(length),
        **common,
    )
    return DetflowPolicy(searcher, problem)


# -- the simulator ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Curve:
    """One run: after each result, the compute spent so far and the incumbent's regret."""

    benchmark: str
    algorithm: str
    seed: int
    compute: tuple[float, ...]
    regret: tuple[float, ...]
    trials: int  # trials started
    seconds: float  # wall time of the run (the algorithm's own cost, mostly)

    def at(self, compute: float) -> float:
        """The incumbent's regret once ``compute`` was spent (inf before the first result)."""
        best = math.inf
        for spent, regret in zip(self.compute, self.regret, strict=True):
            if spent > compute:
                break
            best = regret
        return best


def simulate(
    policy: Policy, problem: Problem, workers: int, budget: float
) -> tuple[list[float], list[float], int]:
    """Run ``policy`` on ``workers`` simulated workers until ``budget`` compute is spent."""
    running: list[tuple[float, int, float, Segment]] = []  # (end time, seq, start time, job)
    seq = 0
    trials: set[int] = set()
    done_work = 0.0
    best_at: dict[int, tuple[float, int, dict[str, float]]] = {}  # z -> (value, trial, config)
    compute: list[float] = []
    regret: list[float] = []

    def cost(segment: Segment) -> float:
        return (segment.end - segment.start) / problem.z_max

    def push(segment: Segment, now: float) -> None:
        nonlocal seq
        heapq.heappush(running, (now + cost(segment), seq, now, segment))
        trials.add(segment.trial)
        seq += 1

    def fill(now: float) -> None:
        while len(running) < workers:
            segment = policy.start()
            if segment is None:
                return
            push(segment, now)

    fill(0.0)
    while running:
        now, _, _, segment = heapq.heappop(running)
        done_work += cost(segment)
        spent = done_work + sum(now - began for _, _, began, _ in running)
        value = problem.value(segment.config, segment.end)
        entry = (value, segment.trial, segment.config)
        if segment.end not in best_at or entry[:2] < best_at[segment.end][:2]:
            best_at[segment.end] = entry
        incumbent = best_at[max(best_at)][2]
        compute.append(spent)
        regret.append(problem.regret(incumbent))
        following = policy.finish(segment, value)
        if spent >= budget:
            break
        if following is not None:
            push(following, now)
        fill(now)
    return compute, regret, len(trials)


def run_one(task: tuple[str, str, int, float, int]) -> Curve:
    """One (benchmark, algorithm, seed) run; a top-level function for multiprocessing."""
    benchmark, algorithm, seed, budget, workers = task
    began = time.perf_counter()
    problem = Problem(benchmark, seed)
    policy = make_policy(algorithm, problem, seed, budget)
    compute, regret, trials = simulate(policy, problem, workers, budget)
    if isinstance(policy, DetflowPolicy):
        _check_incumbent(policy, problem, regret[-1])
    return Curve(
        benchmark,
        algorithm,
        seed,
        tuple(compute),
        tuple(regret),
        trials,
        time.perf_counter() - began,
    )


def _check_incumbent(policy: DetflowPolicy, problem: Problem, regret: float) -> None:
    """The simulator's incumbent is what ``Searcher.best()`` picks."""
    best = policy.searcher.best()
    if best is None or not math.isclose(problem.regret(best.hparams), regret):
        raise RuntimeError(f"incumbent differs from Searcher.best(): {best}")


# -- summaries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """One algorithm on one benchmark, over seeds."""

    benchmark: str
    algorithm: str
    grid: tuple[float, ...]
    median: tuple[float, ...]  # median regret over seeds at each grid point
    final: tuple[float, float, float]  # 25th, 50th, 75th percentile of the regret at the budget
    trials: float  # median trials started
    seconds: float  # median wall seconds per run

    def reach(self, target: float) -> float | None:
        """The least compute at which the median regret is at most ``target``."""
        for compute, regret in zip(self.grid, self.median, strict=True):
            if regret <= target:
                return compute
        return None


def _quantiles(values: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0], ordered[0], ordered[0]
    q = statistics.quantiles(ordered, n=4, method="inclusive")
    return q[0], statistics.median(ordered), q[2]


def summarise(curves: list[Curve], budget: float, points: int) -> list[Summary]:
    grid = tuple(budget * (i + 1) / points for i in range(points))
    keys = sorted({(c.benchmark, c.algorithm) for c in curves}, key=_order)
    summaries = []
    for benchmark, algorithm in keys:
        runs = [c for c in curves if (c.benchmark, c.algorithm) == (benchmark, algorithm)]
        median = tuple(statistics.median(run.at(x) for run in runs) for x in grid)
        summaries.append(
            Summary(
                benchmark,
                algorithm,
                grid,
                median,
                _quantiles([run.at(budget) for run in runs]),
                statistics.median(run.trials for run in runs),
                statistics.median(run.seconds for run in runs),
            )
        )
    return summaries


def _order(key: tuple[str, str]) -> tuple[int, int]:
    benchmark, algorithm = key
    rank_b = BENCHMARKS.index(benchmark) if benchmark in BENCHMARKS else len(BENCHMARKS)
    return rank_b, ALGORITHMS.index(algorithm)


def render(summaries: list[Summary], budget: float) -> tuple[list[str], list[str]]:
    """The results table and the verdict lines (one pair per ASHA variant and benchmark)."""
    header = [
        "benchmark",
        "algorithm",
        "compute to reach",
        "/ random's",
        "/ budget",
        f"regret at {budget:g}: median [IQR]",
        "trials",
        "s/run",
    ]
    rows = []
    verdicts = []
    for benchmark in dict.fromkeys(s.benchmark for s in summaries):
        group = {s.algorithm: s for s in summaries if s.benchmark == benchmark}
        if "random" not in group:
            continue
        target = group["random"].final[1]
        reach = {algorithm: summary.reach(target) for algorithm, summary in group.items()}
        random_reach = reach["random"] or budget
        for algorithm, summary in group.items():
            got = reach[algorithm]
            q1, q2, q3 = summary.final
            rows.append(
                [
                    benchmark,
                    LABELS[algorithm],
                    "never" if got is None else f"{got:.2f}",
                    "-" if got is None else f"{got / random_reach:.2f}",
                    "-" if got is None else f"{got / budget:.2f}",
                    f"{q2:.3f} [{q1:.3f}, {q3:.3f}]",
                    f"{summary.trials:.0f}",
                    f"{summary.seconds:.1f}",
                ]
            )
        for variant in (a for a in ASHA if a in group):
            got = reach[variant]
            ok = got is not None and got <= random_reach * TARGET_FRACTION
            reached = (
                f"reaches random's final regret {target:.3f} with {got / random_reach:.2f} of "
                f"random's compute ({got:.2f} vs {random_reach:.2f}; "
                if got is not None
                else f"does not reach random's final regret {target:.3f} within the budget ("
            )
            verdicts.append(
                f"{'PASS' if ok else 'FAIL'} {benchmark}, {LABELS[variant]}: {reached}"
                f"target <= {float(TARGET_FRACTION):.2f} of random's compute)"
            )
            if "optuna" in group:
                other = reach["optuna"]
                faster = other is None if got is None else (other is None or got <= other)
                better = group[variant].final[1] <= group["optuna"].final[1]
                verdicts.append(
                    f"{'PASS' if faster and better else 'FAIL'} {benchmark}, {LABELS[variant]} "
                    f"vs optuna: compute to reach it {_fmt(got)} vs {_fmt(other)}; regret at "
                    f"{budget:g} {group[variant].final[1]:.3f} vs {group['optuna'].final[1]:.3f}"
                )
    return table(header, rows, left=2), verdicts


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def plot(summaries: list[Summary], path: str, budget: float) -> None:
    """Median regret against compute, one panel per benchmark (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = list(dict.fromkeys(s.benchmark for s in summaries))
    fig, axes = plt.subplots(1, len(benchmarks), figsize=(6 * len(benchmarks), 4.5), squeeze=False)
    for ax, benchmark in zip(axes[0], benchmarks, strict=True):
        for summary in (s for s in summaries if s.benchmark == benchmark):
            points = [(x, y) for x, y in zip(summary.grid, summary.median, strict=True) if y < 1e9]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.step(xs, ys, where="post", label=LABELS[summary.algorithm])
        ax.set_yscale("log")
        ax.set_xlim(0, budget)
        ax.set_xlabel("compute (full-length trials)")
        ax.set_ylabel("regret at max fidelity (median over seeds)")
        ax.set_title(benchmark)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine() -> str:
    """CPUs, Python and the versions of what is compared."""
    from importlib.metadata import version

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpus} CPUs, Python {platform.python_version()}, detflow {detflow.__version__}, "
        f"optuna {version('optuna')}, mf-prior-bench {version('mf-prior-bench')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--budget", type=float, default=50.0, help="full-length trials of compute")
    parser.add_argument("--seeds", type=int, default=20, help="seeds per algorithm (>= 10)")
    parser.add_argument("--workers", type=int, default=4, help="simulated workers")
    parser.add_argument(
        "--quick", action="store_true", help="budget 25 and 10 seeds (unless given)"
    )
    parser.add_argument(
        "--benchmarks", nargs="+", default=list(BENCHMARKS), help="mfpbench benchmark names"
    )
    parser.add_argument(
        "--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS, help="to compare"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (processes)"
    )
    parser.add_argument("--plot", default=None, help="save a PNG of the median curves here")
    parser.add_argument("--points", type=int, default=400, help="compute grid points")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    budget = 25.0 if args.quick and "--budget" not in given else args.budget
    seeds = 10 if args.quick and "--seeds" not in given else args.seeds
    if budget <= 0 or seeds < 1 or args.workers < 1:
        parser.error("--budget, --seeds and --workers must be positive")
    try:
        import mfpbench  # noqa: F401
        import optuna  # noqa: F401
    except ImportError as exc:
        print(f"Error: {exc.name} is not installed: pip install optuna mf-prior-bench")
        return 2
    logging.getLogger("optuna").setLevel(logging.WARNING)

    print(f"machine: {machine()}")
    print(
        f"budget {budget:g} full-length trials, {args.workers} simulated workers, "
        f"{seeds} seeds, median over seeds"
    )
    # Optuna's runs take the longest: start them first.
    tasks = [
        (benchmark, algorithm, seed, budget, args.workers)
        for algorithm in sorted(args.algorithms, key=lambda a: a != "optuna")
        for benchmark in args.benchmarks
        for seed in range(seeds)
    ]
    began = time.perf_counter()
    curves = _run_all(tasks, args.jobs, run_one)
    print(f"{len(curves)} runs in {time.perf_counter() - began:.0f} s ({args.jobs} processes)")
    print()
    summaries = summarise(curves, budget, args.points)
    lines, verdicts = render(summaries, budget)
    for line in lines:
        print(line)
    print()
    print(
        "compute to reach: the least compute (in full-length trials) at which the median "
        "regret over seeds is at most random search's median regret at the budget; / random's: "
        "over the compute random search itself needed to reach it; / budget: over the budget. "
        "trials: median number started."
    )
    for line in verdicts:
        print(line)
    if args.plot:
        plot(summaries, args.plot, budget)
        print(f"plot: {args.plot}")
    return 0


def _run_all(
    tasks: list[tuple[str, str, int, float, int]],
    jobs: int,
    work: Callable[[tuple[str, str, int, float, int]], Curve],
) -> list[Curve]:
    if jobs <= 1:
        return [work(task) for task in tasks]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return list(pool.imap_unordered(work, tasks))


if __name__ == "__main__":
    sys.exit(main())
