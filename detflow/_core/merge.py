"""The one hyperparameter merge: layers, precedence and where each value came from.

Pure Python: the layers arrive as plain mappings; nothing here knows of Hydra.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detflow._core.errors import ConfigError
from detflow._core.expr import EXPR_RESOLVER_NAME
from detflow._core.paths import get_path, leaves
from detflow._core.scale import RESOLVER_NAME

__all__ = [
    "HparamLayers",
    "MergedHparams",
    "Precedence",
    "Replacement",
    "Source",
    "check_keys",
    "check_types",
    "merge_hparams",
]


class Source(str, enum.Enum):
    """The layer a hyperparameter's value came from, lowest first."""

    DEFAULT = "default"
    CONFIG = "config"
    CODE = "code"
    OVERRIDE = "override"
    SEARCHER = "searcher"

    def __str__(self) -> str:
        return self.value


class Precedence(str, enum.Enum):
    """``hparams_precedence``: which of code and config wins when both give a value."""

    CODE = "code"
    CONFIG = "config"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, raw: object, key: str = "hparams_precedence") -> Precedence:
        """The precedence named ``raw``.

        >>> Precedence.parse("config")
        <Precedence.CONFIG: 'config'>
        """
        for member in cls:
            if raw == member.value:
                return member
        raise ConfigError(key, raw, "one of code, config")


@dataclass(frozen=True)
class HparamLayers:
    """The hyperparameters each layer gives, as nested mappings."""

    default: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    code: Mapping[str, Any] = field(default_factory=dict)
    override: Mapping[str, Any] = field(default_factory=dict)
    searcher: Mapping[str, Any] = field(default_factory=dict)

    def ordered(self, precedence: Precedence) -> list[tuple[Source, Mapping[str, Any]]]:
        """The layers lowest first: code above config, unless ``precedence`` is config."""
        middle = [(Source.CONFIG, self.config), (Source.CODE, self.code)]
        if precedence is Precedence.CONFIG:
            middle.reverse()
        return [
            (Source.DEFAULT, self.default),
            *middle,
            (Source.OVERRIDE, self.override),
            (Source.SEARCHER, self.searcher),
        ]


@dataclass(frozen=True)
class Replacement:
    """A value given in code that a higher layer replaced."""

    key: str
    code_value: Any
    value: Any
    winner: Source

    def __str__(self) -> str:
        return (
            f"hyperparameters.{self.key}: code gave {self.code_value!r}, "
            f"{self.winner.value} gave {self.value!r}; using {self.winner.value}'s {self.value!r}"
        )


@dataclass(frozen=True)
class MergedHparams:
    """The merged hyperparameters (unresolved), each leaf's source, and code values replaced."""

    values: dict[str, Any]
    sources: dict[str, Source]
    replaced: tuple[Replacement, ...] = ()


def merge_hparams(
    layers: HparamLayers, precedence: Precedence | str = Precedence.CODE
) -> MergedHparams:
    """Merge the layers deeply (nested mappings key by key), higher layers winning.

    Examples
    --------
    >>> merged = merge_hparams(
    ...     HparamLayers(config={"lr": 0.1, "opt": {"name": "sgd", "momentum": 0.9}},
    ...                  code={"lr": 0.3, "opt": {"momentum": 0.8}},
    ...                  override={"lr": 0.2}))
    >>> merged.values
    {'lr': 0.2, 'opt': {'name': 'sgd', 'momentum': 0.8}}
    >>> {k: str(s) for k, s in merged.sources.items()}
    {'lr': 'override', 'opt.name': 'config', 'opt.momentum': 'code'}
    >>> print(merged.replaced[0])
    hyperparameters.lr: code gave 0.3, override gave 0.2; using override's 0.2
    """
    order = layers.ordered(Precedence.parse(precedence))
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    code_leaves: dict[str, Any] = {}
    for source, layer in order:
        if not isinstance(layer, Mapping):
            raise ConfigError(
                f"{source.value} hyperparameters", layer, "a mapping of names to values"
            )
        check_keys(layer, "")
        _merge_into(values, sources, layer, source, "")
        if source is Source.CODE:
            code_leaves = dict(leaves(layer, ""))
    replaced = []
    for key, code_value in code_leaves.items():
        path, winner = _owner(sources, key)
        if winner is None or winner is Source.CODE:
            continue
        value = get_path(values, path)
        if value != code_value:
            replaced.append(Replacement(key, code_value, value, winner))
    ordered_sources = {key: sources[key] for key, _ in leaves(values, "")}
    return MergedHparams(values, ordered_sources, tuple(replaced))


#: The layers that declare a hyperparameter's type: its default and the experiment's value.
_DECLARING = (Source.DEFAULT, Source.CONFIG)


def check_types(layers: HparamLayers, merged: MergedHparams) -> None:
    """Refuse a value given in code, on the command line or by the searcher whose type
    differs from the one its default or the experiment declares: an int stays an int, a
    float takes ints too, a bool stays a bool (``hidden=12.5`` for ``hidden: 16`` is an
    error, not a silent float).

    >>> layers = HparamLayers(config={"hidden": 16}, override={"hidden": 12.5})
    >>> check_types(layers, merge_hparams(layers))
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: hyperparameters.hidden = 12.5 is not valid: expected an ...
    """
    declared: dict[str, tuple[Source, Any]] = {}
    for source, layer in ((Source.CONFIG, layers.config), (Source.DEFAULT, layers.default)):
        for key, value in leaves(layer, ""):
            declared.setdefault(key, (source, value))
    for key, source in merged.sources.items():
        if source in _DECLARING or key not in declared:
            continue
        where, base = declared[key]
        value = get_path(merged.values, key)
        expected = _same_kind(base, value)
        if expected is not None:
            raise ConfigError(
                f"hyperparameters.{key}",
                value,
                f"{expected}, as its {where.value} value {base!r} is",
            )


def _same_kind(base: Any, value: Any) -> str | None:
    """What ``value`` must be to take the place of ``base``; None when it may."""
    if isinstance(base, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(base, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "an integer"
    if isinstance(base, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else "a number"
    if isinstance(base, str) and base.startswith(f"${{{RESOLVER_NAME}:"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok or _is_expression(value) else "a number (what it scales to)"
    if isinstance(base, str) and base.startswith(f"${{{EXPR_RESOLVER_NAME}:"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok or _is_expression(value) else "a number (what it computes)"
    return None  # strings, other expressions, containers, None: any value may replace them


def _is_expression(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def _owner(sources: Mapping[str, Source], key: str) -> tuple[str, Source | None]:
    """Which layer now holds ``key``: itself, a value above it, or a mapping under it."""
    if key in sources:
        return key, sources[key]
    for path, source in sources.items():
        if key.startswith(path + "."):  # a scalar replaced the mapping holding key
            return path, source
    below = [source for path, source in sources.items() if path.startswith(key + ".")]
    if below:
        return key, max(below, key=_LAYER_ORDER.index)
    # Gone: a scalar replaced a mapping above key, then a higher layer put a mapping back
    # without key. The mapping's owner is the highest layer among its leaves.
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        ancestor = ".".join(parts[:end])
        inside = [source for path, source in sources.items() if path.startswith(ancestor + ".")]
        if inside:
            return ancestor, max(inside, key=_LAYER_ORDER.index)
    return key, None


_LAYER_ORDER = list(Source)


def check_keys(layer: Mapping[Any, Any], prefix: str) -> None:
    for key, value in layer.items():
        if not isinstance(key, str) or not key or "." in key:
            where = f"hyperparameters.{prefix}".rstrip(".")
            raise ConfigError(where, key, "non-empty string keys without dots (nest mappings)")
        if isinstance(value, Mapping):
            check_keys(value, f"{prefix}{key}.")


def _merge_into(
    target: dict[str, Any],
    sources: dict[str, Source],
    layer: Mapping[Any, Any],
    source: Source,
    prefix: str,
) -> None:
    for key, value in layer.items():
        path = prefix + key
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], sources, value, source, path + ".")
            continue
        for stale in [k for k in sources if k == path or k.startswith(path + ".")]:
            del sources[stale]
        target[key] = _plain_copy(value)
        for leaf, _ in leaves({key: value}, prefix):
            sources[leaf] = source


def _plain_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain_copy(v) for k, v in value.items()}
    return copy.deepcopy(value)
