"""The contract between the sweeper, a trial's process and the readers: names and files.

Every environment variable, file name and file layout that one process writes and another
reads is defined here, once: :class:`TrialStatus` (``results.csv``), :class:`RunEnd` and
:class:`TrialResult` (``result.json``), :class:`HparamRecord` (``hparams.json``), and the
``results.csv`` columns with their writer and reader side by side.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any

from detflow._core.errors import ConfigError, MalformedFile, MalformedResults
from detflow._core.files import LOCK_NAME, write_atomic
from detflow._core.merge import Source

__all__ = [
    "CHECKPOINTS_DIR",
    "HPARAMS_FILE",
    "JOURNAL_FILE",
    "LOCK_FILE",
    "METRICS_FILE",
    "PARENT_FILE",
    "RESULTS_COLUMNS_HEAD",
    "RESULTS_COLUMNS_TAIL",
    "RESULTS_FILE",
    "RESULT_FILE",
    "SEARCHER_KEYS_ENV",
    "STATE_FILE",
    "TARGET_LENGTH_ENV",
    "HparamRecord",
    "Refusal",
    "RunEnd",
    "SavedSweep",
    "SweepState",
    "TrialResult",
    "TrialStatus",
    "read_metrics_file",
    "read_results_csv",
    "results_header",
    "results_row",
]

# -- environment: what the sweeper tells a trial's process ------------------------------------
#: The length a sweep's trial trains to this time (an ASHA rung), as ``"<value> <unit>"``.
TARGET_LENGTH_ENV = "DETFLOW_TARGET_LENGTH"
#: Dotted hyperparameter keys the searcher chose for this trial, comma-separated.
SEARCHER_KEYS_ENV = "DETFLOW_SEARCHER_KEYS"

# -- files of a run directory -----------------------------------------------------------------
RESULT_FILE = "result.json"
HPARAMS_FILE = "hparams.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
#: A pbt child's origin: ``{"parent": <trial id>, "batches": <its checkpoint's>}``, written
#: by the sweep driver when it copies the parent's checkpoint into the child's directory.
PARENT_FILE = "parent.json"

# -- files of a sweep directory ---------------------------------------------------------------
RESULTS_FILE = "results.csv"
STATE_FILE = "searcher.json"
#: The events since ``searcher.json`` was written (:mod:`detflow._core.journal`).
JOURNAL_FILE = "searcher.journal.jsonl"
LOCK_FILE = LOCK_NAME


class TrialStatus(str, Enum):
    """A trial's status in a search (``results.csv``, ``detflow summary``).

    >>> TrialStatus("STOPPED_EARLY").finished, str(TrialStatus.FAILED)
    (True, 'FAILED')
    """

    RUNNING = "RUNNING"
    #: waiting below the top rung for a promotion that may still come
    PENDING = "PENDING"
    #: finished the top rung
    COMPLETED = "COMPLETED"
    #: below the top rung when the search ended
    STOPPED_EARLY = "STOPPED_EARLY"
    FAILED = "FAILED"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Whether the trial trains no more in this search."""
        return self in (TrialStatus.COMPLETED, TrialStatus.STOPPED_EARLY, TrialStatus.FAILED)


class RunEnd(str, Enum):
    """How a run's training ended (``result.json``'s ``status``)."""

    #: trained to its target
    COMPLETED = "completed"
    #: stopped on request before its target (pre-empted): checkpointed, resumable
    STOPPED = "stopped"
    #: stopped at once: training showed the experiment's config wrong (``refused`` says how),
    #: so no trial of it is worth running
    REFUSED = "refused"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Refusal:
    """A config value that training showed wrong (``searcher.metric`` the trial does not
    report): the :class:`ConfigError` a run ended with, as ``result.json`` holds it.

    >>> str(Refusal("searcher.metric", "validation_acc", "one of validation_loss").error())
    "searcher.metric = 'validation_acc' is not valid: expected one of validation_loss"
    """

    key: str
    value: str
    expected: str

    def error(self) -> ConfigError:
        """The error, as the run raised it."""
        return ConfigError(self.key, self.value, self.expected)


@dataclass(frozen=True)
class TrialResult:
    """``result.json``: how a run ended, written by the harness, read by the sweeper and
    ``detflow summary``.

    >>> r = TrialResult(RunEnd.COMPLETED, records=64, batches=2, steps=2, epochs=1,
    ...                 target_batches=2, batches_per_epoch=2, global_batch_size=32,
    ...                 aggregation_frequency=1, length=Fraction(1), unit="epochs",
    ...                 metric=0.5, best_metric=0.5, validation={"validation_loss": 0.5})
    >>> TrialResult.from_json(r.to_json()) == r
    True
    >>> refused = dataclasses.replace(r, status=RunEnd.REFUSED,
    ...                               refused=Refusal("searcher.metric", "acc", "validation_loss"))
    >>> TrialResult.from_json(refused.to_json()).refused.error().key
    'searcher.metric'
    """

    status: RunEnd
    records: int
    batches: int
    steps: int
    epochs: int
    target_batches: int
    batches_per_epoch: int | None
    global_batch_size: int
    aggregation_frequency: int
    length: Fraction
    unit: str
    metric: float | None
    best_metric: float | None
    validation: dict[str, float] = field(default_factory=dict)
    #: why the run was refused (status ``refused``), else ``None``
    refused: Refusal | None = None

    def to_json(self) -> dict[str, Any]:
        refused = self.refused
        return {
            "status": self.status.value,
            "records": self.records,
            "batches": self.batches,
            "steps": self.steps,
            "epochs": self.epochs,
            "target_batches": self.target_batches,
            "batches_per_epoch": self.batches_per_epoch,
            "global_batch_size": self.global_batch_size,
            "aggregation_frequency": self.aggregation_frequency,
            "length": str(self.length),
            "unit": self.unit,
            "metric": self.metric,
            "best_metric": self.best_metric,
            "validation": self.validation,
            "refused": None if refused is None else dataclasses.asdict(refused),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialResult:
        """A result as :meth:`to_json` wrote it; ``ValueError`` naming the first bad field."""

        def integer(name: str, *, optional: bool = False) -> Any:
            value = data.get(name)
            if value is None and optional:
                return None
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} {value!r} is not a count")
            return value

        def number(name: str) -> float | None:
            value = data.get(name)
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} {value!r} is not a number")
            return float(value)

        try:
            status = RunEnd(data.get("status"))
            length = Fraction(str(data.get("length")))
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"status {data.get('status')!r} or length {data.get('length')!r} is not valid"
            ) from None
        validation = data.get("validation") or {}
        if not isinstance(validation, dict):
            raise ValueError(f"validation {validation!r} is not an object")
        refused = data.get("refused")
        names = [f.name for f in dataclasses.fields(Refusal)]
        if (refused is None) != (status is not RunEnd.REFUSED) or not (
            refused is None
            or (
                isinstance(refused, dict)
                and sorted(refused) == sorted(names)
                and all(isinstance(v, str) for v in refused.values())
            )
        ):
            raise ValueError(f"refused {refused!r} does not go with status {status.value!r}")
        return cls(
            status=status,
            records=integer("records"),
            batches=integer("batches"),
            steps=integer("steps"),
            epochs=integer("epochs"),
            target_batches=integer("target_batches"),
            batches_per_epoch=integer("batches_per_epoch", optional=True),
            global_batch_size=integer("global_batch_size"),
            aggregation_frequency=integer("aggregation_frequency"),
            length=length,
            unit=str(data.get("unit")),
            metric=number("metric"),
            best_metric=number("best_metric"),
            validation=dict(validation),
            refused=None if refused is None else Refusal(**refused),
        )

    @classmethod
    def read(cls, run_dir: Path) -> TrialResult | None:
        """The run's ``result.json``; None when there is none or it is not one."""
        try:
            data = json.loads((run_dir / RESULT_FILE).read_text())
            return cls.from_json(data) if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def write(self, run_dir: Path) -> None:
        """Write ``result.json`` atomically."""
        text = json.dumps(self.to_json(), indent=2) + "\n"
        write_atomic(run_dir / RESULT_FILE, text.encode())


@dataclass(frozen=True)
class HparamRecord:
    """One hyperparameter in ``hparams.json``: its value, source layer and expression.

    >>> HparamRecord(0.2, Source.CODE, "${df.scale:0.1,linear}").to_json()
    {'value': 0.2, 'source': 'code', 'expression': '${df.scale:0.1,linear}'}
    """

    value: Any
    source: Source
    expression: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source.value}
        if self.expression is not None:
            out["expression"] = self.expression
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HparamRecord:
        """A record as :meth:`to_json` wrote it; ``ValueError`` if it is not one."""
        if not isinstance(data, Mapping) or "value" not in data:
            raise ValueError(f"{data!r} is not a {{value, source}} object")
        expression = data.get("expression")
        return cls(data["value"], Source(data.get("source")), expression)


# -- metrics.jsonl: one JSON object per report, appended line by line ------------------------
def read_metrics_file(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a ``metrics.jsonl`` and whether its last line was cut short (a crash
    while it was written: the only damage a run leaves, skipped). Any other line that is
    not a JSON object (invalid UTF-8, NUL bytes, a list) is a :class:`MalformedFile` naming
    the line.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / METRICS_FILE
    >>> _ = p.write_text('{"kind": "train", "batches": 1}\\n{"kind": "tra')
    >>> read_metrics_file(p)
    ([{'kind': 'train', 'batches': 1}], True)
    >>> _ = p.write_text('[1]\\n{"kind": "train", "batches": 1}\\n')
    >>> read_metrics_file(p)
    Traceback (most recent call last):
    ...
    detflow._core.errors.MalformedFile: ... line 1 is not as detflow writes it (a JSON list, ...
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    except OSError as exc:
        raise MalformedFile(path, 0, exc.strerror or type(exc).__name__) from None
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline that ends the last record
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        why = _bad_record(raw)
        if why is None:
            records.append(json.loads(raw))
        elif number == len(lines) and not data.endswith(b"\n"):
            return records, True  # a record cut short by a crash
        else:
            raise MalformedFile(path, number, why)
    return records, False


def _bad_record(raw: bytes) -> str | None:
    if b"\x00" in raw:
        return "NUL bytes"
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError as exc:
        return f"not JSON: {str(exc).splitlines()[0]}"
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    return None


# -- searcher.json: the search's state, which proves itself ----------------------------------
@dataclass(frozen=True)
class SavedSweep:
    """What ``searcher.json`` holds: the searcher's state and the driver's own (restarts),
    and how many of the search's events (``searcher.journal.jsonl``) they hold."""

    searcher: dict[str, Any]
    driver: dict[str, Any] = field(default_factory=dict)
    events: int = 0


class SweepState:
    """``searcher.json``: ``{"version", "searcher", "driver", "sha256"}``. The checksum covers
    the searcher's state and the driver's (each trial's restarts), so a file edited by hand
    (or damaged) is refused, never read silently. A state without ``driver`` (written before
    there was one) is checked over the searcher's state alone.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / STATE_FILE
    >>> _ = SweepState.write(path, {"trials": []}, {"restarts": {"0": 1}})
    >>> SweepState.read(path), SweepState.load(path).driver
    ({'trials': []}, {'restarts': {'0': 1}})
    >>> _ = path.write_text(path.read_text().replace("[]", "[1]"))
    >>> SweepState.read(path)
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: ... is not valid: expected the file as detflow's sweeper ...
    """

    VERSION = 1
    _ADVICE = (
        "the file as detflow's sweeper wrote it (it was edited or damaged); restore it, or use "
        "a new hydra.sweep.dir to start the search over"
    )

    @staticmethod
    def _digest(searcher: Any, driver: Any = None, events: Any = None) -> str:
        covered = searcher if driver is None else {"searcher": searcher, "driver": driver}
        if events is not None:  # written with the journal: the count is covered too
            covered = {"searcher": searcher, "driver": driver, "events": events}
        text = json.dumps(covered, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @classmethod
    def write(
        cls,
        path: Path,
        searcher: Mapping[str, Any],
        driver: Mapping[str, Any] | None = None,
        *,
        events: int | None = None,
    ) -> int:
        """Write the state with its version and checksum, atomically; ``events``: how many
        of the search's journal events it holds. Returns the bytes written."""
        envelope: dict[str, Any] = {"version": cls.VERSION, "searcher": searcher}
        if driver is not None:
            envelope["driver"] = driver
        if events is not None:
            envelope["events"] = events
        envelope["sha256"] = cls._digest(searcher, driver, events)
        data = json.dumps(envelope).encode()
        write_atomic(path, data)
        return len(data)

    @classmethod
    def read(cls, path: Path) -> dict[str, Any] | None:
        """The searcher's state; None without a file; a :class:`ConfigError` naming the file
        when it is not one this release wrote, unchanged."""
        saved = cls.load(path)
        return None if saved is None else saved.searcher

    @classmethod
    def load(cls, path: Path) -> SavedSweep | None:
        """The searcher's and the driver's state, checked as :meth:`read` checks them."""
        try:
            envelope = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(str(path), why, cls._ADVICE) from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("searcher"), dict):
            raise ConfigError(str(path), "not a search state", cls._ADVICE)
        if envelope.get("version") != cls.VERSION:
            raise ConfigError(
                str(path),
                f"version {envelope.get('version')!r}",
                f"version {cls.VERSION}, the one this detflow writes; use the detflow that "
                "wrote it, or a new hydra.sweep.dir",
            )
        searcher: dict[str, Any] = envelope["searcher"]
        driver = envelope.get("driver")
        if driver is not None and not isinstance(driver, dict):
            raise ConfigError(str(path), "not a search state", cls._ADVICE)
        events = envelope.get("events")
        if events is not None and (type(events) is not int or events < 0):
            raise ConfigError(str(path), "not a search state", cls._ADVICE)
        if envelope.get("sha256") != cls._digest(searcher, driver, events):
            raise ConfigError(str(path), "its checksum does not match", cls._ADVICE)
        return SavedSweep(searcher, driver or {}, events or 0)


# -- results.csv: one row per trial, written whole by the sweeper -----------------------------
RESULTS_COLUMNS_HEAD = ("trial_id", "status", "rung")
#: ``parent``: the trial whose checkpoint a pbt child started from (blank for the others).
RESULTS_COLUMNS_TAIL = (
    "batches",
    "best_metric",
    "last_metric",
    "restarts",
    "error",
    "dir",
    "parent",
)


def results_header(hparam_keys: Sequence[str], unit: str) -> list[str]:
    """The columns: id, status, rung, one per hyperparameter, the length trained, the rest."""
    return [*RESULTS_COLUMNS_HEAD, *hparam_keys, f"length_{unit}", *RESULTS_COLUMNS_TAIL]


def results_row(cells: Iterable[Any]) -> str:
    """One ``results.csv`` line (quoted as CSV needs).

    >>> results_row([0, TrialStatus.COMPLETED, 0, "a,b"])
    '0,COMPLETED,0,"a,b"\\n'
    """
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow([str(c) for c in cells])
    return line.getvalue()


def read_results_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """``results.csv``'s header and rows; ``([], [])`` when there is none yet.

    It is written whole (atomically) by detflow's sweeper, so a row that does not read as
    one of its trials is a :class:`MalformedResults`, never skipped.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "results.csv"
    >>> _ = p.write_text("trial_id,status,rung,batches\\n0,COMPLETED,0,12\\n")
    >>> read_results_csv(p)
    (['trial_id', 'status', 'rung', 'batches'], [{'trial_id': '0', 'status': 'COMPLETED', \
'rung': '0', 'batches': '12'}])
    """
    try:
        with open(path, newline="") as handle:
            table = [cells for cells in csv.reader(handle) if cells]
    except FileNotFoundError:
        return [], []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MalformedResults(path, 0, "", str(exc).splitlines()[0]) from None
    if not table:
        return [], []
    header, *body = table
    missing = [name for name in RESULTS_COLUMNS_HEAD if name not in header]
    if missing or len(set(header)) != len(header):
        what = f"no {', '.join(missing)} column" if missing else "a column name repeats"
        raise MalformedResults(path, 0, ",".join(header), f"the header has {what}")
    rows: list[dict[str, str]] = []
    for number, cells in enumerate(body, start=1):
        text = ",".join(cells)
        if len(cells) != len(header):
            raise MalformedResults(
                path, number, text, f"{len(cells)} cells, the header has {len(header)}"
            )
        row = dict(zip(header, cells, strict=True))
        why = _bad_cell(row)
        if why is not None:
            raise MalformedResults(path, number, text, why)
        rows.append(row)
    return header, rows


def _bad_cell(row: Mapping[str, str]) -> str | None:
    """What is wrong with a ``results.csv`` row's fixed columns, if anything."""
    statuses = [s.value for s in TrialStatus]
    if not _is_count(row["trial_id"]):
        return f"trial_id {row['trial_id']!r} is not a trial number"
    if row["status"] not in statuses:
        return f"status {row['status']!r} is not one of {', '.join(statuses)}"
    if not _is_count(row["rung"]):
        return f"rung {row['rung']!r} is not a rung number"
    for name, value in row.items():
        if not value:
            continue
        if name == "batches" and not _is_count(value, signed=True):
            return f"batches {value!r} is not an integer"
        if name == "restarts" and not _is_count(value):
            return f"restarts {value!r} is not a count"
        if name == "parent" and not _is_count(value):
            return f"parent {value!r} is not a trial number"
        if name in ("best_metric", "last_metric") and not _is_float(value):
            return f"{name} {value!r} is not a number"
        if name.startswith("length_") and not _is_fraction(value):
            return f"{name} {value!r} is not a number"
    return None


def _is_count(text: str, *, signed: bool = False) -> bool:
    try:
        value = int(text)
    except ValueError:
        return False
    return signed or value >= 0


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_fraction(text: str) -> bool:
    try:
        Fraction(text)
    except (ValueError, ZeroDivisionError):
        return False
    return True
