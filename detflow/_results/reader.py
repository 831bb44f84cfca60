"""Run and sweep directories read back: what ``detflow summary``, ``plot`` and ``explain`` show.

Reading is tolerant of what a live run leaves: a sweep that is still running, a trial that
has not written its ``result.json`` yet, a ``metrics.jsonl`` whose last line was cut short all
read as far as they go. Files detflow writes whole (atomically) are not: a ``hparams.json``,
``result.json``, ``searcher.json`` or ``results.csv`` that cannot be read, or a finished trial
whose directory is gone, is a :class:`NotResultsError` naming the file, rather than a table
that silently leaves it out. Nothing here writes.

A *run directory* holds ``hparams.json``, ``metrics.jsonl`` and, once ``fit`` returned,
``result.json`` (and Hydra's ``.hydra/config.yaml``). A *sweep directory* holds
``results.csv`` and ``searcher.json`` (detflow's sweeper) or, for any other sweeper, one run
directory per job.

Examples
--------
>>> import json, tempfile
>>> from pathlib import Path
>>> run_dir = Path(tempfile.mkdtemp())
>>> _ = (run_dir / "result.json").write_text(json.dumps(
...     {"status": "completed", "batches": 64, "unit": "epochs", "length": "2"}))
>>> run = load(run_dir)
>>> run.status, run.result["batches"]
('completed', 64)
>>> load(Path(tempfile.mkdtemp()))
Traceback (most recent call last):
...
detflow._core.errors.NotResultsError: ... is not a run or sweep directory (it is empty): ...
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from detflow._core.artifacts import (
    HPARAMS_FILE,
    METRICS_FILE,
    RESULT_FILE,
    RESULTS_COLUMNS_HEAD,
    RESULTS_COLUMNS_TAIL,
    RESULTS_FILE,
    STATE_FILE,
    RunEnd,
    SweepState,
    TrialStatus,
    read_metrics_file,
    read_results_csv,
)
from detflow._core.errors import ConfigError, NotResultsError
from detflow._core.paths import get_path
from detflow._core.schema import SearcherConfig
from detflow._core.text import number_text
from detflow._core.units import BatchMath, Length, Unit, parse_length
from detflow._search.searchers import rank_key, trial_status

__all__ = [
    "Hparam",
    "RunDir",
    "SweepDir",
    "TrialSummary",
    "format_number",
    "format_table",
    "load",
    "read_config",
    "read_metrics",
]

UNFINISHED = "unfinished (no result.json: still running, or failed; see its train.log)"
_RUN_FILES = (HPARAMS_FILE, RESULT_FILE, METRICS_FILE)
_DEFAULTS = SearcherConfig()  # the schema is the one table of defaults
ACCEPTED = "the output directory of `python train.py ...` (a run) or `... -m ...` (a sweep)"


@dataclass(frozen=True)
class Hparam:
    """One entry of ``hparams.json``: value, source layer and the expression it came from.

    >>> Hparam("hyperparameters.lr", 0.2, "config", "${df.scale:0.1,linear}").name
    'lr'
    """

    key: str
    value: Any
    source: str
    expression: str | None = None

    @property
    def name(self) -> str:
        """The key without its ``hyperparameters.`` prefix."""
        return self.key.removeprefix("hyperparameters.")


@dataclass
class RunDir:
    """One trial's run directory, as far as it has been written."""

    path: Path
    hparams: dict[str, Hparam]
    result: dict[str, Any] | None
    config: dict[str, Any] | None
    _metrics: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def status(self) -> str:
        """``completed`` or ``stopped`` (from ``result.json``); ``unfinished`` without one."""
        if self.result is None:
            return "unfinished"
        return str(self.result.get("status", "unknown"))

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (empty when there is none), read once."""
        if self._metrics is None:
            self._metrics = read_metrics(self.path / "metrics.jsonl")
        return self._metrics

    def config_value(self, dotted: str, default: Any = None) -> Any:
        """A value of ``.hydra/config.yaml`` at a dotted key, unresolved.

        >>> RunDir(Path("."), {}, None, {"searcher": {"metric": "acc"}}).config_value(
        ...     "searcher.metric")
        'acc'
        """
        value = get_path(self.config or {}, dotted, None)
        return default if value is None else value

    @property
    def metric_name(self) -> str:
        """``searcher.metric`` (``validation_loss`` when the config does not say)."""
        return str(self.config_value("searcher.metric", _DEFAULTS.metric))

    @property
    def smaller_is_better(self) -> bool:
        """``searcher.smaller_is_better`` (true when the config does not say)."""
        return bool(self.config_value("searcher.smaller_is_better", True))

    @property
    def unit(self) -> Unit | None:
        """The searcher's length unit: ``result.json``'s, else ``searcher.max_length``'s."""
        if self.result and self.result.get("unit") in {u.value for u in Unit}:
            return Unit(self.result["unit"])
        length = self.length("searcher.max_length")
        return length.unit if length else None

    def length(self, dotted: str) -> Length | None:
        """A length of the config (``searcher.max_length``, ``min_validation_period``...)."""
        raw = self.config_value(dotted)
        if isinstance(raw, Mapping) and len(raw) > 1:
            raw = dict([list(raw.items())[-1]])  # merged layers: the unit given last wins
        try:
            return parse_length(raw, dotted) if raw is not None else None
        except ConfigError:
            return None

    def geometry(self) -> BatchMath | None:
        """The run's batch geometry (batch size, aggregation, epoch length when known).

        From ``result.json`` when the run finished, else from the config and
        ``hparams.json`` (the epoch is then known only through ``records_per_epoch``).
        """
        result = self.result or {}
        gbs = result.get("global_batch_size")
        if gbs is None and "hyperparameters.global_batch_size" in self.hparams:
            gbs = self.hparams["hyperparameters.global_batch_size"].value
        agg = result.get(
            "aggregation_frequency", self.config_value("optimizations.aggregation_frequency", 1)
        )
        epoch = result.get("batches_per_epoch")
        records_per_epoch = self.config_value("records_per_epoch")
        if not isinstance(gbs, int) or not isinstance(agg, int):
            return None
        try:
            if epoch is None and isinstance(records_per_epoch, int):
                return BatchMath.from_records_per_epoch(gbs, agg, records_per_epoch)
            return BatchMath(gbs, agg, epoch if isinstance(epoch, int) else None)
        except ConfigError:
            return None

    def latest(self, kind: str) -> dict[str, Any] | None:
        """The last ``metrics.jsonl`` record of ``kind`` (``train`` or ``validation``)."""
        for record in self.metrics[::-1]:
            if record.get("kind") == kind:
                return record
        return None


@dataclass(frozen=True)
class TrialSummary:
    """One trial of a sweep: one row of ``detflow summary``.

    ``metric`` is ``searcher.metric`` at the end of the furthest rung the trial reported
    (``metric_rung``, ``None`` while nothing was reported); ``best_metric`` the best
    ``searcher.metric`` at any of its validations, which trials rank by (after the rung, as
    :func:`~detflow._search.searchers.rank_key` says).
    """

    trial_id: int
    status: TrialStatus
    rung: int
    hparams: dict[str, Any]
    length: Fraction | None
    batches: int | None
    metric: float | None
    metric_rung: int | None
    best_metric: float | None
    error: str | None
    dir: Path
    #: times the sweep restarted the trial from its last checkpoint (``max_restarts``)
    restarts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready data (lengths as numbers, paths as strings)."""
        return {
            "trial_id": self.trial_id,
            "status": self.status.value,
            "rung": self.rung,
            "hparams": self.hparams,
            "length": _json_number(self.length),
            "batches": self.batches,
            "metric": self.metric,
            "best_metric": self.best_metric,
            "restarts": self.restarts,
            "error": self.error,
            "dir": str(self.dir),
        }


@dataclass(frozen=True)
class SweepDir:
    """A sweep directory: its trials ranked best first, and what the search was."""

    path: Path
    trials: list[TrialSummary]
    metric: str
    smaller_is_better: bool
    unit: Unit | None
    searcher: str | None
    rung_lengths: tuple[Fraction, ...] = ()
    keys: list[str] = field(default_factory=list)

    @property
    def best(self) -> TrialSummary | None:
        """The best trial that did not fail and reported a metric."""
        first = self.trials[0] if self.trials else None
        return first if first is not None and _has_metric(first) else None

    def run(self, trial: TrialSummary) -> RunDir | None:
        """The trial's run directory, if it has one yet."""
        return load_run(trial.dir) if trial.dir.is_dir() else None

    def validation(self, trial: TrialSummary) -> dict[str, float]:
        """Every metric of the trial's last recorded validation (``result.json``'s, the one
        ``metric`` is from); empty while it has none."""
        result = _read_json_object(trial.dir / RESULT_FILE) if trial.dir.is_dir() else None
        found = (result or {}).get("validation")
        if not isinstance(found, dict):
            return {}
        return {str(k): float(v) for k, v in found.items() if _is_number(v)}


def load(path: Path) -> RunDir | SweepDir:
    """The run or sweep directory at ``path``; :class:`NotResultsError` if it is neither."""
    if not path.exists():
        raise NotResultsError(f"{path} does not exist: give {ACCEPTED}")
    if not path.is_dir():
        raise NotResultsError(f"{path} is a file, not a directory: give {ACCEPTED}")
    if (path / RESULTS_FILE).is_file() or (path / STATE_FILE).is_file():
        return load_sweep(path)
    if any((path / name).is_file() for name in _RUN_FILES):
        return load_run(path)
    if _trial_dirs(path):
        return load_sweep(path)
    names = ", ".join([*_RUN_FILES, RESULTS_FILE, STATE_FILE])
    what = "it is empty" if not any(path.iterdir()) else f"it has none of {names}"
    raise NotResultsError(f"{path} is not a run or sweep directory ({what}): give {ACCEPTED}")


def load_run(path: Path) -> RunDir:
    """Read a run directory; every file is optional, but one that is there must be readable."""
    raw = _read_json_object(path / "hparams.json")
    hparams: dict[str, Hparam] = {}
    if isinstance(raw, dict):
        for key, entry in raw.items():
            if not isinstance(entry, Mapping) or "value" not in entry:
                raise NotResultsError(
                    f"{path / HPARAMS_FILE} entry {str(key)!r} is not a {{value, source}} "
                    "object as detflow writes it: restore the file, or move it away"
                )
            if isinstance(entry, Mapping):
                hparams[str(key)] = Hparam(
                    str(key),
                    entry.get("value"),
                    str(entry.get("source", "?")),
                    entry.get("expression"),
                )
    return RunDir(
        path,
        hparams,
        _read_json_object(path / "result.json"),
        read_config(path / ".hydra" / "config.yaml"),
    )


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, skipping a last line cut short by a crash; any
    other line that is not a record is a :class:`MalformedFile` naming it.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "metrics.jsonl"
    >>> _ = p.write_text('{"kind": "train", "batches": 1}\\n{"kind": "tra')
    >>> read_metrics(p)
    [{'kind': 'train', 'batches': 1}]
    """
    records, _ = read_metrics_file(path)
    return records


def load_sweep(path: Path) -> SweepDir:
    """Read a sweep directory, whole or still being written; trials ranked best first."""
    try:  # a state edited by hand or damaged is refused, never shown
        saved = SweepState.load(path / STATE_FILE)
    except ConfigError as exc:
        raise NotResultsError(str(exc)) from None
    searcher = saved.searcher if saved is not None else {}
    driver = saved.driver if saved is not None else {}
    settings = searcher.get("settings") if isinstance(searcher.get("settings"), dict) else {}
    assert isinstance(settings, dict)
    rung_lengths = tuple(_fraction(x) or Fraction(0) for x in settings.get("rung_lengths", []))
    header, rows = read_results_csv(path / RESULTS_FILE)

    trials: dict[int, dict[str, Any]] = {}
    keys: list[str] = []
    unit_text: str | None = None
    if header:
        lengths = [c for c in header if c.startswith("length_")]
        unit_text = lengths[0].removeprefix("length_") if lengths else None
        keys = [
            c for c in header if c not in (*RESULTS_COLUMNS_HEAD, *RESULTS_COLUMNS_TAIL, *lengths)
        ]
        for row in rows:
            trial_id = int(row["trial_id"])
            trials[trial_id] = {
                "status": row.get("status") or "UNKNOWN",
                "rung": _int(row.get("rung")) or 0,
                "hparams": {k: _typed(row[k]) for k in keys if row.get(k, "") != ""},
                "length": _fraction(row.get(lengths[0])) if lengths else None,
                "batches": _int(row.get("batches")),
                "best_metric": _float(row.get("best_metric")),
                "last_metric": _float(row.get("last_metric")),
                "restarts": _int(row.get("restarts")),  # None: a results.csv from before
                "error": row.get("error") or None,
                "dir": _trial_dir(path, trial_id, row.get("dir")),
            }
    _merge_state(path, trials, searcher, rung_lengths, keys)
    _merge_restarts(trials, driver)
    for trial_id, t in trials.items():
        if (
            TrialStatus(t["status"]) in (TrialStatus.COMPLETED, TrialStatus.STOPPED_EARLY)
            and not Path(t["dir"]).is_dir()
        ):
            raise NotResultsError(
                f"{path / RESULTS_FILE} lists trial {trial_id} ({t['status']}) in {t['dir']}, "
                "which does not exist: restore that directory (a moved sweep finds its trials "
                "in SWEEP_DIR/<trial id>)"
            )
    if not trials:
        _from_run_dirs(path, trials, keys)

    first_run = _first_run(path, trials)
    metric = first_run.metric_name if first_run else _DEFAULTS.metric
    smaller = settings.get("smaller_is_better")
    if not isinstance(smaller, bool):
        smaller = first_run.smaller_is_better if first_run else True
    unit = Unit(unit_text) if unit_text in {u.value for u in Unit} else None
    if unit is None and first_run is not None:
        unit = first_run.unit
    name = first_run.config_value("searcher.name") if first_run else None

    summaries = [_summary(trial_id, t, path, unit) for trial_id, t in trials.items()]
    summaries.sort(key=lambda t: _rank(t, smaller))
    return SweepDir(
        path,
        summaries,
        metric,
        smaller,
        unit,
        str(name) if name else None,
        rung_lengths,
        keys,
    )


def _merge_state(
    path: Path,
    trials: dict[int, dict[str, Any]],
    searcher: Mapping[str, Any],
    rung_lengths: tuple[Fraction, ...],
    keys: list[str],
) -> None:
    """Fill in (or make) rows from ``searcher.json``: typed hparams, metrics per rung."""
    order = searcher.get("keys")  # the search's own order (the space's), when saved
    if isinstance(order, list) and all(isinstance(k, str) for k in order):
        keys[:] = [*order, *(k for k in keys if k not in order)]
    saved = searcher.get("trials")
    if not isinstance(saved, list):
        return
    in_flight = set(searcher.get("in_flight") or [])
    for entry in saved:
        if not isinstance(entry, dict) or _int(entry.get("trial_id")) is None:
            continue
        trial_id = int(entry["trial_id"])
        hparams = entry.get("hparams") if isinstance(entry.get("hparams"), dict) else {}
        assert isinstance(hparams, dict)
        for key in hparams:
            if key not in keys:
                keys.append(key)
        per_rung = _per_rung(entry.get("metrics"))
        rung = _int(entry.get("rung")) or 0
        row = trials.setdefault(trial_id, {})
        if not row:  # searcher.json is newer than results.csv, or there is no results.csv
            error = entry.get("error")
            status = trial_status(
                in_flight=trial_id in in_flight,
                failed=bool(error),
                top_rung=bool(rung_lengths) and rung == len(rung_lengths) - 1,
                done=False,  # a search that is done has its results.csv
            )
            row.update(
                status=status,
                rung=rung,
                length=_fraction(entry.get("length_trained")),
                batches=None,
                error=error or None,
                dir=path / str(trial_id),
            )
        row["hparams"] = dict(hparams)
        row["per_rung"] = per_rung
        if row.get("best_metric") is None and per_rung:  # not in results.csv (yet)
            row["best_metric"] = _float(entry.get("best"))  # the searcher's
            if row["best_metric"] is None:  # a state from before bests were saved
                smaller = searcher.get("settings", {}).get("smaller_is_better", True)
                row["best_metric"] = (min if smaller is not False else max)(per_rung.values())


def _merge_restarts(trials: dict[int, dict[str, Any]], driver: Mapping[str, Any]) -> None:
    """Each trial's restarts: ``results.csv``'s, else the driver's state in ``searcher.json``."""
    saved = driver.get("restarts")
    counts = saved if isinstance(saved, dict) else {}
    for trial_id, row in trials.items():
        if row.get("restarts") is None:
            row["restarts"] = _int(counts.get(str(trial_id))) or 0


def _per_rung(raw: Any) -> dict[int, float]:
    """``[[rung, metric], ...]`` as saved by the searcher; anything malformed is skipped.

    >>> _per_rung([[0, 0.5], [1, 0.25], ["x"], None])
    {0: 0.5, 1: 0.25}
    """
    found: dict[int, float] = {}
    for pair in raw if isinstance(raw, list) else []:
        if isinstance(pair, list) and len(pair) == 2:
            rung, metric = _int(pair[0]), _float(pair[1])
            if rung is not None and metric is not None:
                found[rung] = metric
    return found


def _from_run_dirs(path: Path, trials: dict[int, dict[str, Any]], keys: list[str]) -> None:
    """Rows for a sweep of another sweeper (or one just started): its numbered run dirs."""
    runs = {trial_id: load_run(d) for trial_id, d in _trial_dirs(path).items()}
    values: dict[str, set[str]] = {}
    for run in runs.values():
        for key, hp in run.hparams.items():
            values.setdefault(key, set()).add(json.dumps(hp.value, sort_keys=True, default=str))
    swept = [
        key
        for key, seen in values.items()
        if len(seen) > 1
        or any(r.hparams[key].source == "searcher" for r in runs.values() if key in r.hparams)
    ]
    keys.extend(swept)
    for trial_id, run in sorted(runs.items()):
        result = run.result or {}
        status = {
            RunEnd.COMPLETED.value: TrialStatus.COMPLETED,
            RunEnd.STOPPED.value: TrialStatus.STOPPED_EARLY,  # stopped before its length
            RunEnd.REFUSED.value: TrialStatus.FAILED,  # its config was refused while it ran
        }.get(run.status, TrialStatus.RUNNING)
        metric = result.get("metric")
        trials[trial_id] = {
            "status": status,
            "rung": 0,
            "hparams": {k: run.hparams[k].value for k in swept if k in run.hparams},
            "length": _fraction(result.get("length")),
            "batches": _int(result.get("batches")),
            "best_metric": _float(result.get("best_metric")),
            "last_metric": metric if isinstance(metric, (int, float)) else None,
            "error": None,
            "dir": run.path,
        }


def _summary(trial_id: int, t: Mapping[str, Any], path: Path, unit: Unit | None) -> TrialSummary:
    status = TrialStatus(t["status"])
    rung = int(t.get("rung") or 0)
    per_rung: dict[int, float] = t.get("per_rung") or {}
    batches = t.get("batches")
    length = t.get("length")
    trial_dir = Path(t.get("dir") or path / str(trial_id))
    if status in (
        TrialStatus.RUNNING,
        TrialStatus.FAILED,
    ):  # how far it got, from the trial's own files
        live = read_metrics(trial_dir / "metrics.jsonl")
        if live:
            now = _int(live[-1].get("batches"))
            if now is not None and (batches is None or now > batches):
                batches = now
                length = _in_unit(load_run(trial_dir).geometry(), now, unit)
    if per_rung:
        metric_rung: int | None = max(per_rung)
        metric: float | None = per_rung[max(per_rung)]
    else:
        metric = t.get("last_metric")
        metric_rung = (
            None if metric is None else (rung - 1 if status is TrialStatus.RUNNING else rung)
        )
    best = t.get("best_metric")
    return TrialSummary(
        trial_id=trial_id,
        status=status,
        rung=rung,
        hparams=dict(t.get("hparams") or {}),
        length=length,
        batches=batches,
        metric=metric,
        metric_rung=metric_rung,
        best_metric=best,
        error=t.get("error"),
        dir=trial_dir,
        restarts=int(t.get("restarts") or 0),
    )


def _in_unit(geometry: BatchMath | None, batches: int, unit: Unit | None) -> Fraction | None:
    """``batches`` in ``unit``, or None where the geometry cannot tell (epochs unknown)."""
    if geometry is None or unit is None:
        return None
    try:
        return geometry.in_unit(batches, unit)
    except ConfigError:
        return None


def _has_metric(trial: TrialSummary) -> bool:
    return (
        trial.status != TrialStatus.FAILED
        and _ranked_by(trial) is not None
        and trial.metric_rung is not None
    )


def _ranked_by(trial: TrialSummary) -> float | None:
    """The figure a trial ranks by: its best metric (its last one where no best is known)."""
    value = trial.best_metric if trial.best_metric is not None else trial.metric
    return None if value is None or math.isnan(value) else value


def _rank(trial: TrialSummary, smaller_is_better: bool) -> tuple[int, int, float, int]:
    """As the searcher ranks (:func:`rank_key`), with failed trials last, then those with
    no metric."""
    if trial.status == TrialStatus.FAILED:
        return (2, 0, 0.0, trial.trial_id)
    best = _ranked_by(trial)
    if not _has_metric(trial) or best is None:
        return (1, 0, 0.0, trial.trial_id)
    assert trial.metric_rung is not None
    return (0, *rank_key(trial.metric_rung, best, trial.trial_id, smaller_is_better))


def _trial_dirs(path: Path) -> dict[int, Path]:
    """Numbered subdirectories that are run directories."""
    found: dict[int, Path] = {}
    try:
        children = list(path.iterdir())
    except OSError:
        return found
    for child in children:
        is_run = any((child / name).is_file() for name in _RUN_FILES)
        if child.name.isdigit() and child.is_dir() and is_run:
            found[int(child.name)] = child
    return dict(sorted(found.items()))


def _first_run(path: Path, trials: Mapping[int, Mapping[str, Any]]) -> RunDir | None:
    """A trial's run directory with a config, to read the searcher's settings from."""
    dirs = [Path(t.get("dir") or path / str(i)) for i, t in sorted(trials.items())]
    for candidate in dirs or list(_trial_dirs(path).values()):
        if (candidate / ".hydra" / "config.yaml").is_file():
            return load_run(candidate)
    return None


def _read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object detflow wrote whole; ``None`` when the file is not there (yet)."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise NotResultsError(
            f"{path} is corrupt ({why}): expected the JSON object detflow writes there; "
            "restore it, or move it away to read the rest without it"
        ) from None
    if not isinstance(value, dict):
        raise NotResultsError(
            f"{path} holds a JSON {type(value).__name__}: expected the JSON object detflow "
            "writes there; restore it, or move it away to read the rest without it"
        )
    return value


def _trial_dir(sweep: Path, trial_id: int, recorded: str | None) -> Path:
    """Where a trial's run directory is: as recorded, else in the sweep directory (moved)."""
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    here = sweep / str(trial_id)
    return here if here.is_dir() or not recorded else Path(recorded)


def read_config(path: Path) -> dict[str, Any] | None:
    """A Hydra YAML file (``.hydra/config.yaml``) as plain data, unresolved; None if unreadable."""
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        container = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # an unreadable config only hides what it would have told
        return None
    if not isinstance(container, dict):
        return None
    return {str(k): v for k, v in container.items()}


def _int(text: Any) -> int | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    try:
        return int(str(text))
    except ValueError:
        return None


def _float(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _fraction(text: Any) -> Fraction | None:
    if text is None or text == "" or isinstance(text, bool):
        return None
    try:
        return Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return None


def _typed(text: str) -> Any:
    """A CSV cell as the number (or bool) it spells, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_number(value: Fraction | None) -> int | float | None:
    if value is None:
        return None
    return value.numerator if value.denominator == 1 else float(value)


def format_number(value: Any, digits: int = 4) -> str:
    """A number for a table: integers whole, others to ``digits`` significant digits (the
    sweep's lines write numbers by this same rule, :func:`detflow._core.text.number_text`).

    >>> format_number(Fraction(19, 32)), format_number(4), format_number(0.0280785062)
    ('0.5938', '4', '0.02808')
    >>> format_number(None), format_number("relu")
    ('', 'relu')
    """
    return number_text(value, digits)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_table(headers: list[str], rows: list[list[str]], indent: str = "") -> list[str]:
    """Plain, aligned columns: numbers right-aligned, text left; no trailing spaces.

    >>> print("\\n".join(format_table(["trial", "status"], [["0", "COMPLETED"], ["12", "FAILED"]])))
    trial  status
        0  COMPLETED
       12  FAILED
    """
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    numeric = [
        bool(rows) and all(_looks_numeric(r[i]) for r in rows if r[i]) for i in range(len(headers))
    ]
    lines = []
    for row in [headers, *rows]:
        cells = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, numeric, strict=True)
        ]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text in ("?", "-")
    return True
