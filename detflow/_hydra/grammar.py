"""Hydra's override grammar, re-worded: the key, the value, and what is accepted.

Hydra's parser reports ``no viable alternative at input '[1,'`` with no key; a user typing
``searcher.max_length=１０ batches`` (full-width digits) is not told that the digits are
the problem. :func:`override_error` finds the argument that does not parse and says so in
detflow's one line.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from detflow._core.errors import ConfigError
from detflow._core.text import Verbatim

__all__ = ["override_error"]

_KEY = re.compile(r"^(\+\+|\+|~)?[A-Za-z_][\w.\-/@]*$")
_ACCEPTED = (
    "a value in Hydra's override grammar (quote text with spaces or brackets: "
    "key='a b'; lists [1,2]; sweeps choice(1,2), interval(0.1,1))"
)


def non_ascii_digits(text: str) -> str:
    """The digits of ``text`` that are not ASCII (``'１０'``), or ''.

    >>> non_ascii_digits("１０ batches"), non_ascii_digits("10 batches")
    ('１０', '')
    """
    return "".join(c for c in text if not c.isascii() and unicodedata.category(c) == "Nd")


def _reworded(argument: str, exc: Exception) -> ConfigError:
    key, equals, value = argument.partition("=")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if not equals:
        return ConfigError(argument, Verbatim("(no value)"), f"key=value ({first})")
    if not _KEY.match(key):
        return ConfigError(
            key if key.isprintable() else repr(key),
            Verbatim("(a key)"),
            f"a dotted key such as hyperparameters.lr, with + to add or ~ to delete ({first})",
        )
    digits = non_ascii_digits(value)
    if digits:
        ascii_form = "".join(str(unicodedata.digit(c)) for c in digits)
        return ConfigError(
            key, value, f"ASCII digits: {digits!r} are not ASCII digits (write {ascii_form})"
        )
    if any(unicodedata.east_asian_width(c) == "F" for c in value):
        return ConfigError(
            key, value, f"ASCII letters: {value!r} is written in full-width characters"
        )
    return ConfigError(key, value, f"{_ACCEPTED} ({first})")


def override_error(arguments: Sequence[str]) -> ConfigError | None:
    """The :class:`ConfigError` for the first command-line override Hydra cannot parse.

    >>> print(override_error(["+experiment=x", "hyperparameters.lr=[1,"]))
    hyperparameters.lr = '[1,' is not valid: expected a value in Hydra's override grammar ...
    >>> print(override_error(["searcher.name=ｇｒｉｄ"]))
    searcher.name = 'ｇｒｉｄ' is not valid: expected ASCII letters: 'ｇｒｉｄ' is written in \
full-width characters
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for argument in arguments:
        if argument.startswith("-"):
            continue
        try:
            parser.parse_override(argument)
        except Exception as exc:  # Hydra's parser raises its own error types
            return _reworded(argument, exc)
    return None
