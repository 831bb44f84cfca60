"""OmegaConf resolvers detflow registers on import (``df.scale``)."""

from __future__ import annotations

from typing import Any

from omegaconf import Container, Node, OmegaConf

from detflow._core.errors import ConfigError
from detflow._core.scale import RESOLVER_NAME, ScaleRule, apply_rule, scale_factor

__all__ = ["register_resolvers", "resolve_scale"]


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


def register_resolvers() -> None:
    """Register detflow's resolvers once; safe to call again."""
    if not OmegaConf.has_resolver(RESOLVER_NAME):
        OmegaConf.register_new_resolver(RESOLVER_NAME, resolve_scale, use_cache=False)
