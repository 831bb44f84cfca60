"""How values and numbers are written in messages and files: one rule each."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

__all__ = ["Verbatim", "fraction_text", "shown"]


class Verbatim:
    """A value already written as text in an error message: its ``repr`` is that text.

    >>> repr(Verbatim("2 x 3 = 6 grid points"))
    '2 x 3 = 6 grid points'
    """

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def shown(value: Any) -> Any:
    """``value`` itself when its ``repr`` works, else a stand-in that says what it was.

    >>> shown(12), shown(10**5000)
    (12, <int too large to print>)
    """
    try:
        repr(value)
    except ValueError:  # int too large to convert to a string
        return Verbatim(f"<{type(value).__name__} too large to print>")
    return value


def fraction_text(value: Fraction) -> str:
    """A length as a sweep's lines and ``results.csv`` write it: whole, or 6 digits.

    >>> fraction_text(Fraction(12)), fraction_text(Fraction(1, 3))
    ('12', '0.333333')
    """
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.6g}"
