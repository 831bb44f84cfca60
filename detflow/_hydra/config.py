"""From a composed config to a validated :class:`Experiment`: layers, one merge, resolve.

This module is where the hyperparameter layers are read (design section 4); it is the same
in a single run, a sweep trial and a Slurm job.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import GrammarParseError, MissingMandatoryValue, OmegaConfBaseException

from detflow._core.artifacts import SEARCHER_KEYS_ENV, HparamRecord
from detflow._core.determined import for_one_run
from detflow._core.errors import ConfigError, config_error_in
from detflow._core.experiment import Experiment
from detflow._core.expr import EXPR_RESOLVER_NAME
from detflow._core.keys import boolean_keys
from detflow._core.merge import (
    HparamLayers,
    MergedHparams,
    Precedence,
    check_keys,
    check_types,
    merge_hparams,
)
from detflow._core.paths import MISSING, flatten, get_path, set_path, unflatten
from detflow._hydra.resolvers import register_resolvers

__all__ = ["HparamRecord", "LoadedConfig", "load_config"]


@dataclass(frozen=True)
class LoadedConfig:
    """The resolved config, the validated experiment and each hyperparameter's provenance."""

    resolved: dict[str, Any]
    experiment: Experiment
    merged: MergedHparams
    hparams: dict[str, HparamRecord]


def load_config(
    cfg: Any,
    hparams: Mapping[str, Any] | None = None,
    *,
    overrides: list[str] | None = None,
    searcher_keys: list[str] | None = None,
    declared: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Merge the hyperparameter layers once, resolve derived values, validate everything.

    ``cfg`` is a DictConfig (as Hydra composes it), an :class:`ExperimentConfig` (or
    subclass) instance, or a plain dict. ``overrides`` are the command-line overrides (read
    from Hydra when running under it); ``searcher_keys`` the keys the searcher chose;
    ``declared`` the hyperparameters as the experiment wrote them (before any override),
    whose types a value from code, the command line or the searcher must keep (composed
    again from Hydra when it is not given and the command line sets hyperparameters).

    Examples
    --------
    >>> loaded = load_config(
    ...     {"hyperparameters": {"global_batch_size": 64, "base_batch_size": 32,
    ...                          "lr": "${df.scale:0.1,linear}"},
    ...      "searcher": {"max_length": "2 epochs"}},
    ...     hparams={"momentum": 0.9},
    ... )
    >>> loaded.experiment.hyperparameters["lr"]
    0.2
    >>> loaded.hparams["hyperparameters.momentum"].source
    <Source.CODE: 'code'>
    """
    register_resolvers()
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        # A plain dict (the sweeper validates every point this way): no schema, no defaults
        # layer, and one OmegaConf round trip less; interpolations are checked on resolving.
        root = None
        container = {str(k): v for k, v in copy.deepcopy(dict(cfg)).items()}
    else:
        root = _as_dictconfig(cfg)
        container = _container(root)
    precedence = Precedence.parse(container.get("hparams_precedence", "code"))
    composed = container.get("hyperparameters") or {}
    if not isinstance(composed, Mapping):
        raise ConfigError("hyperparameters", composed, "a mapping of names to values")
    check_keys(composed, "")  # before any dotted-key bookkeeping below
    composed = for_one_run(composed)  # Determined's {type: ...} entries: plain values
    if hparams is not None and not isinstance(hparams, Mapping):
        raise ConfigError("init(hparams=...)", hparams, "a mapping of names to values")
    if overrides is None:
        overrides = _hydra_task_overrides()
    _check_booleans(overrides)
    if searcher_keys is None:
        searcher_keys = [k for k in os.environ.get(SEARCHER_KEYS_ENV, "").split(",") if k]
    default = _defaults_of(root) if root is not None else {}
    override_keys = _hparam_keys(overrides)
    layers = HparamLayers(
        default=default,
        config=_without_equal(composed, default),
        code=dict(hparams or {}),
        override=_pick(composed, [k for k in override_keys if k not in searcher_keys]),
        searcher=_pick(composed, [_strip(k) for k in searcher_keys]),
    )
    merged = merge_hparams(layers, precedence)
    given = [k for k in override_keys if k not in searcher_keys]
    if declared is None and given and root is not None:
        declared = _declared_under_hydra()
    check_types(HparamLayers(default=default, config=declared or layers.config), merged)
    container["hyperparameters"] = merged.values
    resolved = _resolve(container)
    experiment = Experiment.from_mapping(resolved)
    flat_values = flatten(experiment.hyperparameters)
    flat_raw = flatten(merged.values)
    records = {}
    for key, source in merged.sources.items():
        raw = flat_raw.get(key)
        expression = raw if isinstance(raw, str) and "${" in raw else None
        records[f"hyperparameters.{key}"] = HparamRecord(flat_values.get(key), source, expression)
    return LoadedConfig(resolved, experiment, merged, records)


def _as_dictconfig(cfg: Any) -> DictConfig:
    if isinstance(cfg, DictConfig):
        return cfg
    if dataclasses.is_dataclass(cfg) or isinstance(cfg, Mapping):
        try:
            made = (
                OmegaConf.structured(cfg)
                if dataclasses.is_dataclass(cfg)
                else OmegaConf.create(dict(cfg))
            )
        except OmegaConfBaseException as exc:
            raise _config_error(exc, {}) from None
        assert isinstance(made, DictConfig)
        return made
    raise ConfigError("cfg", type(cfg).__name__, "a DictConfig, an ExperimentConfig or a dict")


def _container(root: DictConfig) -> dict[str, Any]:
    try:
        container = OmegaConf.to_container(root, resolve=False, throw_on_missing=False)
    except OmegaConfBaseException as exc:  # pragma: no cover - defensive
        raise ConfigError(str(getattr(exc, "full_key", "config")), None, str(exc)) from exc
    assert isinstance(container, dict)
    return {str(k): v for k, v in container.items()}


def _defaults_of(root: DictConfig) -> dict[str, Any]:
    """The ``default`` layer: the schema dataclass's own ``hyperparameters``."""
    schema = OmegaConf.get_type(root)
    if not (isinstance(schema, type) and dataclasses.is_dataclass(schema)):
        return {}
    for spec in dataclasses.fields(schema):
        if spec.name != "hyperparameters":
            continue
        if spec.default_factory is not dataclasses.MISSING:
            value = spec.default_factory()
        elif spec.default is not dataclasses.MISSING:
            value = copy.deepcopy(spec.default)
        else:
            return {}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        return dict(value) if isinstance(value, Mapping) else {}
    return {}


def _without_equal(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Leaves of ``values`` that differ from ``defaults`` (what the config itself set)."""
    flat_defaults = flatten(defaults)
    return unflatten(
        {
            k: v
            for k, v in flatten(values).items()
            if k not in flat_defaults or flat_defaults[k] != v
        }
    )


def _pick(values: Mapping[str, Any], keys: list[str]) -> dict[str, Any]:
    """The sub-mapping of ``values`` at the dotted ``keys`` that exist there (``*``: all)."""
    if "*" in keys:
        return dict(values)
    picked: dict[str, Any] = {}
    for key in keys:
        value = get_path(values, key)
        if value is not MISSING:
            set_path(picked, key, value)
    return picked


def _strip(key: str) -> str:
    return key.removeprefix("hyperparameters.")


def _hparam_keys(overrides: list[str]) -> list[str]:
    """Hyperparameter keys (relative to ``hyperparameters``) set by command-line overrides."""
    keys: list[str] = []
    for text in overrides:
        key = text.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
        if key == "hyperparameters":
            return ["*"]
        if key.startswith("hyperparameters."):
            keys.append(_strip(key))
    return keys


def _check_booleans(overrides: list[str]) -> None:
    """``resume=2`` is no boolean: a typed root config would take any number as true."""
    keys = set(boolean_keys())
    for text in overrides:
        key, _, raw = text.partition("=")
        key = key.lstrip("+~")
        if key not in keys or not raw:
            continue
        from hydra.core.override_parser.overrides_parser import OverridesParser

        value = OverridesParser.create().parse_override(text).value()
        if not isinstance(value, bool):
            raise ConfigError(key, value, "true or false")


def _hydra_task_overrides() -> list[str]:
    if "hydra" not in sys.modules:
        return []
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    task = OmegaConf.to_container(HydraConfig.get().overrides.task, resolve=False)
    assert isinstance(task, list)
    return [str(t) for t in task]


def _declared_under_hydra() -> dict[str, Any] | None:
    """The experiment's hyperparameters as written: the config composed again without the
    command line's hyperparameter overrides (None when not running under Hydra)."""
    if "hydra" not in sys.modules:
        return None
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import HydraException
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    if not (HydraConfig.initialized() and GlobalHydra.instance().is_initialized()):
        return None
    hydra_cfg = HydraConfig.get()
    # A sweep's points were checked against the experiment when the sweep was planned.
    if hydra_cfg.job.config_name is None or hydra_cfg.mode == RunMode.MULTIRUN:
        return None
    kept = [t for t in _hydra_task_overrides() if not _hparam_keys([t])]
    hydra_overrides = OmegaConf.to_container(hydra_cfg.overrides.hydra, resolve=False)
    assert isinstance(hydra_overrides, list)
    kept += [str(o) for o in hydra_overrides if str(o).startswith("hydra.searchpath")]
    try:
        written = compose(config_name=hydra_cfg.job.config_name, overrides=kept)
    except (HydraException, OmegaConfBaseException):
        return None  # the experiment cannot be composed apart: its types go unchecked
    values = OmegaConf.to_container(written.get("hyperparameters") or {}, resolve=False)
    return {str(k): v for k, v in values.items()} if isinstance(values, dict) else None


def _resolve(container: dict[str, Any]) -> dict[str, Any]:
    if not _has_interpolation(container):
        return copy.deepcopy(container)
    try:
        cfg = OmegaConf.create(container)
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        raise _config_error(exc, container) from None
    assert isinstance(resolved, dict)
    return {str(k): v for k, v in resolved.items()}


def _has_interpolation(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, Mapping):
        return any(_has_interpolation(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_interpolation(v) for v in value)
    return False


def _config_error(exc: OmegaConfBaseException, container: Mapping[str, Any]) -> ConfigError:
    """The one-line :class:`ConfigError` for an OmegaConf error (resolution, grammar, ???)."""
    key = str(getattr(exc, "full_key", "") or _unparsable_key(container) or "config")
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(key, "???", "a value: it is required and missing")
    ours = config_error_in(exc)
    if ours is not None:
        # An input of the expression may be what is wrong (df.scale reads the batch size).
        return ours.for_input_of(key)
    message = str(exc).splitlines()[0]
    inner = message.split("raised while resolving interpolation: ", 1)[-1]
    value = get_path(container, key, None)
    if isinstance(exc, GrammarParseError) and f"${{{EXPR_RESOLVER_NAME}:" in str(value):
        # OmegaConf's grammar takes no parentheses or quotes unquoted in an argument.
        inner += f"; quote an expression with parentheses: ${{{EXPR_RESOLVER_NAME}:'...'}}"
    return ConfigError(key, value, f"an expression that resolves ({inner})")


def _unparsable_key(container: Mapping[str, Any], prefix: str = "") -> str | None:
    """The first key whose interpolation OmegaConf's grammar refuses (its errors name none)."""
    from omegaconf import grammar_parser

    for key, value in container.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            found = _unparsable_key(value, path + ".")
            if found is not None:
                return found
        elif isinstance(value, str) and "${" in value:
            try:
                grammar_parser.parse(value)
            except Exception:
                return path
    return None
