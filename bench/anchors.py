"""What ``bench.search_quality`` compares detflow's searchers with, each driven by its own code.

Every algorithm is a :class:`Policy`: the simulator asks it for a job when a worker is free
(:meth:`Policy.start`) and tells it each job's result (:meth:`Policy.finish`), which may
return the same worker's next job. A job (:class:`Segment`) trains one config from the
fidelity it has reached to a higher one, paying only for the difference.

- :class:`OptunaPolicy`: Optuna's ``TPESampler`` with its ``HyperbandPruner`` (or no pruner),
  through ``study.ask`` / ``trial.report`` / ``trial.should_prune`` / ``study.tell``.
- :class:`RayAshaPolicy`: Ray Tune's ``AsyncHyperBandScheduler`` through the calls Ray's
  ``TuneController`` makes on a scheduler (``on_trial_add``, ``on_trial_result`` after each
  epoch, ``on_trial_complete`` when it stops a trial), with Ray's own sampling domains
  (``tune.loguniform``, ``tune.lograndint``, ...) for new configs: stop-based, as in Ray.
- :class:`NepsPolicy`: NePS's promotion-based ASHA (``neps.optimizers.algorithms.asha``,
  NePS's defaults: ``eta=3``, uniform sampling), asked through its ``AskAndTell`` wrapper
  and told as NePS's runtime tells, the fidelity a ``neps.Integer(z_min, z_max,
  is_fidelity=True)``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from detflow._search.space import Choice, Interval, Space


class Problem(Protocol):
    """A benchmark as the simulator and the policies see it (fidelity ``z`` in z_min..z_max)."""

    name: str
    z_min: int
    z_max: int
    smaller_is_better: bool  # of the metric the policies are told

    def value(self, config: dict[str, Any], z: int) -> float:
        """The loss (to minimise) of ``config`` at fidelity ``z``."""

    def loss(self, metric: float) -> float:
        """``metric`` as a loss to minimise."""

    def regret(self, config: dict[str, Any]) -> float:
        """``config``'s loss at ``z_max`` minus the optimum's."""

    def space(self) -> Space:
        """The search space, as detflow's dimensions."""


@dataclass(frozen=True)
class Segment:
    """A job on one worker: train ``config`` from fidelity ``start`` to ``end``."""

    trial: int
    config: dict[str, Any]
    start: int
    end: int
    token: Any = None  # the algorithm's own handle (a detflow Job, an Optuna trial, ...)


class Policy(Protocol):
    """An algorithm as the simulator drives it; ``metric`` is the problem's own (raw)."""

    def start(self) -> Segment | None:
        """The next job for a free worker, or None if there is none now."""

    def finish(self, segment: Segment, metric: float) -> Segment | None:
        """``segment`` reached its end with ``metric``; the same worker's next job, if any."""


class OptunaPolicy:
    """Optuna's TPE sampler with its Hyperband pruner (or none), through ask / report / tell.

    A trial reports at the pruner's rungs (``min_resource * reduction_factor**k``, the only
    steps at which it can prune) and at ``z_max``; between them it trains without stopping.
    """

    def __init__(
        self,
        problem: Problem,
        seed: int,
        *,
        reduction_factor: int = 3,
        min_resource: int | None = None,
        prune: bool = True,
    ) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.problem = problem
        low = problem.z_min if min_resource is None else min_resource
        self.study = optuna.create_study(
            # HyperbandPruner puts a trial in a bracket by a hash of the study's name and the
            # trial's number: a fixed name makes the run reproducible.
            study_name=f"{problem.name}-{seed}",
            direction="minimize" if problem.smaller_is_better else "maximize",
            sampler=optuna.samplers.TPESampler(seed=seed),
            pruner=optuna.pruners.HyperbandPruner(
                min_resource=low,
                max_resource=problem.z_max,
                reduction_factor=reduction_factor,
            )
            if prune
            else optuna.pruners.NopPruner(),
        )
        self.distributions = optuna_distributions(problem.space())
        steps = {problem.z_max}
        step = low
        while prune and step < problem.z_max:
            steps.add(step)
            step *= reduction_factor
        self.steps = sorted(steps)

    def start(self) -> Segment | None:
        trial = self.study.ask(self.distributions)
        config = dict(trial.params)
        return Segment(trial.number, config, 0, self.steps[0], trial)

    def finish(self, segment: Segment, metric: float) -> Segment | None:
        trial = segment.token
        trial.report(metric, segment.end)
        if segment.end >= self.problem.z_max:
            self.study.tell(trial, metric)
            return None
        if trial.should_prune():
            self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)
            return None
        end = self.steps[self.steps.index(segment.end) + 1]
        return Segment(segment.trial, segment.config, segment.end, end, trial)


def optuna_distributions(space: Space) -> dict[str, Any]:
    """detflow's dimensions as Optuna's distributions (integers and logs kept as such)."""
    from optuna.distributions import (
        BaseDistribution,
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, BaseDistribution] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            out[key] = CategoricalDistribution(dim.values)
        elif dim.integer:
            out[key] = IntDistribution(math.ceil(dim.low), math.floor(dim.high), log=dim.log)
        else:
            out[key] = FloatDistribution(dim.low, dim.high, log=dim.log)
    return out


@dataclass
class _RayTrial:
    """The part of ``ray.tune.experiment.Trial`` that ``AsyncHyperBandScheduler`` reads."""

    trial_id: str
    config: dict[str, Any]


class RayAshaPolicy:
    """Ray Tune's ``AsyncHyperBandScheduler``, driven as Ray's ``TuneController`` drives it.

    Each new trial gets a config from Ray's sampling domains (seeded ``RandomState``) and is
    added with ``on_trial_add``. It trains one epoch (one ``training_iteration``) at a time;
    after each, ``on_trial_result`` says CONTINUE or STOP. On STOP (which includes reaching
    ``max_t``) the controller calls ``on_trial_complete`` with the last result and the worker
    is free. Ray's defaults: ``grace_period=1``, ``reduction_factor=4``, ``brackets=1``;
    ``max_t`` is the problem's ``z_max``.
    """

    def __init__(
        self,
        problem: Problem,
        seed: int,
        *,
        grace_period: int = 1,
        reduction_factor: int = 4,
        brackets: int = 1,
    ) -> None:
        from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

        logging.getLogger("ray").setLevel(logging.WARNING)
        self.problem = problem
        self.stop = TrialScheduler.STOP
        self.scheduler = AsyncHyperBandScheduler(
            time_attr="training_iteration",
            metric="objective",
            mode="min" if problem.smaller_is_better else "max",
            max_t=problem.z_max,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
            brackets=brackets,
        )
        self.domains = ray_domains(problem.space())
        self.rng = np.random.RandomState(seed)
        np.random.seed(seed)  # on_trial_add picks a bracket with np.random
        self.trials = 0

    def start(self) -> Segment | None:
        config = {
            key: _plain(domain.sample(random_state=self.rng))
            for key, domain in self.domains.items()
        }
        trial = _RayTrial(f"{self.trials:05d}", config)
        self.scheduler.on_trial_add(None, trial)  # type: ignore[arg-type]
        self.trials += 1
        return Segment(self.trials - 1, config, 0, 1, trial)

    def finish(self, segment: Segment, metric: float) -> Segment | None:
        trial = segment.token
        result = {"training_iteration": segment.end, "objective": metric}
        action = self.scheduler.on_trial_result(None, trial, result)  # type: ignore[arg-type]
        if action == self.stop:
            self.scheduler.on_trial_complete(None, trial, result)  # type: ignore[arg-type]
            return None
        end = segment.end + 1
        return Segment(segment.trial, segment.config, segment.end, end, trial)


def ray_domains(space: Space) -> dict[str, Any]:
    """detflow's dimensions as Ray Tune's search domains (``tune.lograndint`` etc.)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            out[key] = tune.choice(list(dim.values))
        elif isinstance(dim, Interval) and dim.integer:
            low, high = math.ceil(dim.low), math.floor(dim.high) + 1  # Ray's upper is exclusive
            out[key] = tune.lograndint(low, high) if dim.log else tune.randint(low, high)
        else:
            out[key] = (
                tune.loguniform(dim.low, dim.high) if dim.log else tune.uniform(dim.low, dim.high)
            )
    return out


def _plain(value: Any) -> Any:
    """A numpy scalar as a Python one (so configs hash and print alike everywhere)."""
    return value.item() if isinstance(value, np.generic) else value


class NepsPolicy:
    """NePS's ASHA through ``neps.optimizers.ask_and_tell.AskAndTell``.

    ``ask()`` gives a trial whose config holds the fidelity to train to (``"epoch"``); a
    promotion is the same hyperparameters at a higher fidelity (NePS's ``previous_trial_id``),
    continued from where that config stopped. ``tell`` reports the loss
    (``objective_to_minimize``). NePS draws from numpy's and torch's global generators:
    both are seeded with ``seed``.
    """

    def __init__(self, problem: Problem, seed: int, *, eta: int = 3) -> None:
        import random

        import neps  # type: ignore[import-untyped]
        import torch
        from neps.optimizers import algorithms  # type: ignore[import-untyped]
        from neps.optimizers.ask_and_tell import AskAndTell  # type: ignore[import-untyped]

        logging.getLogger("neps").setLevel(logging.WARNING)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.problem = problem
        elements: dict[str, Any] = {}
        for key, dim in problem.space().items():
            if isinstance(dim, Choice):
                elements[key] = neps.Categorical(list(dim.values))
            elif dim.integer:
                low, high = math.ceil(dim.low), math.floor(dim.high)
                elements[key] = neps.Integer(low, high, log=dim.log)
            else:
                elements[key] = neps.Float(dim.low, dim.high, log=dim.log)
        elements[self.FIDELITY] = neps.Integer(problem.z_min, problem.z_max, is_fidelity=True)
        self.keys = tuple(k for k in elements if k != self.FIDELITY)
        self.tell_ask = AskAndTell(algorithms.asha(neps.SearchSpace(elements), eta=eta))
        self.ids: dict[tuple[Any, ...], int] = {}  # hyperparameters -> trial number
        self.trained: dict[int, int] = {}

    FIDELITY = "epoch"

    def start(self) -> Segment | None:
        trial = self.tell_ask.ask()
        config = {key: _plain(trial.config[key]) for key in self.keys}
        number = self.ids.setdefault(tuple(config[k] for k in self.keys), len(self.ids))
        end = int(trial.config[self.FIDELITY])
        return Segment(number, config, self.trained.get(number, 0), end, trial)

    def finish(self, segment: Segment, metric: float) -> Segment | None:
        # What NePS's runtime does with a result (``pipeline_eval`` then ``NePSState``):
        # ``AskAndTell.tell`` of NePS 0.13 drops the Report that ``set_complete`` returns, so
        # the optimizer would see every trial as pending and promote blindly.
        trial = segment.token
        trial.report = trial.set_complete(
            report_as="success",
            objective_to_minimize=float(self.problem.loss(metric)),
            cost=None,
            learning_curve=None,
            err=None,
            tb=None,
            extra=None,
            time_end=time.time(),
            evaluation_duration=None,
        )
        self.trained[segment.trial] = segment.end
        return None
