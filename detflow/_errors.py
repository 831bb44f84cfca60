"""The one error type a user sees for a bad configuration value."""

from __future__ import annotations

from typing import Any

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad configuration value: one line naming the key, the value and what is accepted.

    Examples
    --------
    >>> str(ConfigError("searcher.name", "bogus", "one of single, grid, random, asha"))
    "searcher.name = 'bogus' is not valid: expected one of single, grid, random, asha"
    """

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        shown = key if key.isprintable() else repr(key)  # a line break in a key: still one line
        super().__init__(f"{shown} = {value!r} is not valid: expected {expected}")
