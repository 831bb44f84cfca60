"""PyTorch Lightning under detflow: :func:`fit` trains a ``LightningModule`` for a run.

Imported only when used (``from detflow.lightning import fit``, extra ``lightning``); the
core of detflow never imports Lightning.

Lightning runs the batches; detflow's :class:`~detflow._harness.session.Session` (the loop
of ``run.fit`` and ``run.batches``) decides, from a callback, what is due at each batch:
the run's exact target (and an ASHA rung's), validations every ``min_validation_period``
(Lightning's validation loop, at the batches detflow names), checkpoints in detflow's
atomic store (Lightning's whole state: model, optimizers, schedulers, loops), resume,
stop requests (pre-emption, Ctrl-C) and the metrics: what the module logs with
``self.log`` during validation is what detflow reports (``val_loss`` stays ``val_loss``).
One Lightning epoch spans the run: detflow counts the data's epochs, and each epoch's order
is drawn from the experiment's seed and the epoch, so a resumed run trains on the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments.cluster_environment import ClusterEnvironment
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from detflow._core.artifacts import RunEnd
from detflow._core.errors import ConfigError, TrialError
from detflow._harness.metrics import Window
from detflow._harness.run import Run
from detflow._harness.schedule import Decision, Plan
from detflow._harness.session import FitResult, Restored, Session
from detflow._harness.trial import records_in

__all__ = ["DetflowEnvironment", "fit"]

#: Trainer arguments detflow sets from the experiment, with the key that decides each.
OWNED_TRAINER_ARGUMENTS: dict[str, str] = {
    "max_steps": "searcher.max_length",
    "max_epochs": "searcher.max_length",
    "min_steps": "searcher.max_length",
    "min_epochs": "searcher.max_length",
    "max_time": "searcher.max_length",
    "limit_train_batches": "searcher.max_length",
    "val_check_interval": "min_validation_period",
    "check_val_every_n_epoch": "min_validation_period",
    "num_sanity_val_steps": "perform_initial_validation",
    "accumulate_grad_batches": "optimizations.aggregation_frequency",
    "enable_checkpointing": "min_checkpoint_period",
    "devices": "resources.slots_per_trial",
    "num_nodes": "resources.slots_per_trial",
    "strategy": "resources.slots_per_trial",
}

#: The parts of Lightning's checkpoint that cannot be read back without running code
#: (``save_hyperparameters``' objects): the module rebuilds them from its own arguments.
_DROPPED_CHECKPOINT_KEYS = ("hyper_parameters", "hparams_name", "datamodule_hyper_parameters")

_RESUME_FILE = "lightning-resume{rank}.ckpt"


def fit(
    run: Run,
    module: pl.LightningModule,
    train_dataloaders: Iterable[Any],
    val_dataloaders: Any = None,
    **trainer_kwargs: Any,
) -> FitResult:
    """Train ``module`` for the run: ``searcher.max_length`` exactly (or the rung's target),
    validating every ``min_validation_period`` and at the end, checkpointing every
    ``min_checkpoint_period`` and at the end; continues from the last checkpoint when the
    run does (``resume=true``, an ASHA promotion, a requeued Slurm job).

    ``train_dataloaders`` is a ``DataLoader`` over a dataset with a length (its batch size
    should be ``run.per_slot_batch_size``; with several slots each takes its share), or any
    iterable of batches that gives the same batches each time it is iterated.
    ``trainer_kwargs`` go to ``lightning.pytorch.Trainer``, except those detflow sets
    (:data:`OWNED_TRAINER_ARGUMENTS`). Returns how training ended (``validation`` holds
    what the module logged in its last validation).

    Examples
    --------
    >>> import tempfile, torch, detflow
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> class Tiny(pl.LightningModule):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layer = torch.nn.Linear(2, 1)
    ...     def training_step(self, batch, batch_idx):
    ...         x, y = batch
    ...         return torch.nn.functional.mse_loss(self.layer(x), y)
    ...     def validation_step(self, batch, batch_idx):
    ...         x, y = batch
    ...         self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))
    ...     def configure_optimizers(self):
    ...         return torch.optim.SGD(self.parameters(), lr=0.1)
    >>> run = detflow.init({"hyperparameters": {"global_batch_size": 4},
    ...                     "searcher": {"max_length": "6 batches", "metric": "val_loss"},
    ...                     "min_validation_period": "3 batches"}, run_dir=tempfile.mkdtemp())
    >>> data = TensorDataset(torch.randn(16, 2), torch.randn(16, 1))
    >>> result = fit(run, Tiny(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4),
    ...              enable_progress_bar=False, enable_model_summary=False)
    >>> result.counters.batches, sorted(result.validation)
    (6, ['val_loss'])
    """
    for name, key in OWNED_TRAINER_ARGUMENTS.items():
        if name in trainer_kwargs:
            raise ConfigError(
                f"Trainer({name}=...)",
                trainer_kwargs[name],
                f"no value: detflow.lightning.fit sets it from the experiment's {key}",
            )
    data = _epoch_data(run, train_dataloaders)
    measure = run.experiment.records_per_epoch is None
    plan = run._plan(_epoch_length(data(0)) if measure else None)
    restored = run._load()
    driver = _Driver(run, plan, restored, data)
    with _without_srun_hint():
        trainer = pl.Trainer(**_trainer_arguments(run, plan, driver, trainer_kwargs))
    resume_file = _write_resume_file(run, restored)
    try:
        if _initial_validation_due(run, restored):
            with _without_srun_hint():
                driver.initial = _initial_validation(trainer, module, val_dataloaders)
        with _without_srun_hint():
            trainer.fit(
                module,
                train_dataloaders=_Batches(driver),
                val_dataloaders=val_dataloaders,
                ckpt_path=None if resume_file is None else str(resume_file),
            )
        session = driver.open_session()  # a run at its target already trains no batch
        _check_finished(session, driver)
    except BaseException:
        if driver.session is not None:
            driver.session.close(failing=True)
        raise
    finally:
        if resume_file is not None:
            resume_file.unlink(missing_ok=True)
    return session.finish(RunEnd.STOPPED if session.stopped else RunEnd.COMPLETED)


class DetflowEnvironment(ClusterEnvironment):
    """Lightning's view of a multi-slot trial's processes, from the environment detflow's
    launchers set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``): detflow starts the processes, Lightning joins them.

    >>> env = DetflowEnvironment({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
    ...                           "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "node1",
    ...                           "MASTER_PORT": "29500"})
    >>> env.global_rank(), env.local_rank(), env.node_rank(), env.main_address
    (3, 1, 1, 'node1')
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        env = os.environ if environ is None else environ
        self._rank = int(env.get("RANK", "0"))
        self._world_size = int(env.get("WORLD_SIZE", "1"))
        self._local_rank = int(env.get("LOCAL_RANK", "0"))
        self._local_world_size = int(env.get("LOCAL_WORLD_SIZE", str(self._world_size)))
        self._address = env.get("MASTER_ADDR", "127.0.0.1")
        self._port = int(env.get("MASTER_PORT", "29500"))

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self._address

    @property
    def main_port(self) -> int:
        return self._port

    @staticmethod
    def detect() -> bool:
        return "RANK" in os.environ and "WORLD_SIZE" in os.environ

    def world_size(self) -> int:
        return self._world_size

    def set_world_size(self, size: int) -> None:
        pass  # detflow's launcher decided it

    def global_rank(self) -> int:
        return self._rank

    def set_global_rank(self, rank: int) -> None:
        pass  # detflow's launcher decided it

    def local_rank(self) -> int:
        return self._local_rank

    def node_rank(self) -> int:
        return self._rank // max(1, self._local_world_size)

    @property
    def local_world_size(self) -> int:
        """Processes of the trial on this node."""
        return self._local_world_size


class _Driver(pl.Callback):
    """Drives the run's session from Lightning's hooks: counts each trained batch, makes
    the schedule's decisions, records validations, saves checkpoints, asks Lightning to stop
    at the target or on a stop request."""

    def __init__(
        self,
        run: Run,
        plan: Plan,
        restored: Restored,
        data: Callable[[int], Iterable[Any]],
    ) -> None:
        self.run = run
        self.plan = plan
        self.restored = restored
        self.data = data
        self.session: Session | None = None
        self.initial: Window | None = None  # perform_initial_validation's, before fit
        self.pending: Decision | None = None  # a decision waiting for its validation
        self.epoch_ends: set[int] = set()  # batch counts that ended an epoch of unknown length
        self._started = False  # the checkpoint's RNG is set (at the first batch)
        self._before_validation: dict[str, Any] = {}
        self._validation_started = 0.0

    def open_session(self) -> Session:
        """The run's session, opened once (after Lightning joined the processes)."""
        if self.session is None:
            run = self.run
            if run.world_size > 1 and run.collective is None:
                from detflow.pytorch import TorchCollective

                device = (
                    torch.device("cuda", torch.cuda.current_device())
                    if (torch.distributed.get_backend() == "nccl")
                    else torch.device("cpu")
                )
                run.collective = TorchCollective(device)
            session = Session(
                run.experiment,
                run.run_dir,
                run.max_length,
                self.plan,
                self.restored,
                store=run._store(),
                is_chief=run.is_chief,
                collective=run.collective,
                stop_now=run._stop_now,
            )
            self.session = session
            if self.initial is not None and session.initial_validation_due:
                session.start()
                self._started = True
                session.record_validation(self.initial, initial=True)
        return self.session

    # -- Lightning's hooks ------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.open_session().open_bar()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self._started:  # here, not earlier: Lightning's start draws no random number
            self._started = True
            self._session().start()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        session = self._session()
        self._check_no_pending()
        b = session.counters.batches + 1
        records = records_in(batch)
        session.add_training_metrics(_training_metrics(outputs, trainer, pl_module), records)
        stop = b % session.schedule.aggregation_frequency == 0 and session.stop_now()
        epoch_end = self._epoch_end(b)
        session.count(b, records, exhausted=b in self.epoch_ends, epoch_end=epoch_end)
        decision = session.decide(stop)
        if decision.report:
            session.report_training()
        if decision.stop or decision.at_target:
            trainer.should_stop = True  # Lightning validates once more, then stops
        if decision.validate:
            self.pending = decision  # Lightning validates at this batch (on_validation_end)
            return
        self._conclude(decision, trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._before_validation = dict(trainer.callback_metrics)
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        decision, self.pending = self.pending, None
        if decision is None or trainer.sanity_checking:
            return  # a validation detflow did not ask for (before a stop): not reported
        metrics = _logged_since(self._before_validation, trainer.callback_metrics)
        seconds = time.perf_counter() - self._validation_started
        self._session().record_validation(Window(None, None, seconds, metrics))
        self._conclude(decision, trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_no_pending()
        if self.session is not None:
            self.session.close_bar()

    def state_dict(self) -> dict[str, Any]:
        return {}  # detflow's own counters are in its checkpoint's state.json

    # -- internals --------------------------------------------------------------------------
    def _session(self) -> Session:
        assert self.session is not None, "on_train_start opens the session"
        return self.session

    def _epoch_end(self, batches: int) -> int | None:
        """The batch count at which the epoch holding ``batches`` ends, when known."""
        length = self.plan.epoch_length
        if length is None:
            return None
        return (batches - 1) // length * length + length

    def _conclude(self, decision: Decision, trainer: pl.Trainer) -> None:
        """The checkpoint and stop of a decision, its validation (if due) recorded."""
        session = self._session()
        if decision.checkpoint:
            state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            for key in _DROPPED_CHECKPOINT_KEYS:
                state.pop(key, None)
            session.save_checkpoint({"lightning": state})
        if decision.stop:
            session.stop_here()

    def _check_no_pending(self) -> None:
        if self.pending is not None:
            batches = self._session().counters.batches
            raise TrialError(
                f"a validation was due at batch {batches} and Lightning ran none: give "
                "detflow.lightning.fit val_dataloaders, or define the module's "
                "val_dataloader() and validation_step()"
            )


class _Batches:
    """The training data Lightning iterates: every epoch's batches up to the run's target,
    without those a resume trained already (Lightning's one epoch spans the run)."""

    def __init__(self, driver: _Driver) -> None:
        self.driver = driver

    def __iter__(self) -> Iterator[Any]:
        driver = self.driver
        session = driver.open_session()
        counters, target = session.counters, session.plan.target
        # Lightning fetches a batch ahead of the one it trains: count here, not counters
        yielded, epoch, skip = counters.batches, counters.epochs, counters.batch_in_epoch
        while yielded < target:
            started = yielded
            batches = iter(driver.data(epoch))
            if skip:
                skipped = sum(1 for _ in islice(batches, skip))
                if skipped < skip:
                    raise TrialError(
                        f"the training data of epoch {epoch} has {skipped} batches, fewer than "
                        f"the {skip} the checkpoint trained of it: it changed since"
                    )
                started, skip = yielded - skipped, 0
            for batch in batches:
                yielded += 1
                yield batch
                if yielded >= target or yielded - started == driver.plan.epoch_length:
                    break
            else:
                if yielded == started:
                    raise TrialError(
                        f"the training data yielded no batches in epoch {epoch}: give "
                        "detflow.lightning.fit a DataLoader or data it can iterate again"
                    )
                driver.epoch_ends.add(yielded)
            epoch += 1


@contextlib.contextmanager
def _without_srun_hint() -> Iterator[None]:
    """Without Lightning's hint to start processes with ``srun``: detflow starts them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`srun` command is available")
        yield


def _epoch_data(run: Run, loader: Iterable[Any]) -> Callable[[int], Iterable[Any]]:
    """Each epoch's batches: a ``DataLoader``'s in an order drawn from the seed and the
    epoch (this slot's share with several slots), any other iterable as it is."""
    if not isinstance(loader, DataLoader):
        return lambda epoch: loader
    dataset = loader.dataset
    if not hasattr(dataset, "__len__") or loader.batch_size is None:
        raise ConfigError(
            "train_dataloaders",
            type(loader.batch_sampler).__name__,
            "a DataLoader with a batch_size over a dataset with a length (detflow draws "
            "each epoch's order from the seed), or an iterable giving the same batches each "
            "time",
        )
    shuffle = isinstance(loader.sampler, RandomSampler)
    seed = run.seed

    def epoch_loader(epoch: int) -> DataLoader[Any]:
        sampler: DistributedSampler[Any] = DistributedSampler(
            dataset,
            num_replicas=run.world_size,
            rank=run.rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=loader.drop_last,
        )
        sampler.set_epoch(epoch)
        # its own generator: iterating the loader draws nothing from torch's global RNG
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        return DataLoader(
            dataset,
            batch_size=loader.batch_size,
            sampler=sampler,
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
            generator=generator,
        )

    return epoch_loader


def _epoch_length(data: Iterable[Any]) -> int | None:
    try:
        return len(data)  # type: ignore[arg-type]
    except TypeError:
        return None


def _trainer_arguments(
    run: Run, plan: Plan, driver: _Driver, given: Mapping[str, Any]
) -> dict[str, Any]:
    """``Trainer``'s arguments: the user's, and those detflow sets from the experiment."""
    callbacks = list(given.get("callbacks") or [])
    arguments: dict[str, Any] = {
        "logger": False,  # detflow writes metrics.jsonl and TensorBoard's files itself
        "default_root_dir": str(run.run_dir),
        "enable_progress_bar": False,  # detflow's bar and log lines
        **given,
        "callbacks": [*callbacks, driver],
        "max_epochs": 1,  # one Lightning epoch spans the run; its data ends at the target
        "max_steps": -1,
        "val_check_interval": plan.validate_every,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
        "accumulate_grad_batches": run.aggregation_frequency,
        "enable_checkpointing": False,  # detflow's store holds Lightning's checkpoints
        "use_distributed_sampler": True,  # validation: each slot its share
    }
    if run.world_size > 1:
        environment = DetflowEnvironment()
        local = environment.local_world_size
        arguments.update(
            devices=local,
            num_nodes=run.world_size // local,
            strategy=DDPStrategy(cluster_environment=environment),
        )
    else:
        plugins = list(given.get("plugins") or [])
        if not any(isinstance(p, ClusterEnvironment) for p in plugins):
            plugins.append(DetflowEnvironment())  # not Lightning's guess (SLURM's, say)
        arguments.update(devices=1, plugins=plugins)
    return arguments


def _initial_validation_due(run: Run, restored: Restored) -> bool:
    return run.experiment.perform_initial_validation and restored.state is None


def _initial_validation(trainer: pl.Trainer, module: pl.LightningModule, data: Any) -> Window:
    """``perform_initial_validation``: Lightning's validation before the first batch."""
    before = dict(trainer.callback_metrics)
    trainer.validate(module, dataloaders=data, verbose=False)
    return Window(None, None, 0.0, _logged_since(before, trainer.callback_metrics))


def _write_resume_file(run: Run, restored: Restored) -> Path | None:
    """Lightning's state from the checkpoint, as the file ``Trainer.fit(ckpt_path=)`` reads."""
    state = restored.state
    if state is None:
        return None
    lightning_state = state.get("lightning")
    if not isinstance(lightning_state, dict):
        raise TrialError(
            f"the checkpoint at batch {restored.counters.batches} was not saved by "
            "detflow.lightning.fit (it holds no Lightning state): resume it the way it was "
            "trained, or start over in a new run directory"
        )
    path = run.run_dir / _RESUME_FILE.format(rank=f".{run.rank}" if run.rank else "")
    torch.save(lightning_state, path)
    return path


def _check_finished(session: Session, driver: _Driver) -> None:
    """Lightning returned: at the target or a requested stop, else say where it ended."""
    driver._check_no_pending()
    counters, target = session.counters, session.plan.target
    if not session.stopped and counters.batches < target:
        raise TrialError(
            f"Lightning's training ended at batch {counters.batches} of {target} (interrupted, "
            "or stopped by a callback): rerun with resume=true to continue from the last "
            "checkpoint"
        )


def _training_metrics(
    outputs: Any, trainer: pl.Trainer, module: pl.LightningModule
) -> dict[str, float]:
    """A trained batch's metrics: what ``training_step`` returned (its loss, and the other
    numbers of a returned dict), the loss as computed (Lightning divides the one it hands
    on by ``accumulate_grad_batches``)."""
    values = dict(outputs) if isinstance(outputs, Mapping) else {"loss": outputs}
    metrics: dict[str, float] = {}
    for name, value in values.items():
        number = _scalar(value)
        if number is not None:
            metrics[str(name)] = number
    if "loss" in metrics and module.automatic_optimization:
        metrics["loss"] *= trainer.accumulate_grad_batches
    return metrics


def _scalar(value: Any) -> float | None:
    """A number, or a one-element tensor's, else ``None``."""
    if isinstance(value, torch.Tensor):
        return float(value.detach()) if value.numel() == 1 else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _logged_since(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics logged (``self.log``) since ``before`` was taken."""
    metrics: dict[str, float] = {}
    for name, value in after.items():
        number = None if before.get(name) is value else _scalar(value)
        if number is not None:
            metrics[name] = number
    return metrics
