"""Compose a sweep's trial configs once: the defaults list per set of config-group choices,
each trial's plain values set on a copy.

Hydra's ``load_sweep_config`` composes every job from scratch (~45 ms: the config search
path, the defaults list, every config file loaded and merged), although the trials of a
sweep differ only in the values of a few keys. :class:`TrialComposer` does what it does in
two parts:

1. **once per set of structural overrides** (config-group choices such as
   ``+experiment=digits_mlp`` or ``hydra/launcher=basic``, ``@package`` overrides): the
   defaults list and the config composed from it, before any value override is applied;
2. **per trial**: a copy of that config, the trial's value overrides applied by Hydra's own
   ``_apply_overrides_to_config`` in their order, and the fields Hydra sets per job
   (``hydra.overrides.*``, ``hydra.job.override_dirname``, ``hydra.runtime.choices``, ...)
   set as Hydra sets them.

The result equals ``load_sweep_config``'s (tests compare both, key order included). A trial
whose overrides Hydra would read differently (a sweep, ``hydra.searchpath``, a group
override whose defaults list leaves other overrides than expected), or one whose overrides
fail (Hydra then reports the error, word for word), is composed by Hydra in full, as is
every trial under a Hydra release these internals were not read against
(:data:`~detflow._hydra.hydra_patch.CHECKED_HYDRA_VERSIONS`) or a config loader of another
kind. The Slurm launcher can use the same class on the node.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_loader import ConfigLoader
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from detflow._hydra.hydra_patch import CHECKED_HYDRA_VERSIONS

__all__ = ["ComposingConfigLoader", "TrialComposer", "compose_once", "hydra_is_checked"]


def hydra_is_checked() -> bool:
    """Whether the installed Hydra is a release whose composition this module was read
    against (else every trial is composed by Hydra in full).

    >>> hydra_is_checked()
    True
    """
    import hydra

    return ".".join(hydra.__version__.split(".")[:2]) in CHECKED_HYDRA_VERSIONS


@dataclass(frozen=True)
class _Base:
    """What a set of structural overrides composes to, before any value override."""

    config: DictConfig  # never handed out: each trial gets a copy
    choices: dict[str, Any]  # hydra.runtime.choices
    sources: list[Any]  # hydra.runtime.config_sources (ConfigSourceInfo)


@dataclass
class ComposeCounts:
    """How the trials were composed: derived from a base, or by Hydra in full."""

    derived: int = 0
    full: int = 0
    bases: int = 0
    why_full: list[str] = field(default_factory=list)  # the first reasons, for a test or a log


class TrialComposer:
    """A sweep's trial configs, each equal to ``config_loader.load_sweep_config(master,
    overrides)`` (see the module's docstring for how).

    Parameters
    ----------
    config_loader:
        The sweep's Hydra config loader (``hydra_context.config_loader``).
    master_config:
        The sweep's config (what Hydra hands the launcher's ``setup``).
    """

    def __init__(self, config_loader: ConfigLoader, master_config: DictConfig) -> None:
        self.config_loader = config_loader
        self.master_config = master_config
        self.counts = ComposeCounts()
        self._parser = OverridesParser.create()
        self._parsed: dict[str, Override] = {}
        self._bases: dict[tuple[str, ...], _Base | None] = {}  # None: compose in full
        self._repo: Any = None
        self._groups: dict[str, bool] = {}
        self._enabled = hydra_is_checked() and _is_hydras_loader(config_loader)

    # -- the public call ---------------------------------------------------------------------
    def load_sweep_config(self, master_config: DictConfig, overrides: list[str]) -> DictConfig:
        """``ConfigLoader.load_sweep_config``'s signature: the config of the job that
        ``overrides`` describe (``master_config`` must be this composer's)."""
        if master_config is not self.master_config:
            return self._full(master_config, overrides, "another master config")
        return self.compose(overrides)

    def compose(self, overrides: Sequence[str]) -> DictConfig:
        """The job's config, as Hydra's ``load_sweep_config`` composes it."""
        master = self.master_config
        lines = [*_hydra_overrides(master), *overrides]
        if not self._enabled:
            return self._full(master, list(overrides), "Hydra release or loader not checked")
        try:
            parsed = [self._parse(line) for line in lines]
            reason = _not_derivable(parsed)
            if reason is not None:
                return self._full(master, list(overrides), reason)
            structural = tuple(p.input_line or "" for p in parsed if self._is_group(p))
            if structural not in self._bases:
                self._bases[structural] = self._base(lines, parsed)
            base = self._bases[structural]
            if base is None:
                why = "the defaults list kept other overrides"
                return self._full(master, list(overrides), why)
            config = self._derive(base, parsed)
        except (HydraException, OmegaConfBaseException) as exc:
            # Hydra reports it: the same error, word for word, as without compose once.
            return self._full(master, list(overrides), f"{type(exc).__name__}")
        self.counts.derived += 1
        return config

    # -- internals -----------------------------------------------------------------------------
    def _full(self, master: DictConfig, overrides: list[str], why: str) -> DictConfig:
        self.counts.full += 1
        if len(self.counts.why_full) < 10:
            self.counts.why_full.append(why)
        return self.config_loader.load_sweep_config(master, overrides)

    def _parse(self, line: str) -> Override:
        """Hydra's parse of one override line (parsed once: trials repeat most lines)."""
        override = self._parsed.get(line)
        if override is None:
            (override,) = self._parser.parse_overrides([line])
            self._parsed[line] = override
        return override

    def _is_group(self, override: Override) -> bool:
        """Whether Hydra's defaults list takes ``override`` as a config-group choice (the
        test of ``hydra._internal.defaults_list.Overrides``, widened to any value)."""
        if override.package is not None:
            return True
        known = self._groups.get(override.key_or_group)
        if known is not None:
            return known
        if self._repo is None:  # the search path as Hydra sets it (the primary's own too)
            loader: Any = self.config_loader
            config_name = self.master_config.hydra.job.config_name
            self._repo = loader._parse_overrides_and_create_caching_repo(config_name, [])[1]
        known = bool(self._repo.group_exists(override.key_or_group))
        self._groups[override.key_or_group] = known
        return known

    def _base(self, lines: list[str], parsed: list[Override]) -> _Base | None:
        """Hydra's composition up to its value overrides (``_load_configuration_impl``)."""
        from hydra._internal.defaults_list import create_defaults_list
        from hydra.types import RunMode

        loader: Any = self.config_loader
        config_name = self.master_config.hydra.job.config_name
        loader.ensure_main_config_source_available()
        fresh, caching_repo = loader._parse_overrides_and_create_caching_repo(config_name, lines)
        loader.validate_sweep_overrides_legal(
            overrides=fresh, run_mode=RunMode.RUN, from_shell=True
        )
        defaults_list = create_defaults_list(
            repo=caching_repo,
            config_name=config_name,
            overrides_list=fresh,
            prepend_hydra=True,
            skip_missing=False,
        )
        kept = [o.input_line for o in defaults_list.config_overrides]
        if kept != [p.input_line for p in parsed if not self._is_group(p)]:
            return None  # Hydra reads these overrides otherwise than this module would
        config = loader._compose_config_from_defaults_list(
            defaults=defaults_list.defaults, repo=caching_repo
        )
        OmegaConf.set_struct(config, True)
        OmegaConf.set_readonly(config.hydra, False)
        self.counts.bases += 1
        return _Base(
            config,
            dict(defaults_list.overrides.known_choices),
            list(caching_repo.get_sources()),
        )

    def _derive(self, base: _Base, parsed: list[Override]) -> DictConfig:
        """A copy of ``base`` with the value overrides applied, then what Hydra sets per job
        (the rest of ``_load_configuration_impl``, and ``load_sweep_config``'s cache copy)."""
        from hydra import __version__, version
        from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
        from hydra.conf import ConfigSourceInfo
        from hydra.core.utils import JobRuntime

        config = copy.deepcopy(base.config)
        values = [p for p in parsed if not self._is_group(p)]
        ConfigLoaderImpl._apply_overrides_to_config(values, config)
        app_overrides = [o for o in parsed if not o.is_hydra_override()]
        listed = config.hydra.overrides  # Hydra appends each line: one assignment is faster
        listed.hydra = [*listed.hydra, *(o.input_line for o in parsed if o.is_hydra_override())]
        listed.task = [*listed.task, *(o.input_line for o in app_overrides)]
        with open_dict(config.hydra):
            config.hydra.runtime.choices.update(base.choices)
            for key in config.hydra.job.env_copy:
                config.hydra.job.env_set[key] = os.environ[key]
        config.hydra.runtime.version = __version__
        config.hydra.runtime.version_base = version.getbase()
        config.hydra.runtime.cwd = os.getcwd()
        config.hydra.runtime.config_sources = [
            ConfigSourceInfo(path=x.path, schema=x.scheme(), provider=x.provider)
            for x in base.sources
        ]
        if "name" not in config.hydra.job:
            config.hydra.job.name = JobRuntime().get("name")
        dirname = config.hydra.job.config.override_dirname
        config.hydra.job.override_dirname = get_overrides_dirname(
            overrides=app_overrides,
            kv_sep=dirname.kv_sep,
            item_sep=dirname.item_sep,
            exclude_keys=dirname.exclude_keys,
        )
        config.hydra.job.config_name = self.master_config.hydra.job.config_name
        OmegaConf.copy_cache(from_config=self.master_config, to_config=config)
        return config


def _hydra_overrides(master: DictConfig) -> list[str]:
    lines = OmegaConf.to_container(master.hydra.overrides.hydra)
    assert isinstance(lines, list)
    return [str(line) for line in lines]


def _not_derivable(parsed: list[Override]) -> str | None:
    """Why these overrides must go through Hydra's whole composition (``None``: they need
    not): a sweep, or a change of the config search path."""
    for override in parsed:
        if override.is_sweep_override():
            return f"a sweep override: {override.input_line}"
        if override.key_or_group.split(".")[:2] == ["hydra", "searchpath"]:
            return f"a search path override: {override.input_line}"
    return None


def _is_hydras_loader(loader: ConfigLoader) -> bool:
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    return type(loader) is ConfigLoaderImpl


class ComposingConfigLoader(ConfigLoader):
    """A Hydra config loader whose ``load_sweep_config`` derives each job's config
    (:class:`TrialComposer`); every other call goes to the loader it wraps."""

    def __init__(self, loader: ConfigLoader, master_config: DictConfig) -> None:
        self.loader = loader
        self.composer = TrialComposer(loader, master_config)

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        return self.composer.load_sweep_config(master_config, sweep_overrides)

    def load_configuration(
        self,
        config_name: str | None,
        overrides: list[str],
        run_mode: Any,
        from_shell: bool = True,
        validate_sweep_overrides: bool = True,
    ) -> DictConfig:
        return self.loader.load_configuration(
            config_name, overrides, run_mode, from_shell, validate_sweep_overrides
        )

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> list[str]:
        return self.loader.list_groups(parent_name)

    def get_group_options(
        self,
        group_name: str,
        results_filter: Any = None,
        config_name: str | None = None,
        overrides: list[str] | None = None,
    ) -> list[str]:
        from hydra.core.object_type import ObjectType

        return self.loader.get_group_options(
            group_name, results_filter or ObjectType.CONFIG, config_name, overrides
        )

    def compute_defaults_list(
        self, config_name: str | None, overrides: list[str], run_mode: Any
    ) -> Any:
        return self.loader.compute_defaults_list(config_name, overrides, run_mode)


def compose_once(launcher: Any) -> TrialComposer | None:
    """Make Hydra's in-process launcher (``hydra/launcher=basic``) derive its jobs' configs
    instead of composing each in full; the composer it now uses, or ``None`` for a launcher
    of another kind (left as it is: it may pickle its context elsewhere).

    Call it after the launcher's ``setup``.
    """
    kind = type(launcher)
    is_basic = (kind.__module__, kind.__name__) == (
        "hydra._internal.core_plugins.basic_launcher",
        "BasicLauncher",
    )
    context = getattr(launcher, "hydra_context", None)
    master = getattr(launcher, "config", None)
    if not is_basic or context is None or not isinstance(master, DictConfig):
        return None
    if isinstance(context.config_loader, ComposingConfigLoader):
        return context.config_loader.composer
    loader = ComposingConfigLoader(context.config_loader, master)
    launcher.hydra_context = dataclasses.replace(context, config_loader=loader)
    return loader.composer
