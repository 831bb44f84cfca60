"""Registration in Hydra's ConfigStore: experiments, and detflow's own root config."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from detflow._core.errors import ConfigError
from detflow._core.schema import ExperimentConfig

__all__ = ["ROOT_CONFIG_NAME", "register_experiment", "register_root_config", "root_schema"]

#: The primary config ``@detflow.main()`` composes when given no ``config_name``.
ROOT_CONFIG_NAME = "detflow_root"

#: The root's Hydra defaults: ``-m`` runs detflow's search, trials as local processes.
ROOT_DEFAULTS: tuple[Any, ...] = (
    "_self_",
    {"override hydra/sweeper": "detflow"},
    {"override hydra/launcher": "detflow_local"},
)

# (group, name) -> the ExperimentConfig subclass a registered dataclass experiment was made
# of, so detflow's root config knows that subclass's keys too (see root_schema).
_SCHEMAS: dict[tuple[str, str], type[ExperimentConfig]] = {}


def register_experiment(name: str, node: Any, *, group: str = "experiment") -> None:
    """Register an experiment (dataclass instance or dict) as ``+experiment=name``.

    Experiments are global packages: their keys sit at the config's top level, exactly as
    a YAML file ``conf/experiment/<name>.yaml`` with ``# @package _global_`` would. A
    dataclass is stored as its plain values, so it merges into any root config whose schema
    has the same keys (a subclass of the experiment's class, say); under
    ``@detflow.main()`` the root's schema is the experiment's own class. An experiment that
    does not set ``name`` is named ``name``.

    Examples
    --------
    >>> from detflow import ExperimentConfig
    >>> register_experiment("tiny", ExperimentConfig(name="tiny",
    ...     hyperparameters={"global_batch_size": 8}))
    >>> register_experiment("small", {"hyperparameters": {"global_batch_size": 8}})
    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import DictConfig

    _SCHEMAS.pop((group, name), None)
    if dataclasses.is_dataclass(node) and _made_by_hydra_zen(node):
        node = _plain_values(node)  # checked against the root's schema, as a dict is
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        unnamed = isinstance(node, ExperimentConfig) and node.name == ExperimentConfig.name
        if isinstance(node, ExperimentConfig):
            _SCHEMAS[(group, name)] = type(node)
        node = dataclasses.asdict(node)  # its values; the root config's schema checks them
        if unnamed:  # the schema's default name: not set
            node["name"] = name
    elif isinstance(node, Mapping) and not isinstance(node, DictConfig) and "name" not in node:
        node = {"name": name, **node}
    if isinstance(node, dict) and node.get("name") is None:
        node["name"] = name
    ConfigStore.instance().store(group=group, name=name, node=node, package="_global_")


#: Keys hydra-zen's ``builds`` adds for ``hydra.utils.instantiate``: not experiment keys,
#: dropped where the experiment's own keys are (kept inside ``hyperparameters``).
_INSTANTIATE_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_")


def _made_by_hydra_zen(node: Any) -> bool:
    """A dataclass type (``make_config`` / ``builds`` make types), or one made of
    ``builds(...)`` (its ``_target_``), rather than an instance of the user's own class."""
    return isinstance(node, type) or any(f.name == "_target_" for f in dataclasses.fields(node))


def _plain_values(node: Any) -> dict[str, Any]:
    """A hydra-zen config's values as plain containers, without the ``instantiate`` keys
    of ``builds`` outside ``hyperparameters``."""
    from omegaconf import OmegaConf

    values = OmegaConf.to_container(OmegaConf.structured(node), resolve=False)
    assert isinstance(values, dict)
    sections = [values, *(v for k, v in values.items() if k != "hyperparameters")]
    for section in sections:
        if isinstance(section, dict):
            for key in _INSTANTIATE_KEYS:
                section.pop(key, None)
    if values.get("name") == ExperimentConfig.name:  # the schema's default: not set
        values["name"] = None  # filled in below with the registered name
    return {str(k): v for k, v in values.items()}


def root_schema() -> type[ExperimentConfig]:
    """The schema of detflow's root config: :class:`ExperimentConfig`, or the subclass the
    registered dataclass experiments are made of (the most derived, when one derives from
    all the others).
    """
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo
    classes: list[type[ExperimentConfig]] = []
    for (group, name), cls in _SCHEMAS.items():
        folder: Any = repo
        for part in group.split("/"):
            folder = folder.get(part, {}) if isinstance(folder, dict) else {}
        if f"{name}.yaml" in folder and cls not in classes:
            classes.append(cls)
    if not classes:
        return ExperimentConfig
    for candidate in classes:
        if all(issubclass(candidate, other) for other in classes):
            return candidate
    names = ", ".join(sorted(c.__qualname__ for c in classes))
    raise ConfigError(
        "register_experiment",
        names,
        "experiments of one config class (or of classes that derive one from another): "
        "give @detflow.main() a config_name whose schema has every key",
    )


def register_root_config(name: str = ROOT_CONFIG_NAME) -> str:
    """Store detflow's root config as ``name``: the schema (:func:`root_schema`) with
    ``hydra/sweeper: detflow`` and ``hydra/launcher: detflow_local`` as defaults for ``-m``.

    Called by ``@detflow.main()`` just before Hydra composes, so it sees every experiment
    the script registered; returns ``name``.

    """
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf, open_dict

    node = OmegaConf.structured(root_schema())
    with open_dict(node):
        node.defaults = list(ROOT_DEFAULTS)
    ConfigStore.instance().store(name=name, node=node)
    return name
