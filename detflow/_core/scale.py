"""Batch-size scaling rules and the ``${df.scale:VALUE,RULE}`` interpolation.

The rules are plain functions of a value and the scale factor
``k = (global_batch_size x aggregation_frequency) / base_batch_size``.
"""

from __future__ import annotations

import enum
import math

from detflow._core.errors import ConfigError
from detflow._core.text import shown

__all__ = ["ScaleRule", "apply_rule", "scale_factor", "scaled"]

RESOLVER_NAME = "df.scale"


class ScaleRule(str, enum.Enum):
    """How a hyperparameter follows the effective batch size.

    ``linear``: x k (Goyal et al. 2017). ``sqrt``: x sqrt(k) (Hoffer et al. 2017; Adam's
    learning rate, Malladi et al. 2022). ``inverse``: / k (warmup steps at a fixed sample
    budget). ``adam_beta``: 1 - k (1 - beta). ``adam_eps``: / sqrt(k). ``none``: unchanged.
    """

    LINEAR = "linear"
    SQRT = "sqrt"
    INVERSE = "inverse"
    ADAM_BETA = "adam_beta"
    ADAM_EPS = "adam_eps"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


_RULE_NAMES = ", ".join(r.value for r in ScaleRule)


def parse_rule(rule: object, key: str) -> ScaleRule:
    """The :class:`ScaleRule` named ``rule``; a :class:`ConfigError` naming ``key`` otherwise."""
    if isinstance(rule, ScaleRule):
        return rule
    for candidate in ScaleRule:
        if rule == candidate.value:
            return candidate
    raise ConfigError(key, rule, f"a scaling rule, one of {_RULE_NAMES}")


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def scale_factor(
    global_batch_size: object, aggregation_frequency: object, base_batch_size: object
) -> float:
    """``k``: effective batch size over the batch size the base values were tuned at.

    >>> scale_factor(64, 1, 32)
    2.0
    >>> scale_factor(32, 2, 32)
    2.0
    """
    checks = (
        ("hyperparameters.global_batch_size", global_batch_size),
        ("optimizations.aggregation_frequency", aggregation_frequency),
        ("hyperparameters.base_batch_size", base_batch_size),
    )
    for key, value in checks:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(key, shown(value), "a positive integer (df.scale reads it)")
    assert isinstance(global_batch_size, int) and isinstance(aggregation_frequency, int)
    assert isinstance(base_batch_size, int)
    try:
        factor = global_batch_size * aggregation_frequency / base_batch_size
    except OverflowError:
        factor = math.inf
    if factor == 0:  # base_batch_size so large that k underflows: inverse rules would divide by 0
        raise ConfigError(
            "hyperparameters.base_batch_size",
            shown(base_batch_size),
            "a batch size whose scale factor k is a positive float",
        )
    if not math.isfinite(factor):
        raise ConfigError(
            "hyperparameters.global_batch_size",
            shown(global_batch_size),
            "a batch size whose scale factor fits a float",
        )
    return factor


def apply_rule(value: object, rule: object, factor: float, key: str = "df.scale") -> float | int:
    """Scale ``value`` by ``rule`` at factor ``k``; integers stay integers (rounded).

    Examples
    --------
    >>> apply_rule(0.1, "linear", 2.0)
    0.2
    >>> apply_rule(1000, "inverse", 4.0)
    250
    >>> round(apply_rule(0.9, "adam_beta", 2.0), 10)
    0.8
    >>> apply_rule(0.99, "adam_beta", 200.0)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: df.scale = 0.99 is not valid: ...
    """
    parsed = parse_rule(rule, key)
    if (
        isinstance(factor, bool)
        or not isinstance(factor, (int, float))
        or not _finite(factor)
        or factor <= 0
    ):
        raise ConfigError("k", shown(factor), "a positive, finite scale factor")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not _finite(value):
        raise ConfigError(key, shown(value), "a finite number to scale")
    if parsed is ScaleRule.LINEAR:
        result = value * factor
    elif parsed is ScaleRule.SQRT:
        result = value * math.sqrt(factor)
    elif parsed is ScaleRule.INVERSE:
        result = value / factor
    elif parsed is ScaleRule.ADAM_BETA:
        if not 0 <= value < 1:
            raise ConfigError(key, value, "a beta in [0, 1) for rule adam_beta")
        if factor * (1 - value) >= 1:
            raise ConfigError(
                key,
                value,
                f"a beta that adam_beta keeps below 1 at k={_fmt(factor)}: 1 - k(1 - beta) "
                f"= {_fmt(1 - factor * (1 - value))} leaves no momentum; lower the batch size "
                "or use rule none",
            )
        result = 1 - factor * (1 - value)
    elif parsed is ScaleRule.ADAM_EPS:
        result = value / math.sqrt(factor)
    else:
        result = value
    if not _finite(result):
        raise ConfigError(
            key, shown(value), f"a value that stays finite when scaled by k={_fmt(factor)}"
        )
    if isinstance(value, int):
        return round(result)
    return float(result)


def _finite(value: float | int) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def scaled(value: float | int | str, rule: ScaleRule | str = ScaleRule.LINEAR) -> str:
    """The interpolation that scales ``value`` by ``rule``, for a dataclass field or YAML.

    ``value`` may itself be an interpolation such as ``"${hyperparameters.base_lr}"``.

    Examples
    --------
    >>> scaled(0.1, "linear")
    '${df.scale:0.1,linear}'
    >>> scaled(4000, ScaleRule.INVERSE)
    '${df.scale:4000,inverse}'
    """
    parsed = parse_rule(rule, "rule")
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError("value", value, "a number or an interpolation string")
    text = value if isinstance(value, str) else repr(value)
    return f"${{{RESOLVER_NAME}:{text},{parsed.value}}}"
