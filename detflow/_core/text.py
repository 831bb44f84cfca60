"""How values and numbers are written in messages and files: one rule each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

__all__ = ["Verbatim", "fraction_text", "hparams_text", "number_text", "short_names", "shown"]


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


def number_text(value: Any, digits: int = 4) -> str:
    """A number as a person reads it in a line or a table: whole numbers whole, the rest to
    ``digits`` significant digits; anything else as ``str`` (``None`` as nothing).

    >>> number_text(0.15239160548387132), number_text(Fraction(19, 32)), number_text(4.0)
    ('0.1524', '0.5938', '4')
    >>> number_text(True), number_text(None), number_text("relu"), number_text(1e-7)
    ('true', '', 'relu', '1e-07')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Fraction):
        if value.denominator == 1:
            return str(value.numerator)
        value = float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def short_names(keys: Iterable[str]) -> dict[str, str]:
    """Each dotted key without ``hyperparameters.`` where that leaves them all distinct.

    >>> short_names(["hyperparameters.lr", "records_per_epoch"])
    {'hyperparameters.lr': 'lr', 'records_per_epoch': 'records_per_epoch'}
    >>> short_names(["hyperparameters.seed", "seed"])
    {'hyperparameters.seed': 'hyperparameters.seed', 'seed': 'seed'}
    """
    keys = list(keys)
    short = {k: k.removeprefix("hyperparameters.") for k in keys}
    return short if len(set(short.values())) == len(short) else {k: k for k in keys}


def hparams_text(hparams: Mapping[str, Any], order: Iterable[str] = ()) -> str:
    """Hyperparameters as a sweep's lines write them: ``lr=0.02677 act=relu``; the keys in
    ``order`` (the search's) first, the others as given.

    >>> hparams_text({"hyperparameters.act": "relu", "hyperparameters.lr": 0.026766473492},
    ...              order=["hyperparameters.lr"])
    'lr=0.02677 act=relu'
    """
    keys = [*(k for k in order if k in hparams), *(k for k in hparams if k not in order)]
    names = short_names(keys)
    return " ".join(f"{names[k]}={number_text(hparams[k])}" for k in dict.fromkeys(keys))
