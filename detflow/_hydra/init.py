"""``detflow.init()`` and ``detflow.main()``: the entry points a training script calls."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from detflow._core.artifacts import HPARAMS_FILE, TARGET_LENGTH_ENV
from detflow._core.errors import ConfigError, DetflowError, TrialError
from detflow._core.files import DirectoryLock, write_atomic
from detflow._core.units import parse_target
from detflow._harness import preemption
from detflow._harness.run import Run
from detflow._hydra.config import load_config
from detflow._hydra.grammar import override_error
from detflow._hydra.hydra_patch import (
    keeping_run_dir_on_config_error,
    reporting_errors_in_one_line,
)
from detflow._hydra.store import ROOT_CONFIG_NAME, register_root_config

__all__ = ["init", "main"]

log = logging.getLogger("detflow")
_T = TypeVar("_T")


def init(
    cfg: Any, hparams: Mapping[str, Any] | None = None, *, run_dir: str | Path | None = None
) -> Run:
    """Merge the hyperparameters once, validate the config, seed every RNG, write
    ``hparams.json``; return the :class:`Run` whose :meth:`~Run.fit` trains a trial.

    The same call works in a single run, a sweep trial and a Slurm job.

    Examples
    --------
    >>> import tempfile
    >>> run = init({"hyperparameters": {"global_batch_size": 32, "base_batch_size": 32,
    ...                                 "lr": "${df.scale:0.1,linear}"}},
    ...            hparams={"global_batch_size": 64}, run_dir=tempfile.mkdtemp())
    >>> run.hparams["lr"]
    0.2
    """
    loaded = load_config(cfg, hparams)
    for notice in loaded.experiment.notices:
        log.info(notice)
    for replaced in loaded.merged.replaced:
        log.warning(str(replaced))
    directory = Path(run_dir) if run_dir is not None else _hydra_output_dir() or Path.cwd()
    directory.mkdir(parents=True, exist_ok=True)
    rank = int(os.environ.get("RANK", "0"))
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    slots = loaded.experiment.slots_per_trial
    if world_size != slots:  # each process would take 1/slots of a batch: the wrong total
        raise ConfigError(
            "resources.slots_per_trial",
            slots,
            f"the trial's process count, {world_size} (WORLD_SIZE)",
        )
    _seed_everything(loaded.experiment.seed)
    target = os.environ.get(TARGET_LENGTH_ENV)
    max_length = parse_target(target, TARGET_LENGTH_ENV) if target else None
    run = Run(loaded.experiment, directory, max_length=max_length, rank=rank, world_size=world_size)
    if run.is_chief:
        _hold_lock(directory)
        payload = {key: record.to_json() for key, record in loaded.hparams.items()}
        _write_if_changed(directory / HPARAMS_FILE, json.dumps(payload, indent=2) + "\n")
    return run


#: The locks of this process's run directories, held until it exits.
_LOCKS: dict[Path, DirectoryLock] = {}


def _hold_lock(directory: Path) -> None:
    """Lock the run directory for this process's lifetime; refuse a second run on it."""
    key = directory.resolve()
    if key in _LOCKS:  # init() again in the same process (a notebook, a test): its own lock
        return
    lock = DirectoryLock.acquire(directory)
    if lock is None:
        raise ConfigError(
            "hydra.run.dir",
            str(directory),
            "a run directory no other run uses: another run holds it now (wait for it to end)",
        )
    _LOCKS[key] = lock


def _write_if_changed(path: Path, text: str) -> None:
    """Write ``path`` atomically, unless it holds ``text`` already (a resume leaves it be)."""
    try:
        if path.read_text() == text:
            return
    except (OSError, UnicodeDecodeError):
        pass
    write_atomic(path, text.encode())


def _hydra_output_dir() -> Path | None:
    if "hydra" not in sys.modules:
        return None
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def _in_multirun() -> bool:
    """Whether this task is one job of a sweep (its failure is recorded, not fatal)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _seed_everything(seed: int) -> None:
    """Seed Python's RNG, and NumPy's and torch's when they are already imported.

    A library imported after :func:`init` is not seeded here: seed it where the model is
    built (``torch.manual_seed(run.seed)``), as ``trials/digits.py`` does.
    """
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def main(
    config_path: str | None = None, config_name: str | None = None, version_base: str | None = "1.3"
) -> Callable[[Callable[[Any], _T]], Callable[[], _T | None]]:
    """``hydra.main`` that reports a config error or a failed trial in one line.

    With no ``config_name`` the primary config is detflow's own root config: the schema
    (:class:`ExperimentConfig`, or the subclass the script's registered experiments are made
    of) with ``hydra/sweeper: detflow`` and ``hydra/launcher: detflow_local`` as defaults for
    ``-m``; so a script that registers its experiments needs no config of its own.
    ``config_path`` (a directory of YAML, e.g. ``experiment/*.yaml``) may be given with it;
    ``config_name`` names a primary config of the project's own, as in ``hydra.main``.

    A :class:`ConfigError` raised by the task prints ``Error: <message>`` to stderr and
    exits with status 2; a :class:`TrialError` logs ``trial failed: <message>`` and exits
    with status 1; no traceback unless ``HYDRA_FULL_ERROR=1``.

    Examples
    --------
    In ``train.py``, run as ``python train.py +experiment=NAME``::

        detflow.register_experiment("NAME", {"hyperparameters": {"global_batch_size": 32}})

        @detflow.main()
        def train(cfg):
            run = detflow.init(cfg)
            run.fit(MyTrial(run))
    """
    import hydra

    def decorate(task: Callable[[Any], _T]) -> Callable[[], _T | None]:
        @functools.wraps(task)
        def guarded(cfg: Any) -> _T:
            try:
                return task(cfg) if _in_multirun() else _single_run(task, cfg)
            except DetflowError as exc:
                if os.environ.get("HYDRA_FULL_ERROR") == "1" or _in_multirun():
                    raise
                if isinstance(exc, TrialError):
                    log.error("trial failed: %s", exc)
                else:
                    print(f"Error: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(exc.exit_code) from None

        composed: Callable[[], _T | None] = hydra.main(
            config_path=config_path,
            config_name=ROOT_CONFIG_NAME if config_name is None else config_name,
            version_base=version_base,
        )(guarded)

        @functools.wraps(composed)
        def wrapped() -> _T | None:
            if config_name is None:
                try:  # now, so that it knows every experiment the script registered
                    register_root_config()
                except DetflowError as exc:
                    if os.environ.get("HYDRA_FULL_ERROR") == "1":
                        raise
                    print(f"Error: {exc}", file=sys.stderr, flush=True)
                    raise SystemExit(exc.exit_code) from None
            with reporting_errors_in_one_line(_one_line_error), keeping_run_dir_on_config_error():
                try:
                    return composed()
                except KeyboardInterrupt:  # Ctrl-C before the run (or the search) began
                    if os.environ.get("HYDRA_FULL_ERROR") == "1":
                        raise
                    print(
                        "interrupted: stopped at once; rerun the same command to continue "
                        "from what was saved",
                        file=sys.stderr,
                        flush=True,
                    )
                    raise SystemExit(130) from None

        return wrapped

    return decorate


def _single_run(task: Callable[[Any], _T], cfg: Any) -> _T:
    """``task(cfg)`` with Ctrl-C as a stop request (:mod:`detflow._harness.preemption`): the
    first checkpoints at the next step and ends the run with one line and exit status 130; a
    second stops at once (the last checkpoint stands). Either line says how to continue."""
    again = f"hydra.run.dir={shlex.quote(str(_hydra_output_dir() or Path.cwd()))} resume=true"
    notice = "stopping: the run checkpoints at its next step (Ctrl-C again to stop at once)"
    try:
        with preemption.interrupt_requests_stop(notice):
            result = task(cfg)
    except KeyboardInterrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(
            f"interrupted: stopped at once; continue from the last checkpoint with the same "
            f"command and {again}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130) from None
    if preemption.interrupted() and preemption.stopped():
        print(
            f"interrupted: checkpoint saved; continue with the same command and {again}",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(130)
    return result


def _one_line_error(exc: BaseException) -> None:
    """Hydra's own errors about the command line (an override that does not parse, a value
    of the wrong type, an unknown key or config) as ``Error: <one line>``, exit status 2."""
    from hydra.errors import ConfigCompositionException, OverrideParseException

    if not isinstance(exc, (ConfigCompositionException, OverrideParseException)):
        return
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    reworded = override_error(sys.argv[1:]) if isinstance(exc, OverrideParseException) else None
    print(f"Error: {reworded or _one_line(exc)}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


_DETAIL_LINES = ("full_key:", "object_type=", "reference_type=")


def _one_line(exc: BaseException) -> str:
    r"""A Hydra error and the OmegaConf error behind it, in one line.

    Examples
    --------
    >>> from hydra.errors import ConfigCompositionException
    >>> _one_line(ConfigCompositionException(
    ...     "Could not override 'bogus'.\nTo append to your config use +bogus=1"))
    "Could not override 'bogus'. To append to your config use +bogus=1"
    >>> _one_line(ConfigCompositionException(
    ...     "Could not find 'experiment/x'\n\nAvailable options in 'experiment':\n\ta\n\tb"
    ...     "\nConfig search path:\n\tprovider=main"))
    "Could not find 'experiment/x'; Available options in 'experiment': a, b"
    """
    parts = [str(exc)]
    if exc.__cause__ is not None and str(exc.__cause__) not in parts[0]:
        parts.append(str(exc.__cause__))
    text = ""
    for part in parts:
        for line in part.splitlines():
            item = line.strip()
            if item == "Config search path:":
                break
            if not item or item.startswith(_DETAIL_LINES):
                continue
            if not text:
                text = re.sub(r"^Error merging override ", "cannot merge override ", item)
            elif line.startswith("\t") and text.endswith(":"):
                text += f" {item}"
            elif line.startswith("\t"):
                text += f", {item}"
            else:
                text += f" {item}" if text.endswith(".") else f"; {item}"
    return text or type(exc).__name__
