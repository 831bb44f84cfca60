"""``detflow explain``: every hyperparameter of a run with its value, source and derivation,
and every length of the run in every unit.

The figures come from the run directory alone (``hparams.json``, ``result.json``,
``.hydra/config.yaml``); the arithmetic is :mod:`detflow._core.scale`'s and
:mod:`detflow._core.units`'s, the same code that trained the run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from detflow._core.errors import ConfigError
from detflow._core.expr import ExpressionError, expression_text, parse_expression
from detflow._core.scale import RESOLVER_NAME, ScaleRule, apply_rule, parse_rule, scale_factor
from detflow._core.units import BatchMath, Length, Unit, parse_target
from detflow._results.reader import (
    UNFINISHED,
    Hparam,
    RunDir,
    format_number,
    format_table,
    read_config,
)

__all__ = ["Derivation", "derivation", "explain", "expr_derivation"]

_SCALE = re.compile(
    r"^\$\{\s*" + re.escape(RESOLVER_NAME) + r"\s*:\s*(?P<value>.+?)\s*,\s*(?P<rule>\w+)\s*\}$"
)
_REFERENCE = re.compile(r"^\$\{\s*(?P<key>[A-Za-z_][\w.]*)\s*\}$")
_TIMES = {ScaleRule.LINEAR, ScaleRule.SQRT}  # rules that multiply the value by a function of k
_LENGTH_KEYS = ("searcher.max_length", "min_validation_period", "min_checkpoint_period")
_TARGET_ENV = "DETFLOW_TARGET_LENGTH"


@dataclass(frozen=True)
class Derivation:
    """How a ``${df.scale:VALUE,RULE}`` value came about: base, rule and the inputs of k.

    Examples
    --------
    >>> d = Derivation(0.1, None, ScaleRule.LINEAR, 64, 1, 32, 0.2)
    >>> str(d)
    '0.1 x linear(k=64x1/32)'
    >>> str(Derivation(1000, "warmup", ScaleRule.INVERSE, 64, 1, 32, 500))
    'inverse(1000 (warmup), k=64x1/32)'
    """

    base: float | int
    base_key: str | None
    rule: ScaleRule
    global_batch_size: int
    aggregation_frequency: int
    base_batch_size: int
    value: float | int

    def __str__(self) -> str:
        base = _fmt(self.base) + (f" ({self.base_key})" if self.base_key else "")
        k = f"k={self.global_batch_size}x{self.aggregation_frequency}/{self.base_batch_size}"
        if self.rule in _TIMES:
            return f"{base} x {self.rule.value}({k})"
        return f"{self.rule.value}({base}, {k})"


def derivation(hparam: Hparam, run: RunDir) -> Derivation | None:
    """The derivation of a scaled hyperparameter, or ``None`` when it is not one.

    Examples
    --------
    >>> from pathlib import Path
    >>> def hp(key, value, expression=None):
    ...     return Hparam(f"hyperparameters.{key}", value, "config", expression)
    >>> run = RunDir(Path("."), {h.key: h for h in [hp("global_batch_size", 64),
    ...     hp("base_batch_size", 32)]}, None, None)
    >>> str(derivation(hp("lr", 0.2, "${df.scale:0.1,linear}"), run))
    '0.1 x linear(k=64x1/32)'
    """
    match = _SCALE.match(hparam.expression or "")
    if match is None:
        return None
    base, base_key = _base(match.group("value"), run)
    try:
        rule = parse_rule(match.group("rule"), hparam.key)
    except ConfigError:
        return None
    gbs = _hparam_value(run, "global_batch_size")
    base_batch = _hparam_value(run, "base_batch_size")
    agg = run.config_value("optimizations.aggregation_frequency", 1)
    if run.result and isinstance(run.result.get("aggregation_frequency"), int):
        agg = run.result["aggregation_frequency"]
    if base is None or not all(isinstance(x, int) for x in (gbs, agg, base_batch)):
        return None
    try:
        value = apply_rule(base, rule, scale_factor(gbs, agg, base_batch))
    except ConfigError:
        return None
    return Derivation(base, base_key, rule, gbs, agg, base_batch, value)


def expr_derivation(hparam: Hparam, run: RunDir) -> str | None:
    """A ``${df.expr:...}`` value's expression with each key's value and source beside it,
    and a note when it does not compute to the recorded value; ``None`` for other values.

    Examples
    --------
    >>> from pathlib import Path
    >>> def hp(key, value, source="config", expression=None):
    ...     return Hparam(f"hyperparameters.{key}", value, source, expression)
    >>> run = RunDir(Path("."), {h.key: h for h in [hp("width", 16, "override")]}, None, None)
    >>> expr_derivation(hp("hidden", 64, "override", "${df.expr:4 * width}"), run)
    '4 * width(16, override)'
    """
    text = expression_text(hparam.expression)
    if text is None:
        return None
    try:
        expression = parse_expression(text)
    except ExpressionError:
        return None
    scopes = hparam.key.split(".")[:-1]
    inputs: dict[str, Any] = {}
    shown: dict[str, str] = {}
    for name in expression.names:
        for end in range(len(scopes), -1, -1):
            full = ".".join([*scopes[:end], name])
            hp = run.hparams.get(full)
            if hp is not None:
                label = name.removeprefix("hyperparameters.")
                inputs[name], shown[name] = hp.value, f"{label}({_value(hp.value)}, {hp.source})"
                break
            value = run.config_value(full)
            if value is not None and not isinstance(value, (Mapping, list)):
                inputs[name], shown[name] = value, f"{name}({_value(value)})"
                break
    out, last = "", 0
    if expression.text.isascii():  # the spans are offsets in its UTF-8 bytes
        for start, end, name in expression.spans():
            out += expression.text[last:start] + shown.get(name, name)
            last = end
    out += expression.text[last:]
    if len(inputs) == len(expression.names):
        try:
            value = expression.evaluate(inputs)
        except ExpressionError:
            return out
        if not _close(value, hparam.value):
            out += f" (recomputed {_value(value)}; the run recorded {hparam.value!r})"
    return out


def explain(run: RunDir) -> list[str]:
    """The lines ``detflow explain RUN_DIR`` prints.

    Examples
    --------
    >>> from pathlib import Path
    >>> run = RunDir(Path("run"), {"hyperparameters.global_batch_size":
    ...     Hparam("hyperparameters.global_batch_size", 32, "override")}, None, None)
    >>> print("\\n".join(explain(run)))  # doctest: +NORMALIZE_WHITESPACE
    run run: unfinished (no result.json: still running, or failed; see its train.log)
    hyperparameters (value = derivation, source):
      global_batch_size = 32  override
    lengths: no searcher.max_length in .hydra/config.yaml and nothing trained yet
    """
    lines = [_header(run)]
    lines += _hparam_lines(run)
    lines += _length_lines(run)
    return lines


def _header(run: RunDir) -> str:
    name = run.config_value("name")
    where = f"run {run.path}" + (f" ({name})" if name else "")
    if run.result is None:
        return f"{where}: {UNFINISHED}"
    metric, best = run.result.get("metric"), run.result.get("best_metric")
    figure = ""
    if _is_number(metric):
        figure = f", {run.metric_name} {format_number(metric, 6)}"
        if _is_number(best) and best != metric:
            figure += f" (best {format_number(best, 6)})"
    return f"{where}: {run.status}{figure}"


def _hparam_lines(run: RunDir) -> list[str]:
    if not run.hparams:
        return ["hyperparameters: no hparams.json in this run directory"]
    entries: list[tuple[str, str]] = []
    scaled = False
    for hp in run.hparams.values():
        text = f"{hp.name} = {_value(hp.value)}"
        derived = derivation(hp, run)
        computed = expr_derivation(hp, run)
        if computed is not None:
            text += f" = {computed}"
        elif derived is not None:
            scaled = True
            text += f" = {derived}"
            if not _close(derived.value, hp.value):
                text += f" (recomputed {_value(derived.value)}; the run recorded {hp.value!r})"
        elif hp.expression:
            text += f" = {hp.expression}"
        entries.append((text, hp.source))
    width = max(len(text) for text, _ in entries)
    lines = ["hyperparameters (value = derivation, source):"]
    lines += [f"  {text.ljust(width)}  {source}" for text, source in entries]
    if scaled:
        lines.append(
            "  k = global_batch_size x optimizations.aggregation_frequency / base_batch_size"
        )
    return lines


def _length_lines(run: RunDir) -> list[str]:
    geometry = run.geometry()
    lengths = {key: run.length(key) for key in _LENGTH_KEYS}
    trained = _trained(run)
    if lengths["searcher.max_length"] is None and trained is None:
        return ["lengths: no searcher.max_length in .hydra/config.yaml and nothing trained yet"]
    if geometry is None:
        return ["lengths: the batch size is unknown (no result.json, no global_batch_size)"]
    rows: list[list[str]] = []
    notes: list[str] = []
    records_in = _records_counter(run, geometry)
    for key, length in lengths.items():
        if length is not None:
            batches = _batches(geometry, length, key)
            rows.append([key, str(length), *_in_units(geometry, batches, records_in)])
            note = _describe(geometry, length, key)
            if note:
                notes.append(note)
    target = _target(run, geometry, records_in)
    if target is not None:
        rows.append(target)
    if trained is not None:
        label, batches, records = trained
        cells = _in_units(geometry, batches, records_in)
        if records is not None:
            cells[0] = format_number(records)  # as counted
        rows.append([label, "", *cells])
    head = [
        f"global_batch_size {geometry.global_batch_size}",
        f"aggregation_frequency {geometry.aggregation_frequency}",
    ]
    if geometry.batches_per_epoch is not None:
        head.append(f"{geometry.batches_per_epoch} batches per epoch")
    else:
        head.append("epoch length unknown until the run ends (or set records_per_epoch)")
    table = format_table(["length", "given", *(u.value for u in Unit)], rows, indent="  ")
    lines = [f"lengths ({', '.join(head)}):", *table, *(f"  rounded: {n}" for n in notes)]
    if records_in is None:
        lines.append(
            "  records: batches x global_batch_size until the run has trained an epoch "
            "(an epoch's last batch may be short)"
        )
    return lines


def _records_counter(run: RunDir, geometry: BatchMath) -> Callable[[int], int] | None:
    """Records in the first ``b`` batches as the data holds them (each epoch's last batch may
    be short), from ``records_per_epoch`` or from what the run counted; ``None`` while
    neither tells (then records are ``b x global_batch_size``).

    >>> from pathlib import Path
    >>> result = {"records": 7190, "batches": 225, "epochs": 5}
    >>> count = _records_counter(RunDir(Path("."), {}, result, None), BatchMath(32, 1, 45))
    >>> count(225), count(45), count(100)
    (7190, 1438, 3196)
    """
    per_epoch = geometry.batches_per_epoch
    if per_epoch is None:
        return None
    gbs = geometry.global_batch_size
    counted, trained = (_count((run.result or {}).get(k)) for k in ("records", "batches"))
    records_per_epoch = _count(run.config_value("records_per_epoch"))
    if records_per_epoch is None:
        if counted is None or trained is None or trained < per_epoch:
            return None
        epochs, missing = trained // per_epoch, trained * gbs - counted
        if missing % epochs:
            return None
        records_per_epoch = per_epoch * gbs - missing // epochs
    short = per_epoch * gbs - records_per_epoch
    if not 0 <= short < gbs:  # not one short batch an epoch: the figures would be wrong
        return None

    def records_in(batches: int) -> int:
        return batches * gbs - (batches // per_epoch) * short

    if counted is not None and trained is not None and records_in(trained) != counted:
        return None  # the run counted otherwise: say nothing rather than something wrong
    return records_in


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _batches(geometry: BatchMath, length: Length, key: str) -> int | None:
    try:
        return geometry.to_batches(length, key)
    except ConfigError:
        return None


def _describe(geometry: BatchMath, length: Length, key: str) -> str | None:
    try:
        return geometry.describe(length, key)
    except ConfigError:
        return None


def _in_units(
    geometry: BatchMath, batches: int | None, records_in: Callable[[int], int] | None = None
) -> list[str]:
    """The cells records, batches, steps, epochs for ``batches`` (``?`` where unknown);
    records as the data holds them when ``records_in`` can count them."""
    cells = []
    for unit in Unit:
        try:
            if batches is None:
                cells.append("?")
            elif unit is Unit.RECORDS and records_in is not None:
                cells.append(format_number(records_in(batches)))
            else:
                cells.append(format_number(geometry.in_unit(batches, unit)))
        except ConfigError:
            cells.append("?")
    return cells


def _target(
    run: RunDir, geometry: BatchMath, records_in: Callable[[int], int] | None
) -> list[str] | None:
    """This job's own target when the searcher set one below max_length (an ASHA rung)."""
    env = _hydra_env(run)
    text = env.get(_TARGET_ENV) if isinstance(env, Mapping) else None
    result = run.result or {}
    if isinstance(text, str):
        try:
            length = parse_target(text, _TARGET_ENV)
        except ConfigError:
            return None
        batches = _batches(geometry, length, _TARGET_ENV)
        cells = _in_units(geometry, batches, records_in)
        return ["target (this job)", _length_text(length), *cells]
    target = result.get("target_batches")
    max_length = run.length("searcher.max_length")
    if isinstance(target, int) and (
        max_length is None or _batches(geometry, max_length, "max") != target
    ):
        return ["target", "", *_in_units(geometry, target, records_in)]
    return None


def _hydra_env(run: RunDir) -> Any:
    hydra = read_config(run.path / ".hydra" / "hydra.yaml") or {}
    node: Any = hydra.get("hydra", {})
    for part in ("job", "env_set"):
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node


def _length_text(length: Length) -> str:
    value = Fraction(length.value)
    amount = str(value.numerator) if value.denominator == 1 else f"{value} (={float(value):.4g})"
    return f"{amount} {length.unit.value}"


def _trained(run: RunDir) -> tuple[str, int, int | None] | None:
    """What was trained: ``(label, batches, records)`` from result.json or metrics.jsonl."""
    if run.result is not None and isinstance(run.result.get("batches"), int):
        records = run.result.get("records")
        return (
            f"trained ({run.status})",
            run.result["batches"],
            records if isinstance(records, int) else None,
        )
    last = run.metrics[-1] if run.metrics else None
    if last is not None and isinstance(last.get("batches"), int):
        records = last.get("records")
        return ("trained so far", last["batches"], records if isinstance(records, int) else None)
    return None


def _base(text: str, run: RunDir) -> tuple[float | int | None, str | None]:
    """The VALUE of ``${df.scale:VALUE,RULE}``: a number, or a reference to another key."""
    reference = _REFERENCE.match(text)
    if reference is not None:
        key = reference.group("key")
        hp = run.hparams.get(key) or run.hparams.get(f"hyperparameters.{key.lstrip('.')}")
        value = hp.value if hp is not None else run.config_value(key)
        number = value if _is_number(value) else None
        return number, key.removeprefix("hyperparameters.")
    for parse in (int, float):
        try:
            return parse(text), None
        except ValueError:
            continue
    return None, None


def _hparam_value(run: RunDir, name: str) -> Any:
    hp = run.hparams.get(f"hyperparameters.{name}")
    return hp.value if hp is not None else run.config_value(f"hyperparameters.{name}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _close(a: Any, b: Any) -> bool:
    if not (_is_number(a) and _is_number(b)):
        return bool(a == b)
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-15)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return _fmt(value)
    if isinstance(value, str):
        return value
    return repr(value) if not isinstance(value, bool) else str(value).lower()


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
