"""detflow's errors: one base, each kind with the exit status a command ends with.

Every error detflow raises on purpose is a :class:`DetflowError`: its message is one line a
user can act on, and its class says how a command ends (:attr:`DetflowError.exit_code`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "ConfigError",
    "CorruptCheckpoint",
    "DetflowError",
    "MalformedFile",
    "MalformedResults",
    "NotResultsError",
    "SweepFailed",
    "TrialError",
    "config_error_in",
]


class DetflowError(Exception):
    """Base of every error detflow raises on purpose: one line naming what is wrong.

    >>> DetflowError.exit_code, ConfigError.exit_code, TrialError.exit_code
    (1, 2, 1)
    """

    #: The exit status of a command that ends with this error.
    exit_code: ClassVar[int] = 1


class ConfigError(DetflowError, ValueError):
    """A bad configuration value: one line naming the key, the value and what is accepted.

    Examples
    --------
    >>> str(ConfigError("searcher.name", "bogus", "one of single, grid, random, asha"))
    "searcher.name = 'bogus' is not valid: expected one of single, grid, random, asha"
    """

    exit_code = 2

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        shown = key if key.isprintable() else repr(key)  # a line break in a key: still one line
        super().__init__(f"{shown} = {value!r} is not valid: expected {expected}")

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, Any, str]]:
        return (type(self), (self.key, self.value, self.expected))

    def for_input_of(self, key: str) -> ConfigError:
        """This error, seen while resolving ``key`` (an expression that reads this key).

        >>> str(ConfigError("hyperparameters.global_batch_size", 0, "a positive integer")
        ...     .for_input_of("hyperparameters.lr"))
        'hyperparameters.global_batch_size = 0 is not valid: expected a positive integer, \
for hyperparameters.lr'
        """
        if key == self.key:
            return self
        return ConfigError(self.key, self.value, f"{self.expected}, for {key}")


class TrialError(DetflowError, RuntimeError):
    """The trial itself failed (a loss that is not finite, data that yields nothing), or
    the harness could not write its files (a full disk): one line that says why."""


class CorruptCheckpoint(DetflowError):
    """A checkpoint (or ``latest.json``) that is there but cannot be read: one line naming
    the file, why, and what to do.

    Examples
    --------
    >>> str(CorruptCheckpoint(Path("run/checkpoints/0000000040/trial.json"),
    ...                       ValueError("Expecting value"), "delete it"))
    'run/checkpoints/0000000040/trial.json is corrupt (Expecting value): delete it'
    """

    exit_code = 2

    def __init__(self, path: Path, reason: BaseException | str, advice: str) -> None:
        why = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
        self.path, self.why, self.advice = Path(path), why, advice
        super().__init__(f"{path} is corrupt ({why}): {advice}")

    def __reduce__(self) -> tuple[type[CorruptCheckpoint], tuple[Path, str, str]]:
        return (type(self), (self.path, self.why, self.advice))


class NotResultsError(DetflowError, ValueError):
    """The path is not a run or sweep directory; the message is one line saying why."""

    exit_code = 2


class MalformedResults(NotResultsError):
    """A ``results.csv`` row that detflow's sweeper did not write: ``why`` says what is wrong.

    >>> print(MalformedResults(Path("s/results.csv"), 3, "x,y", "2 cells, the header has 10"))
    s/results.csv row 3 'x,y' is not a trial as detflow's sweeper writes it
    (2 cells, the header has 10): delete the file to rebuild it from searcher.json
    """

    def __init__(self, path: Path, row: int, text: str, why: str) -> None:
        self.path, self.row, self.text, self.why = path, row, text, why
        super().__init__(
            f"{path} row {row} {text[:60]!r} is not a trial as detflow's sweeper writes it "
            f"({why}): delete the file to rebuild it from searcher.json"
        )

    def __reduce__(self) -> tuple[type[MalformedResults], tuple[Path, int, str, str]]:
        return (type(self), (self.path, self.row, self.text, self.why))


class MalformedFile(NotResultsError):
    """A line of a file detflow writes (``metrics.jsonl``) that it did not write: one line
    naming the file, the line number and what is wrong.

    >>> print(MalformedFile(Path("r/metrics.jsonl"), 3, "a JSON list, not an object"))
    r/metrics.jsonl line 3 is not as detflow writes it (a JSON list, not an object): ...
    """

    def __init__(self, path: Path, line: int, why: str) -> None:
        self.path, self.line, self.why = path, line, why
        super().__init__(
            f"{path} line {line} is not as detflow writes it ({why}): restore it, or move the "
            "run directory away"
        )

    def __reduce__(self) -> tuple[type[MalformedFile], tuple[Path, int, str]]:
        return (type(self), (self.path, self.line, self.why))


class SweepFailed(DetflowError):
    """Some trials of a sweep failed: it ends with a non-zero exit status and this one line."""


def config_error_in(exc: BaseException | None) -> ConfigError | None:
    """The :class:`ConfigError` behind ``exc``, found by walking its chain of causes.

    >>> try:
    ...     try:
    ...         raise ConfigError("seed", -1, "an integer >= 0")
    ...     except ConfigError as inner:
    ...         raise RuntimeError("while resolving") from inner
    ... except RuntimeError as outer:
    ...     print(config_error_in(outer))
    seed = -1 is not valid: expected an integer >= 0
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, ConfigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
