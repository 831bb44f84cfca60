"""Search quality: detflow's searchers vs random search, Optuna and Ray Tune, in simulation.

Run from the repository root::

    pip install -e ".[bench]"          # yahpo-gym, onnxruntime, optuna, ray[tune]
    python -m bench.search_quality --benchmarks lcbench --tasks 3945,146212 --seeds 10 \\
        --budget 30 --json out.json --plot bench/search_quality_lcbench.png
    python -m bench.search_quality --benchmarks mfh6_good   # needs mf-prior-bench instead

Benchmarks (nothing is downloaded):

- ``lcbench``: YAHPO Gym's surrogate of real learning curves (:mod:`bench.lcbench`), one
  OpenML task per ``--tasks`` id, fidelity = epochs 1..52, ``--metric`` ``val_accuracy``
  (maximised, the default) or ``val_cross_entropy`` (minimised).
- ``mfh6_good``, ``mfh6_terrible``: mf-prior-bench's MFHartmann6 (6-D Hartmann function with a
  fidelity ``z`` in 1..100, biased and noisy below ``z = 100``; the terrible preset inverts
  it at the lowest fidelities); seed ``s`` of a run is also the benchmark's seed.

Each algorithm is driven through its ask/tell interface by a simulator of ``--workers``
workers (default 4). A job "trains" a config from the fidelity it has reached to a higher
one; it costs ``(z_end - z_start) / z_max`` of one full-length trial, in simulated time on its
worker, and its result is the benchmark's value at ``z_end``. A free worker asks for the next
job at once. A promotion continues from the trial's checkpoint and pays only for the extra
fidelity. Algorithms (``--algorithms``, comma- or space-separated; options after colons,
e.g. ``asha:min_length=4:max_rungs=3``):

- ``random``: detflow's random search, every trial at full length;
- ``asha``, ``adaptive_asha``, ``bohb``: detflow's searchers from ``make_searcher`` with
  detflow's defaults, ``max_length = z_max`` and lengths rounded up to a whole ``z``;
  options ``divisor``, ``max_rungs``, ``min_length`` (in ``z``), ``mode``, ``sampler``;
  ``max_concurrent_trials`` is the number of workers. A searcher this detflow lacks is
  reported and skipped;
- ``optuna_hyperband`` (``optuna``): Optuna's TPE sampler with its HyperbandPruner
  (``min_resource=z_min``, ``max_resource=z_max``, ``reduction_factor=3``); ``tpe``: the same
  sampler without a pruner (:class:`bench.anchors.OptunaPolicy`);
- ``ray_asha``: Ray Tune's AsyncHyperBandScheduler with Ray's defaults (``grace_period=1``,
  ``reduction_factor=4``, one bracket), stop-based (:class:`bench.anchors.RayAshaPolicy`);
- ``neps``: NePS's ASHA (:class:`bench.anchors.NepsPolicy`), where ``neural-pipeline-search``
  is installed (it is not in the bench extra);
- ``asha_r4``, ``asha3``: ``asha:max_rungs=4`` and ``asha:divisor=3`` (the older names).

The incumbent after each result is the config an algorithm would pick: the best value at the
highest fidelity observed so far (detflow's ``Searcher.best()`` rule; for Optuna it is
``study.best_trial`` once a trial has completed). Its **regret** is its loss at ``z_max``
minus the optimum's (MFHartmann: the known optimum; lcbench: the best of 50,000 random configs
at epoch 52, :func:`bench.lcbench.optimum`), in the metric's units. **Compute** is the worker
time spent so far, running jobs included, in full-length trials. Curves are the median over
seeds of the regret at each compute level. **compute_to_reach**: the least compute at which
the median regret is at most random search's median regret at the budget, divided by the
compute random search itself needed for it.

The seeds are ``--first-seed`` (0) on, ``--seeds`` of them. A median over 10 seeds is noisy:
``--json`` gives, with each result, ``regret_by_seed`` (the regret at the budget of each
seed) and ``p_worse_than_random``, how often the median regret at the budget is above random
search's when both sides' seeds are resampled with replacement (:func:`p_worse`): near 0.5
means "worse than random" is the seeds' noise, near 1 that it holds whatever the seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

import detflow
from bench._common import table
from bench.anchors import NepsPolicy, OptunaPolicy, Policy, Problem, RayAshaPolicy, Segment
from detflow._core.errors import ConfigError
from detflow._search.searchers import Job, Searcher, make_searcher
from detflow._search.space import Interval, Space

T = TypeVar("T")
MFH_BENCHMARKS = ("mfh6_good", "mfh6_terrible")
BENCHMARKS = (*MFH_BENCHMARKS, "lcbench")
#: Every algorithm name; ``ALIASES`` maps the older ones onto a spec.
ALGORITHMS = (
    "random",
    "asha",
    "asha_r4",
    "asha3",
    "adaptive_asha",
    "bohb",
    "optuna_hyperband",
    "optuna",
    "tpe",
    "ray_asha",
    "neps",
)
ALIASES = {"asha_r4": "asha:max_rungs=4", "asha3": "asha:divisor=3", "optuna": "optuna_hyperband"}
DETFLOW_SEARCHERS = ("random", "asha", "adaptive_asha", "bohb")
DEFAULT_ALGORITHMS = {
    "mfh": ("random", "asha", "asha_r4", "asha3", "optuna", "tpe"),
    "lcbench": ("random", "asha", "adaptive_asha", "bohb", "optuna_hyperband", "ray_asha"),
}
#: Options each algorithm takes (``name:key=value``), with their types.
DETFLOW_OPTIONS: dict[str, type] = {
    "divisor": int,
    "max_rungs": int,
    "min_length": int,
    "mode": str,
    "sampler": str,
    "random_fraction": float,
}
OPTIONS: dict[str, dict[str, type]] = {
    "random": {},
    "asha": DETFLOW_OPTIONS,
    "adaptive_asha": DETFLOW_OPTIONS,
    "bohb": DETFLOW_OPTIONS,
    "optuna_hyperband": {"reduction_factor": int, "min_resource": int},
    "tpe": {},
    "ray_asha": {"grace_period": int, "reduction_factor": int, "brackets": int},
    "neps": {"eta": int},
}
BASE_LABELS = {
    "random": "random (full length)",
    "asha": "detflow asha",
    "adaptive_asha": "detflow adaptive_asha",
    "bohb": "detflow bohb",
    "optuna_hyperband": "optuna TPE + Hyperband",
    "tpe": "optuna TPE, full length",
    "ray_asha": "ray tune ASHA (AsyncHyperBand)",
    "neps": "neps ASHA",
}
#: Why ``neps`` may be missing: it is not in the bench extra.
NEPS_UNAVAILABLE = (
    "neural-pipeline-search is not installed; it is not in the bench extra (its newest "
    "needs numpy>=2 and torch 2.14, yahpo-gym numpy<2): pip install neural-pipeline-search "
    "'numpy<2' 'torch==<the installed one>' picks NePS 0.13"
)
#: Targets (issue #15): compute to reach random's final regret, over random's compute.
TARGET_FRACTION = {"asha": Fraction(1, 3), "adaptive_asha": Fraction(1, 3), "bohb": Fraction(1, 5)}


# -- algorithm specs ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """An algorithm as named on the command line: ``base[:key=value]...``."""

    name: str  # as given (the JSON's ``algorithm``)
    base: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def label(self) -> str:
        text = BASE_LABELS[self.base]
        if self.options:
            text += " (" + ", ".join(f"{k}={v}" for k, v in self.options) + ")"
        return text


def parse_spec(text: str) -> Spec:
    """``"asha:min_length=4"`` -> ``Spec("asha:min_length=4", "asha", (("min_length", 4),))``.

    >>> parse_spec("asha3").options, parse_spec("ray_asha:grace_period=4").options
    ((('divisor', 3),), (('grace_period', 4),))
    """
    base, *parts = ALIASES.get(text, text).split(":")
    if base not in OPTIONS:
        raise ValueError(f"--algorithms {text!r}: expected one of {', '.join(ALGORITHMS)}")
    options = []
    for part in parts:
        key, sep, value = part.partition("=")
        kind = OPTIONS[base].get(key)
        if not sep or kind is None:
            accepted = ", ".join(OPTIONS[base]) or "none"
            raise ValueError(f"--algorithms {text!r}: option {part!r}; {base} takes: {accepted}")
        options.append((key, kind(value)))
    return Spec(text, base, tuple(options))


#: Labels of the named algorithms (what ``bench/run.py`` prints).
LABELS = {name: parse_spec(name).label for name in ALGORITHMS}


# -- the benchmarks -----------------------------------------------------------------------------
class MfhProblem:
    """One seeded mfpbench benchmark: values at a fidelity, regret at the top fidelity."""

    smaller_is_better = True

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

    def loss(self, metric: float) -> float:
        return metric

    def value(self, config: dict[str, Any], z: int) -> float:
        """The benchmark's value (to minimise) of ``config`` trained to fidelity ``z``."""
        return float(self.bench.query(config, at=z).error)

    def regret(self, config: dict[str, Any]) -> float:
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


@dataclass(frozen=True)
class Run:
    """One simulated run: an algorithm on a benchmark (and task), seeded."""

    benchmark: str
    algorithm: str
    seed: int
    budget: float
    workers: int
    task: str | None = None  # lcbench's OpenML task id
    metric: str = "val_accuracy"  # lcbench only
    best: float | None = None  # lcbench: the optimum's metric, computed once per task


def make_problem(run: Run) -> Problem:
    if run.benchmark == "lcbench":
        from bench.lcbench import LcbenchProblem

        assert run.task is not None and run.best is not None
        return LcbenchProblem(run.task, run.metric, run.best)
    return MfhProblem(run.benchmark, run.seed)


# -- detflow's searchers behind the simulator's interface -------------------------------------
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

    def finish(self, segment: Segment, metric: float) -> Segment | None:
        job: Job = segment.token
        self.searcher.tell(job.trial_id, metric, job.length)
        self.trained[job.trial_id] = segment.end
        return None


def detflow_searcher(spec: Spec, problem: Problem, seed: int, workers: int) -> Searcher:
    """``make_searcher(spec.base, ...)`` for ``problem``; raises ConfigError or TypeError
    when this detflow lacks the searcher or one of the options."""
    options = dict(spec.options)
    kwargs: dict[str, Any] = {
        "space": problem.space(),
        "max_length": problem.z_max,
        "max_trials": 1_000_000,  # the compute budget ends the search, not a trial count
        "seed": seed,
        "metric": "objective",
        "smaller_is_better": problem.smaller_is_better,
    }
    if spec.base != "random":
        kwargs["steps_of"] = math.ceil
        kwargs["max_concurrent_trials"] = workers
        kwargs.update(options)
    return make_searcher(spec.base, **kwargs)


def make_policy(spec: Spec, problem: Problem, seed: int, workers: int) -> Policy:
    """The algorithm ``spec``, seeded, for ``problem``."""
    options = dict(spec.options)
    if spec.base in ("optuna_hyperband", "tpe"):
        return OptunaPolicy(problem, seed, prune=spec.base == "optuna_hyperband", **options)
    if spec.base == "ray_asha":
        return RayAshaPolicy(problem, seed, **options)
    if spec.base == "neps":
        return NepsPolicy(problem, seed, **options)
    return DetflowPolicy(detflow_searcher(spec, problem, seed, workers), problem)


def unavailable(spec: Spec, workers: int) -> str | None:
    """Why ``spec`` cannot run here (a searcher or option this detflow lacks), or None."""
    if spec.base == "neps":
        import importlib.util

        return NEPS_UNAVAILABLE if importlib.util.find_spec("neps") is None else None
    if spec.base not in DETFLOW_SEARCHERS:
        return None
    probe = _Probe()
    try:
        detflow_searcher(spec, probe, 0, workers)
    except (ConfigError, TypeError, ValueError) as exc:
        return f"this detflow's make_searcher refuses it: {exc}"
    return None


class _Probe:
    """A one-dimension problem, to ask ``make_searcher`` whether it takes a spec."""

    name = "probe"
    z_min, z_max = 1, 52
    smaller_is_better = True

    def value(self, config: dict[str, Any], z: int) -> float:
        return 0.0

    def loss(self, metric: float) -> float:
        return metric

    def regret(self, config: dict[str, Any]) -> float:
        return 0.0

    def space(self) -> Space:
        return {"x": Interval(0.0, 1.0)}


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
    seconds: float  # wall time of the run
    task: str | None = None
    algorithm_seconds: float = 0.0  # of it, in the algorithm's own calls
    best_agrees: bool | None = None  # detflow: the incumbent is Searcher.best()'s

    def at(self, compute: float) -> float:
        """The incumbent's regret once ``compute`` was spent (inf before the first result)."""
        best = math.inf
        for spent, regret in zip(self.compute, self.regret, strict=True):
            if spent > compute:
                break
            best = regret
        return best


@dataclass
class _Trace:
    compute: list[float] = field(default_factory=list)
    regret: list[float] = field(default_factory=list)
    trials: int = 0
    algorithm_seconds: float = 0.0
    incumbent: dict[str, Any] | None = None


def simulate(policy: Policy, problem: Problem, workers: int, budget: float) -> _Trace:
    """Run ``policy`` on ``workers`` simulated workers until ``budget`` compute is spent."""
    running: list[tuple[float, int, float, Segment]] = []  # (end time, seq, start time, job)
    seq = 0
    trials: set[int] = set()
    done_work = 0.0
    best_at: dict[int, tuple[float, int, dict[str, Any]]] = {}  # z -> (loss, trial, config)
    trace = _Trace()
    clock = time.perf_counter

    def cost(segment: Segment) -> float:
        return (segment.end - segment.start) / problem.z_max

    def push(segment: Segment, now: float) -> None:
        nonlocal seq
        heapq.heappush(running, (now + cost(segment), seq, now, segment))
        trials.add(segment.trial)
        seq += 1

    def fill(now: float) -> None:
        while len(running) < workers:
            began = clock()
            segment = policy.start()
            trace.algorithm_seconds += clock() - began
            if segment is None:
                return
            push(segment, now)

    fill(0.0)
    while running:
        now, _, _, segment = heapq.heappop(running)
        done_work += cost(segment)
        spent = done_work + sum(now - began for _, _, began, _ in running)
        metric = problem_metric(problem, segment.config, segment.end)
        entry = (problem.loss(metric), segment.trial, segment.config)
        if segment.end not in best_at or entry[:2] < best_at[segment.end][:2]:
            best_at[segment.end] = entry
        trace.incumbent = best_at[max(best_at)][2]
        trace.compute.append(spent)
        trace.regret.append(problem.regret(trace.incumbent))
        began = clock()
        following = policy.finish(segment, metric)
        trace.algorithm_seconds += clock() - began
        if spent >= budget:
            break
        if following is not None:
            push(following, now)
        fill(now)
    trace.trials = len(trials)
    return trace


def problem_metric(problem: Problem, config: dict[str, Any], z: int) -> float:
    """The metric the algorithms are told (the problem's own; a loss for MFHartmann)."""
    metric_at = getattr(problem, "metric_at", None)
    return float(metric_at(config, z)) if metric_at is not None else problem.value(config, z)


def run_one(task: Run | tuple[str, str, int, float, int]) -> Curve:
    """One (benchmark, task, algorithm, seed) run; a top-level function for multiprocessing.

    A 5-tuple ``(benchmark, algorithm, seed, budget, workers)`` is an MFHartmann run.
    """
    run = task if isinstance(task, Run) else Run(*task)
    began = time.perf_counter()
    problem = make_problem(run)
    spec = parse_spec(run.algorithm)
    policy = make_policy(spec, problem, run.seed, run.workers)
    trace = simulate(policy, problem, run.workers, run.budget)
    agrees = None
    if isinstance(policy, DetflowPolicy) and trace.incumbent is not None:
        best = policy.searcher.best()
        agrees = best is not None and math.isclose(
            problem.regret(best.hparams), trace.regret[-1], abs_tol=1e-9
        )
    return Curve(
        run.benchmark,
        run.algorithm,
        run.seed,
        tuple(trace.compute),
        tuple(trace.regret),
        trace.trials,
        time.perf_counter() - began,
        run.task,
        trace.algorithm_seconds,
        agrees,
    )


# -- summaries ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Summary:
    """One algorithm on one benchmark (and task), over seeds."""

    benchmark: str
    algorithm: str
    grid: tuple[float, ...]
    median: tuple[float, ...]  # median regret over seeds at each grid point
    final: tuple[float, float, float]  # 25th, 50th, 75th percentile of the regret at the budget
    trials: float  # median trials started
    seconds: float  # median wall seconds per run
    task: str | None = None
    algorithm_seconds: float = 0.0  # median seconds per run in the algorithm's own calls
    seeds: int = 0
    best_agrees: int | None = None  # runs whose incumbent is Searcher.best()'s
    finals: tuple[float, ...] = ()  # each seed's regret at the budget, by seed

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
    """Per (benchmark, task, algorithm): median curves over seeds on a grid of ``points``."""
    grid = tuple(budget * (i + 1) / points for i in range(points))
    keys = list(dict.fromkeys((c.benchmark, c.task, c.algorithm) for c in curves))
    keys.sort(key=_order)
    summaries = []
    for benchmark, task, algorithm in keys:
        runs = [
            c for c in curves if (c.benchmark, c.task, c.algorithm) == (benchmark, task, algorithm)
        ]
        runs.sort(key=lambda run: run.seed)
        median = tuple(statistics.median(run.at(x) for run in runs) for x in grid)
        checked = [run.best_agrees for run in runs if run.best_agrees is not None]
        summaries.append(
            Summary(
                benchmark,
                algorithm,
                grid,
                median,
                _quantiles([run.at(budget) for run in runs]),
                statistics.median(run.trials for run in runs),
                statistics.median(run.seconds for run in runs),
                task,
                statistics.median(run.algorithm_seconds for run in runs),
                len(runs),
                sum(checked) if checked else None,
                tuple(run.at(budget) for run in runs),
            )
        )
    return summaries


#: Resamples of :func:`p_worse`'s bootstrap.
BOOTSTRAP_RESAMPLES = 4000


def p_worse(finals: Sequence[float], randoms: Sequence[float], key: str) -> float:
    """How often, resampling seeds with replacement (both sides, ``BOOTSTRAP_RESAMPLES``
    times, from ``Random(key)``), the median of ``finals`` is above the median of
    ``randoms``: near 0.5 when the two medians differ by less than the seeds' noise, near 1
    (or 0) when one search ends worse (or better) whatever the seeds.

    >>> p_worse([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], "same") < 0.6
    True
    >>> p_worse([5.0, 6.0, 7.0], [1.0, 2.0, 3.0], "worse")
    1.0
    """
    rng = random.Random(key)
    worse = 0
    for _ in range(BOOTSTRAP_RESAMPLES):
        mine = statistics.median(rng.choices(finals, k=len(finals)))
        theirs = statistics.median(rng.choices(randoms, k=len(randoms)))
        worse += mine > theirs
    return worse / BOOTSTRAP_RESAMPLES


def _order(key: tuple[str, str | None, str]) -> tuple[int, str, int, str]:
    benchmark, task, algorithm = key
    rank_b = BENCHMARKS.index(benchmark) if benchmark in BENCHMARKS else len(BENCHMARKS)
    base = parse_spec(algorithm).base
    return rank_b, f"{task or '':>8}", list(OPTIONS).index(base), algorithm


@dataclass(frozen=True)
class Result:
    """One (benchmark, task, algorithm): what ``--json`` writes, one object each."""

    benchmark: str
    task: str | None
    algorithm: str
    label: str
    compute_to_reach: float | None  # / random's own compute to reach it; None: never
    compute_to_reach_abs: float | None  # in full-length trials
    regret_median: float  # at the budget
    regret_q1: float
    regret_q3: float
    random_final_regret: float  # the target: random search's median regret at the budget
    worse_than_random: bool  # median regret at the budget above random's
    #: how often the median regret at the budget is above random's when seeds are resampled
    #: (:func:`p_worse`): ~0.5 where ``worse_than_random`` is the seeds' noise
    p_worse_than_random: float
    budget: float
    workers: int
    seeds: int
    metric: str | None
    trials_median: float
    seconds_median: float
    algorithm_seconds_median: float
    first_seed: int  # the seeds are first_seed .. first_seed + seeds - 1
    regret_by_seed: tuple[float, ...]  # each seed's regret at the budget, in seed order


def results(
    summaries: list[Summary], budget: float, workers: int, metric: str, first_seed: int = 0
) -> list[Result]:
    """compute_to_reach and regret at the budget, per (benchmark, task, algorithm)."""
    out = []
    for benchmark, task in dict.fromkeys((s.benchmark, s.task) for s in summaries):
        group = [s for s in summaries if (s.benchmark, s.task) == (benchmark, task)]
        randoms = [s for s in group if s.algorithm == "random"]
        if not randoms:
            raise ValueError("compute_to_reach needs random search in --algorithms")
        target = randoms[0].final[1]
        random_reach = randoms[0].reach(target) or budget
        for summary in group:
            got = summary.reach(target)
            q1, q2, q3 = summary.final
            out.append(
                Result(
                    benchmark,
                    task,
                    summary.algorithm,
                    parse_spec(summary.algorithm).label,
                    None if got is None else got / random_reach,
                    got,
                    q2,
                    q1,
                    q3,
                    target,
                    q2 > target,
                    p_worse(summary.finals, randoms[0].finals, f"{task}:{summary.algorithm}"),
                    budget,
                    workers,
                    summary.seeds,
                    metric if benchmark == "lcbench" else None,
                    summary.trials,
                    summary.seconds,
                    summary.algorithm_seconds,
                    first_seed,
                    summary.finals,
                )
            )
    return out


def render(found: list[Result]) -> list[str]:
    """The per-task table."""
    header = [
        "benchmark",
        "task",
        "algorithm",
        "to reach",
        "/ random's",
        "regret at budget: median [IQR]",
        "trials",
        "s/run",
        "algo s/run",
    ]
    rows = [
        [
            r.benchmark,
            r.task or "-",
            r.label,
            _fmt(r.compute_to_reach_abs),
            _fmt(r.compute_to_reach),
            f"{r.regret_median:.3f} [{r.regret_q1:.3f}, {r.regret_q3:.3f}]",
            f"{r.trials_median:.0f}",
            f"{r.seconds_median:.1f}",
            f"{r.algorithm_seconds_median:.2f}",
        ]
        for r in found
    ]
    return table(header, rows, left=3)


def pivot(found: list[Result]) -> list[str]:
    """One row per (benchmark, task), one column per algorithm: compute_to_reach / regret."""
    algorithms = list(dict.fromkeys(r.algorithm for r in found))
    cells = {(r.benchmark, r.task, r.algorithm): r for r in found}
    rows = []
    for benchmark, task in dict.fromkeys((r.benchmark, r.task) for r in found):
        row = [benchmark, task or "-"]
        for algorithm in algorithms:
            r = cells.get((benchmark, task, algorithm))
            row.append("" if r is None else f"{_fmt(r.compute_to_reach)} / {r.regret_median:.2f}")
        rows.append(row)
    return table(["benchmark", "task", *algorithms], rows, left=2)


def overview(found: list[Result], tuning: Sequence[str]) -> tuple[list[str], list[str]]:
    """Per algorithm, over tasks (tuning tasks and the others apart): the median of
    compute_to_reach (never = infinite), tasks reached, tasks worse than random; and the
    verdict lines of issue #15's targets."""
    lines: list[str] = []
    verdicts: list[str] = []
    benchmarks = dict.fromkeys(r.benchmark for r in found)
    header = [
        "benchmark",
        "tasks",
        "algorithm",
        "median / random's",
        "reached",
        "worse than random",
        "median regret (median over tasks)",
    ]
    rows = []
    for benchmark in benchmarks:
        mine = [r for r in found if r.benchmark == benchmark]
        task_ids = list(dict.fromkeys(r.task for r in mine))
        held_out = [t for t in task_ids if t not in tuning]
        sets = [("all", task_ids)]
        if benchmark == "lcbench":
            tuned = [t for t in task_ids if t in tuning]
            sets = [("tuning", tuned), ("held-out", held_out)]
            if tuned and held_out:
                sets.append(("all", task_ids))
        for set_name, ids in sets:
            if not ids:
                continue
            for algorithm in dict.fromkeys(r.algorithm for r in mine):
                rs = [r for r in mine if r.algorithm == algorithm and r.task in ids]
                ratios = [
                    math.inf if r.compute_to_reach is None else r.compute_to_reach for r in rs
                ]
                med = statistics.median(ratios)
                rows.append(
                    [
                        benchmark,
                        f"{set_name} ({len(rs)})",
                        rs[0].label,
                        _fmt(None if math.isinf(med) else med),
                        f"{sum(r.compute_to_reach is not None for r in rs)}/{len(rs)}",
                        ", ".join(r.task or "yes" for r in rs if r.worse_than_random) or "-",
                        f"{statistics.median(r.regret_median for r in rs):.3f}",
                    ]
                )
                if algorithm in TARGET_FRACTION:
                    verdicts.extend(_verdicts(benchmark, set_name, algorithm, rs, mine, ids))
    lines = table(header, rows, left=3)
    return lines, verdicts


def _verdicts(
    benchmark: str,
    set_name: str,
    algorithm: str,
    rs: list[Result],
    mine: list[Result],
    ids: list[str | None],
) -> list[str]:
    out = []
    ratios = [math.inf if r.compute_to_reach is None else r.compute_to_reach for r in rs]
    med = statistics.median(ratios)
    goal = TARGET_FRACTION[algorithm]
    where = f"{benchmark} {set_name} tasks"
    out.append(
        f"{'PASS' if med <= goal else 'FAIL'} {where}, {algorithm}: median compute to "
        f"random's final regret {_fmt(None if math.isinf(med) else med)} of random's "
        f"(target <= {float(goal):.2f})"
    )
    if algorithm in ("adaptive_asha", "bohb"):
        never = [r for r in rs if r.compute_to_reach is None]
        misses = ", ".join(
            f"{r.task or r.benchmark}: {r.regret_median:.2f} against {r.random_final_regret:.2f},"
            f" worse in {r.p_worse_than_random:.0%} of resampled seeds"
            for r in never
        )
        out.append(
            f"{'PASS' if not never else 'FAIL'} {where}, {algorithm}: reaches random's final "
            f"regret on every task" + (f" (not on {misses})" if never else "")
        )
    if algorithm == "bohb":
        for anchor in ("optuna_hyperband", "ray_asha"):
            theirs = {r.task: r for r in mine if r.algorithm == anchor and r.task in ids}
            if not theirs:
                continue
            wins = sum(
                r.regret_median <= theirs[r.task].regret_median for r in rs if r.task in theirs
            )
            ok = wins >= math.ceil(0.8 * len(theirs))
            out.append(
                f"{'PASS' if ok else 'FAIL'} {where}, bohb vs {anchor}: median regret at the "
                f"budget no worse on {wins} of {len(theirs)} tasks (target >= 4 of 5)"
            )
    return out


def _fmt(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def plot(summaries: list[Summary], path: str, budget: float) -> None:
    """Median regret against compute, one panel per benchmark and task (needs matplotlib).

    A benchmark of several tasks gets a first panel over all of them: at each compute level,
    the median over tasks of (median regret / random search's median regret at the budget),
    so that 1 is random's final regret on every task.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, str | None], dict[str, list[float]]] = {}
    for summary in summaries:
        curves.setdefault((summary.benchmark, summary.task), {})[summary.algorithm] = list(
            summary.median
        )
    grid = summaries[0].grid
    panels: list[tuple[str, str | None, str, dict[str, list[float]]]] = []
    for benchmark in dict.fromkeys(s.benchmark for s in summaries):
        mine = {task: c for (b, task), c in curves.items() if b == benchmark and "random" in c}
        if len(mine) > 1:
            shared = [a for a in next(iter(mine.values())) if all(a in c for c in mine.values())]
            relative = {
                a: [
                    statistics.median(c[a][i] / max(c["random"][-1], 1e-9) for c in mine.values())
                    for i in range(len(grid))
                ]
                for a in shared
            }
            title = f"{benchmark}, {len(mine)} tasks: regret / random's final (median)"
            panels.append((benchmark, None, title, relative))
        for (b, task), c in curves.items():
            if b == benchmark:
                panels.append((b, task, b if task is None else f"{b} task {task}", c))
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (_benchmark, _task, title, lines) in zip(axes.flat, panels, strict=False):
        for algorithm, ys in lines.items():
            points = [(x, max(y, 1e-3)) for x, y in zip(grid, ys, strict=True) if y < 1e9]
            if points:
                xs, ys_ = zip(*points, strict=True)
                ax.step(xs, ys_, where="post", label=parse_spec(algorithm).label)
        ax.set_yscale("log")
        ax.set_xlim(0, budget)
        ax.set_xlabel("compute (full-length trials)")
        ax.set_ylabel("regret (median over seeds)")
        ax.set_title(title, fontsize="medium")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize="small")
    fig.tight_layout(rect=(0, 0.06 if rows > 1 else 0.12, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def versions() -> str:
    """Python and the versions of what is compared (those installed)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    names = ["optuna", "ray", "yahpo-gym", "onnxruntime", "mf-prior-bench", "numpy"]
    found = []
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            found.append(f"{name} {version(name)}")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpus} CPUs, Python {platform.python_version()}, detflow {detflow.__version__}, "
        + ", ".join(found)
    )


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--budget", type=float, default=None, help="full-length trials of compute")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per algorithm (>= 10)")
    parser.add_argument(
        "--first-seed", type=int, default=0, help="seeds are this one and the next --seeds - 1"
    )
    parser.add_argument("--workers", type=int, default=4, help="simulated workers")
    parser.add_argument(
        "--quick", action="store_true", help="budget 25 and 10 seeds (unless given)"
    )
    parser.add_argument(
        "--benchmarks",
        nargs="+",
        default=None,
        help=f"of {', '.join(BENCHMARKS)} (default: lcbench)",
    )
    parser.add_argument("--tasks", default=None, help="lcbench OpenML task ids, comma-separated")
    parser.add_argument(
        "--metric", default="val_accuracy", help="lcbench: val_accuracy or val_cross_entropy"
    )
    parser.add_argument(
        "--algorithms", nargs="+", default=None, help="to compare (see the module doc)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="runs in parallel (processes)"
    )
    parser.add_argument("--plot", default=None, help="save a PNG of the median curves here")
    parser.add_argument(
        "--json", default=None, help="write the per-(benchmark, task, algorithm) results here"
    )
    parser.add_argument("--points", type=int, default=400, help="compute grid points")
    args = parser.parse_args(argv)

    benchmarks = _split(args.benchmarks or ["lcbench"])
    for name in benchmarks:
        if name not in BENCHMARKS:
            parser.error(f"--benchmarks {name!r}: expected one of {', '.join(BENCHMARKS)}")
    lcbench = "lcbench" in benchmarks
    default_budget, default_seeds = (30.0, 10) if lcbench else (50.0, 20)
    budget = args.budget if args.budget is not None else (25.0 if args.quick else default_budget)
    seeds = args.seeds if args.seeds is not None else (10 if args.quick else default_seeds)
    if budget <= 0 or seeds < 1 or args.workers < 1 or args.jobs < 1:
        parser.error("--budget, --seeds, --workers and --jobs must be positive")
    if args.first_seed < 0:
        parser.error(f"--first-seed {args.first_seed}: expected 0 or more")
    kind = "lcbench" if lcbench else "mfh"
    names = _split(args.algorithms) if args.algorithms else list(DEFAULT_ALGORITHMS[kind])
    try:
        specs = [parse_spec(name) for name in names]
    except ValueError as exc:
        parser.error(str(exc))
    if "random" not in [s.name for s in specs]:
        specs.insert(0, parse_spec("random"))  # every figure is relative to it

    missing = _missing_packages(benchmarks, specs)
    if missing:
        print(
            f'Error: not installed: {", ".join(missing)} (pip install -e ".[bench]"; '
            "mf-prior-bench in its own environment)"
        )
        return 2
    logging.getLogger("optuna").setLevel(logging.WARNING)

    runnable = []
    for spec in specs:
        why = unavailable(spec, args.workers)
        if why is None:
            runnable.append(spec)
        else:
            print(f"skipped {spec.name}: {why}")

    tasks: list[str | None] = [None]
    bests: dict[str | None, float] = {}
    if lcbench:
        from bench import lcbench as lc

        if args.metric not in lc.METRICS:
            parser.error(f"--metric {args.metric!r}: expected one of {', '.join(lc.METRICS)}")
        tasks = list(_split([args.tasks])) if args.tasks else list(lc.TUNING_TASKS)
        for task in tasks:
            if task not in lc.tasks():
                parser.error(f"--tasks {task!r}: lcbench has {', '.join(lc.tasks())}")
        began = time.perf_counter()
        optima = _run_all([(task, args.metric) for task in tasks], args.jobs, _optimum)
        bests = dict(zip(tasks, optima, strict=True))
        print(
            f"optimum ({args.metric} at epoch 52, best of {lc.OPTIMUM_SAMPLE} random configs): "
            + ", ".join(f"{t} {bests[t]:.3f} ({_yahpo_best(t, args.metric)})" for t in tasks)
            + f" ({time.perf_counter() - began:.0f} s)"
        )

    print(f"machine: {versions()}")
    last = args.first_seed + seeds - 1
    print(
        f"budget {budget:g} full-length trials, {args.workers} simulated workers, {seeds} seeds"
        f" ({args.first_seed}..{last})"
    )
    runs = [
        Run(
            benchmark,
            spec.name,
            seed,
            budget,
            args.workers,
            task if benchmark == "lcbench" else None,
            args.metric,
            bests.get(task) if benchmark == "lcbench" else None,
        )
        for spec in sorted(runnable, key=lambda s: s.base not in ("optuna_hyperband", "bohb"))
        for benchmark in benchmarks
        for task in (tasks if benchmark == "lcbench" else [None])
        for seed in range(args.first_seed, args.first_seed + seeds)
    ]
    began = time.perf_counter()
    curves = _run_all(runs, args.jobs, run_one, progress=True)
    wall = time.perf_counter() - began
    print(f"{len(curves)} runs in {wall:.0f} s ({args.jobs} processes)")
    print()
    summaries = summarise(curves, budget, args.points)
    found = results(summaries, budget, args.workers, args.metric, args.first_seed)
    for line in render(found):
        print(line)
    print()
    print("compute_to_reach / regret_median, by task:")
    for line in pivot(found):
        print(line)
    print()
    from bench.lcbench import TUNING_TASKS

    lines, verdicts = overview(found, TUNING_TASKS if lcbench else ())
    for line in lines:
        print(line)
    print()
    print(
        "to reach: the least compute (in full-length trials) at which the median regret over "
        "seeds is at most random search's median regret at the budget; / random's: over the "
        "compute random search itself needed to reach it. trials: median number started; "
        "algo s/run: seconds per run inside the algorithm's own calls."
    )
    agree = [s for s in summaries if s.best_agrees is not None]
    if agree:
        ok = sum(s.best_agrees or 0 for s in agree)
        print(f"incumbent == Searcher.best(): {ok} of {sum(s.seeds for s in agree)} detflow runs")
    for line in verdicts:
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([asdict(r) for r in found], f, indent=1)
            f.write("\n")
        print(f"json: {args.json}")
    if args.plot:
        plot(summaries, args.plot, budget)
        print(f"plot: {args.plot}")
    return 0


def _missing_packages(benchmarks: list[str], specs: list[Spec]) -> list[str]:
    import importlib.util

    needed = set()
    if "lcbench" in benchmarks:
        needed |= {"yahpo_gym", "onnxruntime"}
    if any(b in MFH_BENCHMARKS for b in benchmarks):
        needed.add("mfpbench")
    if any(s.base in ("optuna_hyperband", "tpe") for s in specs):
        needed.add("optuna")
    if any(s.base == "ray_asha" for s in specs):
        needed.add("ray")
    return sorted(n for n in needed if importlib.util.find_spec(n) is None)


def _yahpo_best(task: str | None, metric: str) -> str:
    """YAHPO's own best (0.5 M random points, any epoch), for comparison with the optimum."""
    from bench.lcbench import reference_best

    best = None if task is None else reference_best(task, metric)
    return "YAHPO's best at any epoch: " + ("-" if best is None else f"{best:.3f}")


def _optimum(task_metric: tuple[str, str]) -> float:
    from bench.lcbench import optimum

    return optimum(*task_metric)


def _run_all(
    tasks: Sequence[Any], jobs: int, work: Callable[[Any], T], progress: bool = False
) -> list[T]:
    """``work`` over ``tasks`` in ``jobs`` processes, results in the order of ``tasks``;
    with ``progress``, a line on stderr at each tenth done."""
    done: list[T] = []
    began = time.perf_counter()

    def collect(results: Any) -> list[T]:
        step = max(1, len(tasks) // 10)
        for result in results:
            done.append(result)
            if progress and (len(done) % step == 0 or len(done) == len(tasks)):
                elapsed = time.perf_counter() - began
                print(f"  {len(done)}/{len(tasks)} runs, {elapsed:.0f} s", file=sys.stderr)
        return done

    if jobs <= 1:
        return collect(work(task) for task in tasks)
    # One BLAS thread per process: the runs are parallel processes already. The spawned
    # processes read this before they import numpy.
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return collect(pool.imap(work, tasks))


if __name__ == "__main__":
    sys.exit(main())
