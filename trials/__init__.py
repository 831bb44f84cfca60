"""The example's trials: ``digits`` (PyTorch MLP) and ``quadratic`` (no dependencies).

``quadratic_loop`` is the same quadratic as a plain training loop, a script of its own
(``python -m trials.quadratic_loop +experiment=quadratic``).
"""

from __future__ import annotations

from detflow import Run, Trial

__all__ = ["build_trial"]

TRIALS = ("digits", "quadratic")


def build_trial(name: str, run: Run) -> Trial:
    """The example trial called ``name``, built from the run's hyperparameters."""
    if name == "quadratic":
        from trials.quadratic import QuadraticTrial

        return QuadraticTrial(run)
    if name == "digits":
        from trials.digits import build_digits_trial

        return build_digits_trial(run)
    from detflow import ConfigError

    raise ConfigError("trial", name, f"one of {', '.join(TRIALS)}")
