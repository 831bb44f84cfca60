"""``detflow import-determined``: a Determined AI experiment config as a detflow experiment.

Takes the configs of every Determined version from 0.13 to 0.38: lengths as ``{batches: N}``,
``{records: N}``, ``{epochs: N}``, the Core API's bare ``max_length: N`` and 0.38's
``time_metric`` / ``max_time``; searchers ``single``, ``grid``, ``random``, ``adaptive_asha``,
``async_halving``, ``pbt`` (to 0.18) and the older ``adaptive`` (``budget``),
``adaptive_simple``, ``sync_halving``; Determined's hyperparameter syntax is kept as written
(detflow reads it).
:func:`import_config` maps the config; every top-level key gets one :class:`Entry`: the
detflow keys it became, or the detflow way of doing what it did. :func:`module_text` writes
the Python module that defines and registers the experiment.

Examples
--------
>>> imported = import_config({
...     "name": "mnist", "entrypoint": "model_def:MNistTrial",
...     "hyperparameters": {"global_batch_size": 64, "lr": {"type": "log", "minval": -4,
...                                                         "maxval": -1}},
...     "searcher": {"name": "adaptive_asha", "metric": "val_loss", "max_trials": 16,
...                  "max_length": {"batches": 937}},
... })
>>> imported.experiment["searcher"]
{'name': 'adaptive_asha', 'metric': 'val_loss', 'max_length': '937 batches', 'max_trials': 16, \
'max_concurrent_trials': 16}
>>> for line in report_lines(imported):  # doctest: +NORMALIZE_WHITESPACE
...     print(line)
name             -> name: 'mnist'
entrypoint       not mapped: your training script: python train.py +experiment=mnist
                 (it was model_def:MNistTrial)
hyperparameters  -> hyperparameters: 2 values as written; 1 search dimension in Determined's
                 syntax, which detflow reads (lr log)
searcher         -> searcher (name, metric, max_length, max_trials, max_concurrent_trials):
                 adaptive_asha on val_loss, max_length '937 batches', max_trials 16
                   searcher.divisor and max_rungs not given: detflow's adaptive_asha default
                   (divisor 3, max_rungs 5; Determined's: divisor 4, max_rungs 5)
                   searcher.sampler not given: detflow's adaptive_asha default (tpe: new
                   trials from a density model; Determined's: random, which
                   searcher.sampler=random gives)
                   searcher.max_concurrent_trials: Determined's default 16 -> 16 (detflow's
                   default is 1)
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from detflow._core.determined import find_dimensions, is_determined
from detflow._core.errors import ConfigError
from detflow._core.experiment import SEARCHER_NAMES, rung_defaults
from detflow._search.searchers import adaptive_brackets, bracket_concurrency

__all__ = ["Entry", "Imported", "import_config", "module_text", "read_config", "report_lines"]

#: Determined's searcher names -> detflow's.
_SEARCHERS = {
    "single": "single",
    "grid": "grid",
    "random": "random",
    "adaptive_asha": "adaptive_asha",
    "async_halving": "asha",
    "adaptive": "adaptive_asha",
    "adaptive_simple": "adaptive_asha",
    "sync_halving": "asha",
    "pbt": "pbt",
}
_UNITS = ("records", "batches", "epochs")
#: A batch size written where Determined gave none, for the module to load; the report
#: names the key to set.
PLACEHOLDER_BATCH_SIZE = 32
#: Determined's ``max_concurrent_trials`` default (0.2x on); detflow's is 1.
DETERMINED_CONCURRENCY = 16
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class Entry:
    """What became of one top-level key: the detflow keys it ``became`` (none: not mapped),
    a ``note`` (the value, or the detflow way), and ``details`` on its sub-keys."""

    key: str
    became: list[str] = field(default_factory=list)
    note: str = ""
    details: list[str] = field(default_factory=list)

    @property
    def mapped(self) -> bool:
        return bool(self.became)


@dataclass
class Imported:
    """A Determined config mapped: ``experiment`` (a dict ``load_config`` accepts), one
    :class:`Entry` per top-level key in the source's order, the keys ``to_set`` by hand,
    and sections kept beside the experiment (``data``)."""

    name: str
    experiment: dict[str, Any]
    entries: list[Entry]
    to_set: list[str]
    kept: dict[str, Any]
    description: str | None = None


def read_config(path: Path) -> dict[str, Any]:
    """A Determined config file as plain data (YAML; ``1e-6`` reads as a number, as
    Determined read it); a :class:`ConfigError` naming the file if it is not a mapping."""
    from omegaconf import OmegaConf

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), type(exc).__name__, "a readable YAML file") from None
    try:
        loaded = OmegaConf.create(text) if text.strip() else None
        data = OmegaConf.to_container(loaded, resolve=False) if loaded is not None else None
    except Exception as exc:  # yaml's errors and OmegaConf's (a key that is not a string...)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(str(path), first, "a Determined experiment config (YAML)") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), type(data).__name__, "a mapping of Determined's keys")
    return {str(k): v for k, v in data.items()}


@dataclass
class _Context:
    raw: Mapping[str, Any]
    experiment: dict[str, Any] = field(default_factory=dict)
    to_set: list[str] = field(default_factory=list)
    kept: dict[str, Any] = field(default_factory=dict)
    name: str = "experiment"
    named_by: str | None = None
    description: str | None = None

    def section(self, key: str) -> dict[str, Any]:
        value = self.experiment.get(key)
        if not isinstance(value, dict):
            value = self.experiment[key] = {}
        return value


def import_config(raw: Mapping[str, Any], *, fallback_name: str = "experiment") -> Imported:
    """Map a Determined config (as read by :func:`read_config`) to a detflow experiment.

    The experiment holds only keys detflow's schema has (``max_restarts``,
    ``perform_initial_validation`` and ``checkpoint_storage.*`` included). Where Determined
    gave no ``global_batch_size`` a placeholder is written and ``to_set`` names the key;
    the same where it gave no training length (detflow's default length stays).
    """
    ctx = _Context(raw)
    ctx.name, ctx.named_by = _experiment_name(raw, fallback_name)
    ctx.experiment["name"] = ctx.name
    entries: dict[str, Entry] = {}
    order = [k for k in _HANDLERS if k in raw]  # hyperparameters before searcher, ...
    order += [k for k in raw if k not in _HANDLERS]
    for key in order:
        handler = _HANDLERS.get(key, _unknown)
        entries[key] = handler(key, raw[key], ctx)
    _check_batch_size(ctx)
    _check_length(ctx)
    return Imported(
        ctx.name,
        ctx.experiment,
        [entries[str(k)] for k in raw],
        ctx.to_set,
        ctx.kept,
        ctx.description,
    )


def _experiment_name(raw: Mapping[str, Any], fallback: str) -> tuple[str, str | None]:
    """The config name ``+experiment=NAME`` takes: ``name``, else ``description`` (the name
    before Determined 0.14), else ``fallback`` (the file's stem); and the key it came from."""
    for key in ("name", "description"):
        value = raw.get(key)
        if isinstance(value, str) and value.strip() and (key == "name" or "\n" not in value):
            name = _NAME.sub("_", value.strip()).strip("_.")
            if name and len(name) <= 100:
                return name, key
    return _NAME.sub("_", fallback).strip("_.") or "experiment", None


# --- top-level keys ---------------------------------------------------------------------

Handler = Callable[[str, Any, _Context], Entry]


def _name(key: str, value: Any, ctx: _Context) -> Entry:
    if ctx.named_by != key:
        return Entry(key, [], f"{value!r} is no config name: {ctx.name!r} is used")
    if isinstance(value, str) and value.strip() == ctx.name:
        return Entry(key, ["name"], repr(ctx.name))
    return Entry(key, ["name"], f"{ctx.name!r} (as a config name: letters, digits, _ . -)")


def _description(key: str, value: Any, ctx: _Context) -> Entry:
    ctx.description = str(value)
    if ctx.named_by == key:
        return Entry(key, ["name"], f"{ctx.name!r} (Determined's name before 0.14)")
    return Entry(key, [], "detflow has no description: kept as a comment in the module")


def _hyperparameters(key: str, value: Any, ctx: _Context) -> Entry:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        ctx.experiment["hyperparameters"] = {}
        return Entry(key, [], f"not a mapping ({type(value).__name__}): left out")
    hparams = _plain(value)
    ctx.experiment["hyperparameters"] = hparams
    try:
        dims = find_dimensions(hparams)
    except ConfigError as exc:
        return Entry(key, ["hyperparameters"], f"as written; {exc}")
    consts = _count_consts(hparams)
    parts = [f"{len(_leaves(hparams))} values as written"]
    if dims:
        kinds = ", ".join(
            f"{k.removeprefix('hyperparameters.')} {d.type}" for k, d in list(dims.items())[:6]
        )
        more = ", ..." if len(dims) > 6 else ""
        parts.append(
            f"{len(dims)} search dimension{'s' if len(dims) > 1 else ''} in Determined's "
            f"syntax, which detflow reads ({kinds}{more})"
        )
    if consts:
        parts.append(f"{consts} {{type: const}}")
    return Entry(key, ["hyperparameters"], "; ".join(parts))


def _searcher(key: str, value: Any, ctx: _Context) -> Entry:
    if not isinstance(value, Mapping):
        return Entry(key, [], f"not a mapping ({type(value).__name__}): detflow's default single")
    out = ctx.section("searcher")
    out["name"] = "single"  # first among the keys written; set below
    details: list[str] = []
    used: set[str] = {"name"}
    given = str(value.get("name", "single"))
    name = _SEARCHERS.get(given)
    hparams = ctx.experiment.get("hyperparameters") or {}
    dims = _safe_dimensions(hparams)
    if name is None:
        name = "random" if dims else "single"
        details.append(
            f"searcher.name {given}: not in detflow; {name} written (detflow searches with "
            f"{', '.join(SEARCHER_NAMES)})"
        )
    elif name == "single" and dims:
        name = "random"
        out["max_trials"] = 1
        details.append(
            "searcher.name single with search dimensions: random with max_trials 1 (Determined's "
            "single drew one random point)"
        )
    elif name != given:
        details.append(f"searcher.name {given} -> {name}")
    out["name"] = name
    for plain in ("metric", "smaller_is_better"):
        if value.get(plain) is not None:
            out[plain] = value[plain]
            used.add(plain)
    length = _searcher_length(value, ctx, details, used)
    if length is not None:
        out["max_length"] = length
    if name in ("asha", "adaptive_asha"):
        _rungs(value, name, out, details, used)
    if name == "pbt":
        _pbt(value, out, details, used)
    trials = value.get("max_trials")
    if isinstance(trials, int) and not isinstance(trials, bool) and trials > 0:
        out.setdefault("max_trials", trials)
        used.add("max_trials")
    elif given == "adaptive" and value.get("budget") is not None:
        estimate = _trials_from_budget(value, ctx, out)
        used.add("budget")
        if estimate is not None:
            out["max_trials"] = estimate
            details.append(
                f"searcher.budget {_length_text(value['budget'])} -> max_trials {estimate} "
                "(about the trials adaptive_asha trains in that budget)"
            )
        else:
            details.append("searcher.budget: not mapped: set searcher.max_trials")
    if name in ("random", "asha", "adaptive_asha") and "max_trials" not in out:
        out["max_trials"] = 1
        ctx.to_set.append("searcher.max_trials (Determined gave none; 1 is written)")
    if name != "single":
        _concurrency(value, name, out, details, used)
    for sub in value:
        if sub in used:
            continue
        details.append(f"searcher.{sub}: not mapped: {_SEARCHER_WAY.get(str(sub), _NO_WAY)}")
    mapped = [f"searcher ({', '.join(out)})"]
    summary = f"{name} on {out.get('metric', 'validation_loss')}"
    if "max_length" in out:
        summary += f", max_length {out['max_length']!r}"
    if "max_trials" in out:
        summary += f", max_trials {out['max_trials']}"
    return Entry(key, mapped, summary, details)


def _searcher_length(
    value: Mapping[str, Any], ctx: _Context, details: list[str], used: set[str]
) -> str | None:
    """``searcher.max_length`` from whichever way the config's version gave the length."""
    if value.get("max_length") is not None:
        used.add("max_length")
        length = _length(value["max_length"], "searcher.max_length", details)
        if length is not None:
            return length
    metric, top = value.get("time_metric"), value.get("max_time")
    if metric is not None or top is not None:
        used.update(("time_metric", "max_time"))
        unit = _unit_of_metric(metric)
        if unit is not None and isinstance(top, int) and not isinstance(top, bool) and top > 0:
            details.append(f"searcher.time_metric {metric}, max_time {top} -> max_length")
            return f"{top} {unit}"
        details.append(
            f"searcher.time_metric {metric!r}, max_time {top!r}: not mapped: detflow counts "
            "the length itself, in records, batches, steps or epochs (searcher.max_length)"
        )
    steps = value.get("max_steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0:
        used.add("max_steps")
        per_step = ctx.raw.get("batches_per_step", 100)
        per_step = per_step if isinstance(per_step, int) and per_step > 0 else 100
        details.append(f"searcher.max_steps {steps} x batches_per_step {per_step} -> max_length")
        return f"{steps * per_step} batches"
    return None


def _unit_of_metric(metric: Any) -> str | None:
    text = str(metric).lower().strip()
    for unit in ("records", "batches", "steps", "epochs"):
        if text in (unit, unit.removesuffix("s"), f"total_{unit}"):
            return unit
    return None


def _length(raw: Any, key: str, details: list[str]) -> str | None:
    """A Determined length as detflow writes one (``"937 batches"``); None, with a line in
    ``details``, where it gives none."""
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((unit, amount),) = raw.items()
        if unit in _UNITS and isinstance(amount, int) and not isinstance(amount, bool):
            if amount > 0:
                return f"{amount} {unit}"
            details.append(f"{key} {_length_text(raw)}: 0 is no length in detflow: left out")
            return None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        details.append(
            f"{key} {raw} has no unit (Determined's Core API left it to your code): taken as "
            f"{raw} batches; check it"
        )
        return f"{raw} batches"
    details.append(f"{key} {raw!r}: not a length detflow reads: left out")
    return None


def _length_text(raw: Any) -> str:
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((unit, amount),) = raw.items()
        return f"{amount} {unit}"
    return repr(raw)


def _rungs(
    value: Mapping[str, Any], name: str, out: dict[str, Any], details: list[str], used: set[str]
) -> None:
    divisor = value.get("divisor")
    if isinstance(divisor, (int, float)) and not isinstance(divisor, bool):
        used.add("divisor")
        whole = round(divisor)
        if whole != divisor or whole < 2:
            whole = max(2, whole)
            details.append(f"searcher.divisor {divisor} -> {whole} (detflow's is a whole number)")
        out["divisor"] = int(whole)
    for source in ("max_rungs", "num_rungs"):
        rungs = value.get(source)
        if isinstance(rungs, int) and not isinstance(rungs, bool) and rungs > 0:
            used.add(source)
            out["max_rungs"] = rungs
            if source == "num_rungs":
                details.append(f"searcher.num_rungs {rungs} -> max_rungs")
    missing = [key for key in ("divisor", "max_rungs") if key not in out]
    if missing:
        own = rung_defaults(name)
        shown_defaults = ", ".join(f"{key} {getattr(own, key)}" for key in missing)
        details.append(
            f"searcher.{' and '.join(missing)} not given: detflow's {name} default "
            f"({shown_defaults}; Determined's: divisor 4, max_rungs 5)"
        )
    if name == "adaptive_asha":
        details.append(
            f"searcher.sampler not given: detflow's adaptive_asha default "
            f"({rung_defaults(name).sampler}: new trials from a density model; Determined's: "
            f"random, which searcher.sampler=random gives)"
        )
        mode = value.get("mode")
        if mode is not None:
            used.add("mode")
            if mode in ("aggressive", "standard", "conservative"):
                out["mode"] = mode
            else:
                details.append(f"searcher.mode {mode!r}: not a mode: detflow's standard stays")
        rungs_list = value.get("bracket_rungs")
        if rungs_list is not None:
            used.add("bracket_rungs")
            whole = isinstance(rungs_list, list) and all(
                isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in rungs_list
            )
            if whole and rungs_list:
                out["bracket_rungs"] = list(rungs_list)
            elif not whole:
                details.append(f"searcher.bracket_rungs {rungs_list!r}: not rung counts: left out")


def _pbt(value: Mapping[str, Any], out: dict[str, Any], details: list[str], used: set[str]) -> None:
    """Determined's pbt: ``population_size``; ``num_rounds`` of ``length_per_round`` ->
    ``max_length`` and ``perturb_every``; ``replace_function.truncate_fraction`` ->
    ``truncation_fraction``; ``explore_function``'s ``resample_probability`` and
    ``perturb_factor`` as they are."""
    population = value.get("population_size")
    if isinstance(population, int) and not isinstance(population, bool) and population > 0:
        used.add("population_size")
        out["population_size"] = population
    per_round = _length(value.get("length_per_round"), "searcher.length_per_round", details)
    rounds = value.get("num_rounds")
    if per_round is not None:
        used.add("length_per_round")
        out["perturb_every"] = per_round
        if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds > 0:
            used.add("num_rounds")
            amount, unit = per_round.split()
            out.setdefault("max_length", f"{int(amount) * rounds} {unit}")
            details.append(
                f"searcher.num_rounds {rounds} x length_per_round {per_round} -> max_length "
                f"{out['max_length']}, perturb_every {per_round}"
            )
    for section, leaf, key in (
        ("replace_function", "truncate_fraction", "truncation_fraction"),
        ("explore_function", "resample_probability", "resample_probability"),
        ("explore_function", "perturb_factor", "perturb_factor"),
    ):
        given = value.get(section)
        number = given.get(leaf) if isinstance(given, Mapping) else None
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            used.add(section)
            out[key] = number
            if leaf != key:
                details.append(f"searcher.{section}.{leaf} {number} -> {key}")


def _concurrency(
    value: Mapping[str, Any], name: str, out: dict[str, Any], details: list[str], used: set[str]
) -> None:
    raw = value.get("max_concurrent_trials")
    trials = out.get("max_trials")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        used.add("max_concurrent_trials")
        out["max_concurrent_trials"] = raw
        return
    if raw == 0:
        used.add("max_concurrent_trials")
        at_once = _as_many_as_possible(name, out)
        details.append(
            f"searcher.max_concurrent_trials 0 (as many as possible) -> {at_once}, what "
            "Determined's searcher would have run at once"
        )
    else:
        at_once = DETERMINED_CONCURRENCY
        if isinstance(trials, int):
            at_once = min(at_once, trials)
        if name == "pbt" and isinstance(out.get("population_size"), int):
            at_once = min(at_once, out["population_size"])
        details.append(
            f"searcher.max_concurrent_trials: Determined's default {DETERMINED_CONCURRENCY} "
            f"-> {at_once} (detflow's default is 1)"
        )
    out["max_concurrent_trials"] = max(1, at_once)


def _as_many_as_possible(name: str, out: Mapping[str, Any]) -> int:
    given = out.get("population_size" if name == "pbt" else "max_trials")
    trials = given if isinstance(given, int) else DETERMINED_CONCURRENCY
    divisor = int(out.get("divisor", rung_defaults(name).divisor))
    rungs = int(out.get("max_rungs", rung_defaults(name).max_rungs))
    if name == "adaptive_asha":
        try:
            length = _length_amount(out.get("max_length")) or 10**9
            brackets = adaptive_brackets(
                length,
                trials,
                mode=str(out.get("mode", "standard")),
                divisor=divisor,
                max_rungs=rungs,
                bracket_rungs=list(out.get("bracket_rungs") or []),
            )
        except ConfigError:
            return trials
        return sum(bracket_concurrency(0, divisor, [b.max_trials for b in brackets]))
    if name == "asha":
        return max(1, min(int(divisor ** (rungs - 1)), trials))
    return trials


def _length_amount(text: Any) -> int | None:
    if isinstance(text, str) and text.split()[0].isdigit():
        return int(text.split()[0])
    return None


def _trials_from_budget(
    value: Mapping[str, Any], ctx: _Context, out: Mapping[str, Any]
) -> int | None:
    """``max_trials`` for Determined's old ``adaptive`` searcher, which took a total
    ``budget`` instead: each bracket gets an equal share, and a bracket of ``r`` rungs trains
    ``r * max_length / divisor**(r-1)`` per trial it starts."""
    budget = _length(value.get("budget"), "searcher.budget", [])
    top = out.get("max_length")
    if budget is None or not isinstance(top, str):
        return None
    (b_amount, b_unit), (t_amount, t_unit) = (text.split() for text in (budget, top))
    if b_unit != t_unit:
        return None
    ratio = Fraction(int(b_amount), int(t_amount))
    divisor = int(out.get("divisor", rung_defaults("adaptive_asha").divisor))
    try:
        brackets = adaptive_brackets(
            int(t_amount),
            10**9,  # no cap from max_trials: that is what is being found
            mode=str(out.get("mode", "standard")),
            divisor=divisor,
            max_rungs=int(out.get("max_rungs", rung_defaults("adaptive_asha").max_rungs)),
            bracket_rungs=list(out.get("bracket_rungs") or []),
        )
    except ConfigError:
        return None
    share = ratio / len(brackets)
    total = sum(share * Fraction(divisor ** (b.rungs - 1), b.rungs) for b in brackets)
    return max(1, math.floor(total))


def _resources(key: str, value: Any, ctx: _Context) -> Entry:
    if not isinstance(value, Mapping):
        return Entry(key, [], f"not a mapping ({value!r}): left out")
    details: list[str] = []
    became: list[str] = []
    for sub, item in value.items():
        if sub in ("slots_per_trial", "slots") and isinstance(item, int) and item > 0:
            ctx.section("resources")["slots_per_trial"] = item
            became.append("resources.slots_per_trial")
            if sub == "slots":
                details.append("resources.slots -> resources.slots_per_trial")
        else:
            details.append(f"resources.{sub}: not mapped: {_RESOURCES_WAY.get(str(sub), _NO_WAY)}")
    note = (
        f"slots_per_trial {ctx.experiment['resources']['slots_per_trial']}"
        if became
        else "nothing detflow keeps (slots_per_trial stays 1)"
    )
    return Entry(key, became, note, details)


def _optimizations(key: str, value: Any, ctx: _Context) -> Entry:
    if not isinstance(value, Mapping):
        return Entry(key, [], f"not a mapping ({value!r}): left out")
    details: list[str] = []
    became: list[str] = []
    for sub, item in value.items():
        if sub == "aggregation_frequency" and isinstance(item, int) and item > 0:
            ctx.section("optimizations")["aggregation_frequency"] = item
            became.append("optimizations.aggregation_frequency")
        else:
            details.append(
                f"optimizations.{sub}: not mapped: your trial's own code "
                "(mixed precision, gradient compression and fusion are the training loop's)"
            )
    note = (
        f"aggregation_frequency {value['aggregation_frequency']}"
        if became
        else "nothing detflow keeps"
    )
    return Entry(key, became, note, details)


def _reproducibility(key: str, value: Any, ctx: _Context) -> Entry:
    seed = value.get("experiment_seed") if isinstance(value, Mapping) else None
    if isinstance(seed, int) and not isinstance(seed, bool):
        ctx.experiment["seed"] = seed
        return Entry(key, ["seed"], f"experiment_seed {seed} -> seed")
    return Entry(key, [], "no experiment_seed: detflow's seed stays 0")


def _checkpoint_storage(key: str, value: Any, ctx: _Context) -> Entry:
    if not isinstance(value, Mapping):
        return Entry(key, [], f"not a mapping ({value!r}): left out")
    out: dict[str, Any] = {}
    details: list[str] = []
    used = {"type"}
    for sub in ("save_trial_latest", "save_trial_best"):
        item = value.get(sub)
        if isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            out[sub] = item
            used.add(sub)
    best = value.get("save_experiment_best")
    if isinstance(best, int) and not isinstance(best, bool):
        used.add("save_experiment_best")
        if best > 0:
            out["save_experiment_best"] = best
            details.append(
                f"checkpoint_storage.save_experiment_best {best}: detflow keeps only the best "
                f"{best} trials' checkpoints (Determined also kept each trial's save_trial_*)"
            )
        else:
            details.append(
                "checkpoint_storage.save_experiment_best 0: detflow's default (every trial "
                "keeps its own)"
            )
    kind = value.get("type")
    path = _storage_path(value, used)
    if path is not None:
        out["storage_path"] = path
    elif kind not in (None, "shared_fs", "directory"):
        details.append(
            f"checkpoint_storage.type {kind}: not mapped: detflow writes checkpoints to a file "
            "system path (checkpoint_storage.storage_path; a bucket mounted as one works)"
        )
    for sub in value:
        if sub not in used:
            details.append(f"checkpoint_storage.{sub}: not mapped: {_NO_WAY}")
    if out:
        ctx.experiment["checkpoint_storage"] = out
    became = [f"checkpoint_storage.{k}" for k in out]
    return Entry(key, became, ", ".join(f"{k} {v!r}" for k, v in out.items()), details)


def _storage_path(value: Mapping[str, Any], used: set[str]) -> str | None:
    host = value.get("host_path")
    inner = value.get("storage_path")
    container = value.get("container_path")
    if value.get("type") in (None, "shared_fs") and isinstance(host, str):
        used.update(("host_path", "storage_path"))
        if isinstance(inner, str) and inner:
            return inner if inner.startswith("/") else f"{host.rstrip('/')}/{inner}"
        return host
    if value.get("type") == "directory" and isinstance(container, str):
        used.add("container_path")
        return container
    return None


def _length_key(key: str, value: Any, ctx: _Context) -> Entry:
    details: list[str] = []
    length = _length(value, key, details)
    if length is None:
        return Entry(key, [], "; ".join(details) or "left out", [])
    ctx.experiment[key] = length
    return Entry(key, [key], repr(length), details)


def _positive_key(key: str, value: Any, ctx: _Context) -> Entry:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        ctx.experiment[key] = value
        return Entry(key, [key], repr(value))
    if value in (0, None):
        return Entry(key, [], f"{value!r}: Determined's 'unset'; detflow's default stays")
    return Entry(key, [], f"{value!r}: not a positive integer: left out")


def _max_restarts(key: str, value: Any, ctx: _Context) -> Entry:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        ctx.experiment[key] = value
        return Entry(key, [key], repr(value))
    return Entry(key, [], f"{value!r}: not a count: left out")


def _boolean_key(key: str, value: Any, ctx: _Context) -> Entry:
    if isinstance(value, bool):
        ctx.experiment[key] = value
        return Entry(key, [key], repr(value))
    return Entry(key, [], f"{value!r}: not true or false: left out")


def _data(key: str, value: Any, ctx: _Context) -> Entry:
    if value is None:
        return Entry(key, [], "empty: nothing to keep")
    ctx.kept["DATA"] = _plain(value)
    return Entry(
        key,
        [],
        "a field of your own experiment class (a subclass of detflow.ExperimentConfig) or "
        "hyperparameters; the module keeps it as DATA",
    )


def _entrypoint(key: str, value: Any, ctx: _Context) -> Entry:
    shown = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return Entry(
        key,
        [],
        f"your training script: python train.py +experiment={ctx.name} (it was {shown})",
    )


def _environment(key: str, value: Any, ctx: _Context) -> Entry:
    if not isinstance(value, Mapping):
        return Entry(key, [], _WAY["environment"])
    details: list[str] = []
    for sub, item in value.items():
        if sub == "image":
            images = (
                ", ".join(f"{k}: {v}" for k, v in item.items())
                if isinstance(item, Mapping)
                else str(item)
            )
            details.append(
                f"environment.image ({images}): not mapped: hydra.launcher.setup (the lines "
                "that load modules or a venv before the trial; detflow runs no images)"
            )
        elif sub == "environment_variables":
            pairs = _variables(item)
            settings = " ".join(f"hydra.job.env_set.{k}={v}" for k, v in pairs)
            details.append(
                "environment.environment_variables: not mapped: Hydra sets them for each "
                f"trial: {settings or 'hydra.job.env_set.NAME=VALUE'}"
            )
        else:
            details.append(
                f"environment.{sub}: not mapped: not needed (no containers or ports to set up)"
            )
    return Entry(key, [], _WAY["environment"], details)


def _variables(item: Any) -> list[tuple[str, str]]:
    values: list[Any] = []
    if isinstance(item, Mapping):  # {cpu: [...], gpu: [...]}, or NAME: VALUE
        for v in item.values():
            values.extend(v if isinstance(v, list) else [v])
    elif isinstance(item, list):
        values = item
    pairs: list[tuple[str, str]] = []
    for text in values:
        if isinstance(text, str) and "=" in text:
            name, _, val = text.partition("=")
            if name not in (p[0] for p in pairs):
                pairs.append((name, val))
    return pairs


def _slurm(key: str, value: Any, ctx: _Context) -> Entry:
    details: list[str] = []
    if isinstance(value, Mapping):
        for sub, item in value.items():
            if sub == "sbatch_args" and isinstance(item, list):
                args = " ".join(_additional(str(a)) for a in item)
                details.append(f"slurm.sbatch_args: not mapped: {args}")
            elif sub == "slots_per_node":
                details.append(
                    f"slurm.slots_per_node: not mapped: hydra.launcher.gpus_per_node={item}"
                )
            elif sub == "gpu_type":
                details.append(f"slurm.gpu_type: not mapped: hydra.launcher.constraint={item}")
            else:
                details.append(f"slurm.{sub}: not mapped: {_NO_WAY}")
    return Entry(key, [], _WAY["slurm"], details)


def _additional(arg: str) -> str:
    name, sep, value = arg.lstrip("-").partition("=")
    if not sep:
        name, _, value = arg.lstrip("-").partition(" ")
    return f"hydra.launcher.additional_parameters.{name}={value or 'true'}"


def _unknown(key: str, value: Any, ctx: _Context) -> Entry:
    return Entry(key, [], _WAY.get(key, _NO_WAY))


def _fixed(way: str) -> Handler:
    def handler(key: str, value: Any, ctx: _Context) -> Entry:
        return Entry(key, [], way)

    return handler


_NO_WAY = (
    "not a key detflow or this importer knows: a field of your own experiment class if your "
    "code reads it"
)
_WAY = {
    "environment": "hydra.launcher.setup for environment.image (detflow runs no container "
    "images); hydra.job.env_set for its variables",
    "bind_mounts": "not needed on Slurm: jobs see the cluster's shared file system",
    "labels": "detflow has no labels: the experiment's name, or hydra.sweep.dir",
    "workspace": "hydra.sweep.dir (e.g. multirun/<workspace>/<project>)",
    "project": "hydra.sweep.dir (e.g. multirun/<workspace>/<project>)",
    "debug": "HYDRA_FULL_ERROR=1 for tracebacks, hydra.verbose=true for debug logs",
    "profiling": "your own profiler in the trial (torch.profiler, py-spy)",
    "slurm": "hydra/launcher=detflow_slurm with hydra.launcher.* options",
    "pbs": "hydra/launcher=detflow_slurm: detflow launches on Slurm (pbsbatch_args do not "
    "carry over)",
    "data_layer": "your trial's own data loading",
    "tensorboard_storage": "TensorBoard event files are in each run directory "
    "(tensorboard --logdir multirun/...)",
    "checkpoint_policy": "detflow keeps each trial's latest and best checkpoints "
    "(checkpoint_storage.save_trial_latest, save_trial_best)",
    "log_policies": "max_restarts restarts a trial that dies without a result; deterministic "
    "failures are not retried",
    "retention_policy": "checkpoint_storage.save_* keep fewer checkpoints; delete old sweep "
    "directories yourself",
    "preemption_timeout": "hydra.launcher.signal_delay_s (seconds of warning before a time limit)",
    "security": "not needed: Slurm accounts and file permissions decide access",
    "integrations": "read the data in your trial (detflow has no Pachyderm integration)",
    "internal": "Determined's own",
    "batches_per_step": "used for searcher.max_steps only (detflow has no steps of batches)",
}
_SEARCHER_WAY = {
    "stop_once": "detflow's asha and adaptive_asha are promotion-based (stop_once: true was "
    "Determined's stopping-based variant)",
    "source_trial_id": "start from a checkpoint in your own code (detflow.init(...).restore "
    "or resume=true in a run directory)",
    "source_checkpoint_uuid": "start from a checkpoint in your own code (resume=true in a "
    "run directory)",
    "train_stragglers": "not needed (adaptive_asha is asynchronous)",
    "unit": "searcher.max_length gives its unit",
    "budget": "searcher.max_trials",
    "mode": "one of aggressive, standard, conservative",
    "time_metric": "searcher.max_length",
    "max_time": "searcher.max_length",
    "population_size": "detflow has no pbt yet: random written",
    "num_rounds": "detflow has no pbt yet",
    "replace_function": "detflow has no pbt yet",
    "explore_function": "detflow has no pbt yet",
    "length_per_round": "detflow has no pbt yet",
}
_RESOURCES_WAY = {
    "resource_pool": "hydra.launcher.partition",
    "priority": "hydra.launcher.qos",
    "weight": "not needed (Slurm's fair share decides)",
    "max_slots": "searcher.max_concurrent_trials x resources.slots_per_trial",
    "shm_size": "not needed (no containers)",
    "agent_label": "hydra.launcher.constraint",
    "devices": "not needed (jobs see the node's devices)",
    "native_parallel": "not needed",
    "is_single_node": "hydra.launcher.nodes=1",
}

_HANDLERS: dict[str, Handler] = {
    "name": _name,
    "description": _description,
    "hyperparameters": _hyperparameters,
    "resources": _resources,
    "optimizations": _optimizations,
    "records_per_epoch": _positive_key,
    "searcher": _searcher,
    "reproducibility": _reproducibility,
    "checkpoint_storage": _checkpoint_storage,
    "min_validation_period": _length_key,
    "min_checkpoint_period": _length_key,
    "scheduling_unit": _positive_key,
    "max_restarts": _max_restarts,
    "perform_initial_validation": _boolean_key,
    "data": _data,
    "entrypoint": _entrypoint,
    "environment": _environment,
    "slurm": _slurm,
    **{key: _fixed(way) for key, way in _WAY.items() if key not in ("environment", "slurm")},
}


def _check_batch_size(ctx: _Context) -> None:
    hparams = ctx.experiment.setdefault("hyperparameters", {})
    if "global_batch_size" in hparams:
        return
    slots = int(ctx.experiment.get("resources", {}).get("slots_per_trial", 1))
    placeholder = math.ceil(PLACEHOLDER_BATCH_SIZE / slots) * slots
    hparams["global_batch_size"] = placeholder
    ctx.to_set.append(
        f"hyperparameters.global_batch_size (Determined gave none: your code chose its batches; "
        f"{placeholder} is written in its place)"
    )


def _check_length(ctx: _Context) -> None:
    searcher = ctx.experiment.get("searcher", {})
    if "max_length" not in searcher:
        ctx.to_set.append(
            "searcher.max_length (Determined gave no length detflow reads; detflow's default "
            "1 epochs stays)"
        )


# --- helpers ----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` as plain Python data: dicts with string keys, lists, scalars."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _leaves(hparams: Mapping[str, Any]) -> list[str]:
    found = []
    for key, value in hparams.items():
        if isinstance(value, Mapping) and not is_determined(value):
            found += [f"{key}.{k}" for k in _leaves(value)]
        else:
            found.append(key)
    return found


def _count_consts(hparams: Mapping[str, Any]) -> int:
    count = 0
    for value in hparams.values():
        if is_determined(value):
            count += value.get("type") == "const"
        elif isinstance(value, Mapping):
            count += _count_consts(value)
    return count


def _safe_dimensions(hparams: Any) -> bool:
    if not isinstance(hparams, Mapping):
        return False
    try:
        return bool(find_dimensions(hparams))
    except ConfigError:
        return True


# --- output -------------------------------------------------------------------------------


def report_lines(imported: Imported) -> list[str]:
    """What became of each top-level key, one line each (and its sub-keys' below it), then
    the keys to set.

    >>> print("\\n".join(report_lines(import_config({"bind_mounts": [], "max_restarts": 2}))))
    bind_mounts      not mapped: not needed on Slurm: jobs see the cluster's shared file system
    max_restarts     -> max_restarts: 2
    to set: hyperparameters.global_batch_size (Determined gave none: your code chose its \
batches; 32 is written in its place)
    to set: searcher.max_length (Determined gave no length detflow reads; detflow's default \
1 epochs stays)
    """
    width = max([len(e.key) for e in imported.entries] + [15]) + 1
    lines = []
    for entry in imported.entries:
        if entry.mapped:
            became = ", ".join(entry.became)
            lines.append(
                f"{entry.key:<{width}}-> {became}" + (f": {entry.note}" if entry.note else "")
            )
        else:
            lines.append(f"{entry.key:<{width}}not mapped: {entry.note}")
        lines.extend(f"{'':<{width}}  {detail}" for detail in entry.details)
    lines.extend(f"to set: {item}" for item in imported.to_set)
    return lines


def module_text(imported: Imported, source: str) -> str:
    """The Python module: ``experiment`` (a dict), what was kept beside it, the report as
    comments, and the registration under the experiment's name."""
    comment = "\n".join(f"#   {line}" if line else "#" for line in report_lines(imported))
    parts = [
        f'"""{imported.name}: a Determined config, ported by ``detflow import-determined``.\n\n'
        f"Import this module in your training script (``@detflow.main()``), then run\n"
        f"``python train.py +experiment={imported.name}`` (add ``-m`` to search).\n"
        '"""\n',
        "from __future__ import annotations\n",
        "import detflow\n",
        f"# Source: {_one_line(source)}",
    ]
    if imported.description:
        parts.append(
            "# Description: " + "\n# ".join(_one_line(t) for t in imported.description.splitlines())
        )
    parts.append("# What became of each key:\n" + comment + "\n")
    parts.append(f"experiment = {_literal(imported.experiment)}\n")
    for name, value in imported.kept.items():
        parts.append(
            f"#: Determined's {name.lower()} section, not part of the experiment: make it a "
            "field of your\n#: experiment class (a subclass of detflow.ExperimentConfig) or "
            f"move it to hyperparameters.\n{name} = {_literal(value)}\n"
        )
    parts.append('detflow.register_experiment(experiment["name"], experiment)\n')
    return "\n".join(parts)


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) if text.isprintable() else repr(text)


def _literal(value: Any, indent: int = 0) -> str:
    """``value`` written as a Python literal, one key or item a line."""
    pad = " " * (indent + 4)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        flat = "{" + ", ".join(f"{k!r}: {_literal(v, indent + 4)}" for k, v in value.items()) + "}"
        if len(flat) + indent < 76 and "\n" not in flat:
            return flat
        items = [f"{pad}{k!r}: {_literal(v, indent + 4)}," for k, v in value.items()]
        return "{\n" + "\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        flat = "[" + ", ".join(_literal(v, indent + 4) for v in value) + "]"
        if len(flat) + indent < 80 and "\n" not in flat:
            return flat
        items = [f"{pad}{_literal(v, indent + 4)}," for v in value]
        return "[\n" + "\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    return repr(value)
