"""Counts: the one check of every integer key (a signed 64-bit count at most)."""

from __future__ import annotations

from typing import Any

from detflow._core.errors import ConfigError
from detflow._core.text import shown

__all__ = ["MAX_INT", "check_count"]

#: The largest integer any key takes: a signed 64-bit count (what NumPy, torch and Slurm hold).
MAX_INT = 2**63 - 1


def check_count(
    key: str, value: Any, minimum: int = 1, maximum: int = MAX_INT, *, expected: str | None = None
) -> int:
    """``value`` if it is an ``int`` (not a bool) from ``minimum`` to ``maximum``; else a
    :class:`ConfigError` naming ``key`` and the accepted range (or ``expected``).

    >>> check_count("searcher.divisor", 4, 2)
    4
    >>> check_count("searcher.divisor", 1, 2)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: searcher.divisor = 1 is not valid: expected an integer >= 2
    >>> check_count("searcher.max_rungs", 65, 1, 64)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: searcher.max_rungs = 65 is not valid: expected an integer ...
    """
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int and minimum <= value <= maximum:
        return int(value)
    if expected is None and is_int and value > maximum:
        expected = f"an integer from {minimum} to {maximum}"
    elif expected is None:
        expected = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ConfigError(key, shown(value), expected)
