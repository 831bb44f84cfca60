"""When a run reports, validates, checkpoints and stops: one object decides, per batch count.

The training loop asks :meth:`Schedule.next_event` how far it may train before anything is
due, then :meth:`Schedule.decide` what is due there. Every period is a whole number of
batches (lengths are converted by :class:`~detflow.BatchMath` first), so the decisions are
exact and the same on every rank.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Decision", "Plan", "Schedule"]


@dataclass(frozen=True)
class Plan:
    """A run's lengths in batches: the target and the periods."""

    target: int
    validate_every: int
    checkpoint_every: int
    report_every: int
    progress_every: int
    epoch_length: int | None


@dataclass(slots=True)  # made once per stretch of training: cheap to build
class Decision:
    """What is due after a stretch of training."""

    report: bool
    validate: bool
    checkpoint: bool
    stop: bool
    at_target: bool


class Schedule:
    """The validate / checkpoint / report / stop decisions of one run.

    Examples
    --------
    >>> s = Schedule(Plan(target=10, validate_every=4, checkpoint_every=8, report_every=2,
    ...                   progress_every=1, epoch_length=None), aggregation_frequency=1)
    >>> s.next_event(0), s.next_event(8)
    (1, 9)
    >>> d = s.decide(8, stop_requested=False)
    >>> d.validate, d.checkpoint, d.at_target
    (True, True, False)
    >>> [b for b in range(1, 11) if s.decide(b, stop_requested=False).validate]
    [4, 8, 10]
    """

    def __init__(self, plan: Plan, aggregation_frequency: int) -> None:
        self.plan = plan
        self.aggregation_frequency = aggregation_frequency
        self._periods = (
            plan.report_every,
            plan.validate_every,
            plan.checkpoint_every,
            plan.progress_every,
        )

    def next_event(self, batches: int, epoch_end: int | None = None) -> int:
        """The next batch count, after ``batches``, at which anything may be due (never past
        the target, nor past ``epoch_end`` when given)."""
        at = self.plan.target if epoch_end is None else min(self.plan.target, epoch_end)
        for period in self._periods:  # a plain loop: this runs once per stretch of training
            due = (batches // period + 1) * period
            if due < at:
                at = due
        return at

    def at_step_boundary(self, batches: int) -> bool:
        """Whether ``batches`` ends an optimizer step (where a run may stop or checkpoint)."""
        return batches % self.aggregation_frequency == 0

    def decide(self, batches: int, *, stop_requested: bool) -> Decision:
        """What is due at ``batches``; a requested stop takes effect at a step boundary."""
        plan = self.plan
        at_target = batches >= plan.target
        stop = stop_requested and self.at_step_boundary(batches)
        validate = at_target or batches % plan.validate_every == 0
        checkpoint_due = at_target or stop or batches % plan.checkpoint_every == 0
        report = validate or checkpoint_due or batches % plan.report_every == 0
        checkpoint = checkpoint_due and self.at_step_boundary(batches)
        return Decision(report, validate, checkpoint, stop, at_target)
