"""OmegaConf resolvers detflow registers on import (``df.scale``, ``df.expr``)."""

from __future__ import annotations

import threading
from typing import Any

from omegaconf import Container, DictConfig, Node, OmegaConf, ValueNode
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from detflow._core.errors import ConfigError
from detflow._core.expr import EXPR_RESOLVER_NAME, GRAMMAR, ExpressionError, parse_expression
from detflow._core.scale import RESOLVER_NAME, ScaleRule, apply_rule, scale_factor

__all__ = ["register_resolvers", "resolve_expr", "resolve_scale"]


def resolve_scale(*args: Any, _node_: Node, _root_: Container) -> float | int:
    """``${df.scale:VALUE,RULE}``: VALUE scaled by k read from the config it sits in."""
    key = _node_._get_full_key(None) or RESOLVER_NAME
    if len(args) != 2:
        rules = ", ".join(rule.value for rule in ScaleRule)
        raise ConfigError(
            str(key),
            f"${{{RESOLVER_NAME}:{','.join(str(a) for a in args)}}}",
            f"${{{RESOLVER_NAME}:VALUE,RULE}} with RULE one of {rules}",
        )
    value, rule = args
    factor = scale_factor(
        OmegaConf.select(_root_, "hyperparameters.global_batch_size"),
        OmegaConf.select(_root_, "optimizations.aggregation_frequency", default=1),
        OmegaConf.select(_root_, "hyperparameters.base_batch_size"),
    )
    return apply_rule(value, rule, factor, key=str(key))


#: The keys whose ``df.expr`` is being computed, and the keys they are reading, outermost
#: first: a key met again is a cycle (``hidden -> width -> hidden``).
_resolving = threading.local()


def _short(key: str) -> str:
    return key.removeprefix("hyperparameters.")


def _chain(stack: list[str], again: str) -> str:
    """The cycle ``again`` closes on ``stack``, from ``again``: ``hidden -> width -> hidden``."""
    return " -> ".join(_short(k) for k in [*stack[stack.index(again) :], again])


def _find(container: Any, dotted: str) -> Node | None:
    """The node at ``dotted`` under ``container``, without resolving anything on the way."""
    node: Any = container
    for part in dotted.split("."):
        if not isinstance(node, DictConfig):
            return None
        try:  # a struct config raises for a key it does not have
            child = node._get_node(part, throw_on_missing_key=False)
        except (ConfigAttributeError, ConfigKeyError):
            return None
        if child is None:
            return None
        node = child
    return node if isinstance(node, Node) else None


def resolve_expr(*args: Any, _node_: Node, _parent_: Container, _root_: Container) -> float | int:
    """``${df.expr:EXPRESSION}``: arithmetic over the resolved values of other keys.

    A name is looked up beside the key first (``width`` for a sibling hyperparameter), then
    in each mapping around it out to the root (``hyperparameters.width``,
    ``optimizations.aggregation_frequency``); the first that has it gives its value.
    """
    key = str(_node_._get_full_key(None) or EXPR_RESOLVER_NAME)
    # OmegaConf splits the arguments at commas (``min(a, b)``): put the text back together.
    text = ",".join(a if isinstance(a, str) else repr(a) for a in args)
    shown = f"${{{EXPR_RESOLVER_NAME}:{text}}}"
    try:
        expression = parse_expression(text)
    except ExpressionError as exc:
        raise ConfigError(key, shown, f"{GRAMMAR}; refused {exc}") from None
    stack: list[str] = getattr(_resolving, "stack", None) or []
    _resolving.stack = stack
    read = bool(stack) and stack[-1] == key  # another df.expr is reading this key
    if key in stack and not read:
        chain = _chain(stack, key)
        raise ConfigError(key, shown, f"keys that do not depend on themselves: {chain}")

    def lookup(name: str) -> Any:
        found: Node | None = None
        scope: Any = _parent_
        while found is None and scope is not None:  # beside the key, then outwards
            found = _find(scope, name)
            scope = scope._get_parent()
        if found is None:
            raise ConfigError(key, shown, f"keys that exist: {name} is not a key")
        full = str(found._get_full_key(None))
        if full in stack:  # named from the key the cycle was entered at
            chain = _chain(stack, full)
            raw = found._value() if isinstance(found, ValueNode) else shown
            raise ConfigError(full, raw, f"keys that do not depend on themselves: {chain}")
        stack.append(full)
        try:
            return OmegaConf.select(_root_, full)
        finally:
            stack.pop()

    if not read:
        stack.append(key)
    try:
        return expression.evaluate(lookup)
    except ExpressionError as exc:
        raise ConfigError(key, shown, f"an expression that evaluates: {exc}") from None
    finally:
        if not read:
            stack.pop()


def register_resolvers() -> None:
    """Register detflow's resolvers once; safe to call again."""
    if not OmegaConf.has_resolver(RESOLVER_NAME):
        OmegaConf.register_new_resolver(RESOLVER_NAME, resolve_scale, use_cache=False)
    if not OmegaConf.has_resolver(EXPR_RESOLVER_NAME):
        OmegaConf.register_new_resolver(EXPR_RESOLVER_NAME, resolve_expr, use_cache=False)
