"""Dotted keys (``searcher.max_length``) into nested mappings: read, set, flatten, rebuild."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["MISSING", "flatten", "get_path", "has_path", "leaves", "set_path", "unflatten"]

#: What :func:`get_path` returns for a key that is not there (``None`` may be a value).
MISSING: Any = object()


def get_path(mapping: Mapping[str, Any], dotted: str, default: Any = MISSING) -> Any:
    """The value at ``dotted``, or ``default`` when a part of it is not there.

    >>> get_path({"a": {"b": 1}}, "a.b"), get_path({"a": 1}, "a.b", None)
    (1, None)
    """
    node: Any = mapping
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def has_path(mapping: Mapping[str, Any], dotted: str) -> bool:
    """Whether ``dotted`` is set in ``mapping``.

    >>> has_path({"a": {"b": None}}, "a.b"), has_path({"a": {}}, "a.b")
    (True, False)
    """
    return get_path(mapping, dotted) is not MISSING


def set_path(target: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``dotted`` to ``value``, making (or replacing by) mappings on the way.

    >>> cfg = {"a": 1}
    >>> set_path(cfg, "a.b", 2); cfg
    {'a': {'b': 2}}
    """
    *parents, leaf = dotted.split(".")
    node = target
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


def leaves(mapping: Mapping[Any, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys of the leaves, depth first; an empty mapping counts as a leaf."""
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaves(value, path + ".")
        else:
            yield path, value


def flatten(values: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted leaf keys of a nested mapping.

    >>> flatten({"a": 1, "b": {"c": 2}})
    {'a': 1, 'b.c': 2}
    """
    return dict(leaves(values))


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested mapping of dotted keys.

    >>> unflatten({"a": 1, "b.c": 2})
    {'a': 1, 'b': {'c': 2}}
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        set_path(out, key, value)
    return out
