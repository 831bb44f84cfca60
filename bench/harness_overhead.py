"""Per-batch overhead of detflow's training harness against a raw Python loop.

Run from the repository root::

    python -m bench.harness_overhead            # 1,000,000 batches, 5 repeats
    python -m bench.harness_overhead --batches 200000 --repeats 3

A :class:`detflow.Trial` whose ``train_batch`` does nothing (it returns one preallocated
``{"loss": 0.0}``) is trained with ``detflow.init(...)`` + ``run.fit(trial)`` for exactly
``--batches`` batches, validating and checkpointing only once, at the end. The baseline is a
plain ``for`` loop over the same data that calls the same ``train_batch`` and reads
``float(metrics["loss"])`` per batch, which any training loop must do. Both are timed in the
same process, interleaved, with :func:`time.perf_counter_ns`; the difference per batch is the
harness's overhead (target: at most 1 µs per batch).

PyTorch Lightning's ``Trainer.fit`` (``lightning``, in the ``bench`` extra) is timed on an
equivalent no-op ``LightningModule``, with all it can turn off turned off (progress bar,
logger, checkpointing, model summary, sanity check, validation), at two lengths: the
difference per batch is its loop's cost without its start-up (target: detflow's overhead at
most 1/10 of Lightning's).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import detflow
from bench._common import machine

TARGET_NS = 1000.0
#: detflow's overhead per batch is at most 1/LIGHTNING_RATIO of Lightning's
LIGHTNING_RATIO = 10.0
HYDRA_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


class NoOpTrial(detflow.Trial):
    """A trial whose every step is as cheap as Python allows: it measures the harness alone."""

    def __init__(self, epoch_batches: int) -> None:
        self._data: list[int] = [1] * epoch_batches
        self._validation: list[int] = [1]
        self._metrics: dict[str, float] = {"loss": 0.0}
        self._state: dict[str, Any] = {"w": 0}

    def training_data(self, epoch: int) -> list[int]:
        return self._data

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        return self._metrics

    def batch_size(self, batch: Any) -> int:
        return 1

    def validation_data(self) -> list[int]:
        return self._validation

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        return self._metrics

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._state = dict(state)


class DefaultSizeTrial(NoOpTrial):
    """:class:`NoOpTrial` with ``[1]`` batches counted by :meth:`detflow.Trial.batch_size`."""

    def __init__(self, epoch_batches: int) -> None:
        super().__init__(epoch_batches)
        self._batches: list[list[int]] = [[1]] * epoch_batches

    def training_data(self, epoch: int) -> list[Any]:
        return self._batches

    def validation_data(self) -> list[Any]:
        return self._batches[:1]

    batch_size = detflow.Trial.batch_size


def raw_loop(trial: NoOpTrial, batches: int) -> float:
    """The baseline: the same data, the same ``train_batch``, the loss read per batch."""
    train_batch = trial.train_batch
    epoch_batches = trial.epoch_length() or batches
    loss = 0.0
    done = 0
    epoch = 0
    while done < batches:
        data = trial.training_data(epoch)
        if batches - done < epoch_batches:
            data = data[: batches - done]
        for batch in data:
            metrics = train_batch(batch)
            loss = float(metrics["loss"])
        done += len(data)
        epoch += 1
    return loss


def config(batches: int, scheduling_unit: int | None) -> dict[str, Any]:
    """A plain-dict experiment: train ``batches`` batches, validate and checkpoint at the end."""
    length = f"{batches} batches"
    cfg: dict[str, Any] = {
        "name": "harness_overhead",
        "hyperparameters": {"global_batch_size": 1},
        "searcher": {"max_length": length},
        "min_validation_period": length,
        "min_checkpoint_period": length,
    }
    if scheduling_unit is not None:
        cfg["scheduling_unit"] = scheduling_unit
    return cfg


def time_fit(trial: NoOpTrial, batches: int, scheduling_unit: int | None) -> int:
    """Nanoseconds of one ``run.fit(trial)`` (``detflow.init`` and cleanup not timed)."""
    with tempfile.TemporaryDirectory(prefix="detflow-bench-") as run_dir:
        run = detflow.init(config(batches, scheduling_unit), run_dir=run_dir)
        gc.collect()
        start = time.perf_counter_ns()
        result = run.fit(trial)
        elapsed = time.perf_counter_ns() - start
    if result.counters.batches != batches:
        raise RuntimeError(f"fit trained {result.counters.batches} batches, not {batches}")
    return elapsed


def time_raw(trial: NoOpTrial, batches: int) -> int:
    """Nanoseconds of one :func:`raw_loop`."""
    gc.collect()
    start = time.perf_counter_ns()
    raw_loop(trial, batches)
    return time.perf_counter_ns() - start


@contextmanager
def detflow_logging(level: int) -> Iterator[None]:
    """Route the ``detflow`` logger to a formatting handler that writes to ``os.devnull``.

    At ``INFO`` every report line is formatted (as Hydra's default job logging would) and
    written to the null device; at ``WARNING`` the report lines are dropped before formatting.
    """
    logger = logging.getLogger("detflow")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter(HYDRA_LOG_FORMAT))
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(level)
        try:
            yield
        finally:
            logger.setLevel(saved[0])
            logger.propagate = saved[1]
            logger.handlers = saved[2]


@dataclass(frozen=True)
class Variant:
    """One harness configuration to time."""

    label: str
    level: int
    scheduling_unit: int | None
    default_batch_size: bool = False


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one loop, per batch."""

    label: str
    runs_ns: tuple[int, ...]
    batches: int

    @property
    def best(self) -> float:
        return min(self.runs_ns) / self.batches

    @property
    def median(self) -> float:
        return statistics.median(self.runs_ns) / self.batches


def measure(
    trial: NoOpTrial, batches: int, repeats: int, variants: list[Variant]
) -> tuple[Timing, list[Timing]]:
    """Time the raw loop and every variant ``repeats`` times, interleaved round by round."""
    raw_runs: list[int] = []
    harness_runs: dict[str, list[int]] = {v.label: [] for v in variants}
    # One untimed round first: imports, code paths and allocator warmed for both loops.
    default_size = DefaultSizeTrial(trial.epoch_length() or batches)
    trials = {v.label: default_size if v.default_batch_size else trial for v in variants}
    time_raw(trial, min(batches, 10_000))
    for variant in variants:
        with detflow_logging(variant.level):
            time_fit(trials[variant.label], min(batches, 10_000), variant.scheduling_unit)
    for _ in range(repeats):
        raw_runs.append(time_raw(trial, batches))
        for variant in variants:
            with detflow_logging(variant.level):
                harness_runs[variant.label].append(
                    time_fit(trials[variant.label], batches, variant.scheduling_unit)
                )
    raw = Timing("raw loop", tuple(raw_runs), batches)
    return raw, [Timing(v.label, tuple(harness_runs[v.label]), batches) for v in variants]


def startup_cost(trial: NoOpTrial, repeats: int) -> Timing:
    """``fit()`` for one batch: plan, one report, one validation, one checkpoint (fsync)."""
    with detflow_logging(logging.WARNING):
        runs = tuple(time_fit(trial, 1, None) for _ in range(repeats))
    return Timing("fit() of 1 batch", runs, 1)


@dataclass(frozen=True)
class LightningTiming:
    """Lightning's ``Trainer.fit`` on the no-op module: best runs at two lengths, and the
    cost of one more batch (their difference per batch: ``fit()``'s start-up drops out)."""

    label: str
    short: Timing
    long: Timing

    @property
    def per_batch(self) -> float:
        """Nanoseconds of one batch of Lightning's loop, its fixed start-up left out."""
        extra = self.long.batches - self.short.batches
        return (min(self.long.runs_ns) - min(self.short.runs_ns)) / extra


def lightning_timing(batches: int, epoch_batches: int, repeats: int) -> LightningTiming | str:
    """PyTorch Lightning's ``Trainer.fit`` on a no-op module, or why it was skipped.

    The module does what :class:`NoOpTrial` does: nothing (manual optimization, no backward,
    no optimizer); the data is the same list of ints. Everything Lightning can turn off is
    off, so that its loop alone is timed, as detflow's is: no progress bar, no logger, no
    checkpointing, no model summary, no sanity check, no validation. Runs of ``batches`` and
    of a tenth of it, interleaved; the difference per batch is its per-batch cost.
    """
    pl: Any = None
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            pl = importlib.import_module(name)
            break
        except ImportError:
            continue
    if pl is None:
        return "lightning is not installed: skipped (pip install -e '.[bench]' to compare)"

    class NoOpModule(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False  # no backward, no optimizer step

        def training_step(self, batch: Any, batch_idx: int) -> None:
            return None

        def configure_optimizers(self) -> None:
            return None

    data = [1] * epoch_batches

    def once(epochs: int) -> int:
        with tempfile.TemporaryDirectory(prefix="lightning-bench-") as root:
            trainer = pl.Trainer(
                accelerator="cpu",
                devices=1,
                max_epochs=epochs,
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                num_sanity_val_steps=0,
                limit_val_batches=0,
                default_root_dir=root,
            )
            module = NoOpModule()
            gc.collect()
            start = time.perf_counter_ns()
            trainer.fit(module, train_dataloaders=data)
            return time.perf_counter_ns() - start

    long_epochs = max(2, batches // epoch_batches)
    short_epochs = max(1, long_epochs // 10)
    quiet = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "pytorch_lightning")]
    saved = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.ERROR)
    short: list[int] = []
    long: list[int] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            once(1)  # imports and first-use costs, untimed
            for _ in range(repeats):
                short.append(once(short_epochs))
                long.append(once(long_epochs))
    except Exception as exc:  # an old or new Lightning that rejects this setup
        return f"Lightning {pl.__version__} Trainer.fit failed ({exc!r}): skipped"
    finally:
        for logger, level in zip(quiet, saved, strict=True):
            logger.setLevel(level)
    return LightningTiming(
        f"Lightning {pl.__version__} Trainer.fit",
        Timing("short", tuple(short), short_epochs * epoch_batches),
        Timing("long", tuple(long), long_epochs * epoch_batches),
    )


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def render(raw: Timing, harness: list[Timing]) -> list[str]:
    """The table: per-batch times (best / median of the runs), overhead, ratio, verdict.

    The verdict and the ratio use the best run of each loop: on a shared machine the
    slower runs measure the neighbours as much as the harness.
    """
    header = [
        "loop",
        "best ns/b",
        "median ns/b",
        "overhead best",
        "overhead median",
        "ratio (best)",
        f"target <= {TARGET_NS:.0f} ns (best)",
    ]
    rows = [[raw.label, f"{raw.best:.1f}", f"{raw.median:.1f}", "-", "-", "1.00x", "-"]]
    for timing in harness:
        over_best = timing.best - raw.best
        over_median = timing.median - raw.median
        rows.append(
            [
                timing.label,
                f"{timing.best:.1f}",
                f"{timing.median:.1f}",
                f"{over_best:.1f}",
                f"{over_median:.1f}",
                f"{timing.best / raw.best:.2f}x",
                "PASS" if over_best <= TARGET_NS else "FAIL",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths), _row(["-" * w for w in widths], widths)]
    lines += [_row(r, widths) for r in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=1_000_000, help="batches per timed run")
    parser.add_argument("--epoch-batches", type=int, default=1000, help="batches in one epoch")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each loop")
    parser.add_argument(
        "--lightning-batches", type=int, default=20_000, help="batches per Lightning run"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.epoch_batches < 1 or args.repeats < 1:
        parser.error("--batches, --epoch-batches and --repeats must be positive")

    trial = NoOpTrial(args.epoch_batches)
    print(f"machine: {machine()}")
    print(
        f"workload: {args.batches:,} no-op batches, {args.epoch_batches:,} per epoch; "
        f"validation and checkpoint once, at the end; {args.repeats} runs of each, interleaved"
    )
    progress = "rich bar (stderr is a TTY)" if sys.stderr.isatty() else "none (stderr not a TTY)"
    print(f"progress bar during fit(): {progress}")
    print()

    variants = [
        Variant("detflow, INFO logging, scheduling_unit=100", logging.INFO, None),
        Variant("detflow, WARNING (quiet), scheduling_unit=100", logging.WARNING, None),
        Variant("detflow, WARNING (quiet), one report at end", logging.WARNING, args.batches),
        Variant("detflow, INFO, Trial's default batch_size()", logging.INFO, None, True),
    ]
    raw, harness = measure(trial, args.batches, args.repeats, variants)
    for line in render(raw, harness):
        print(line)
    print()
    print(
        "INFO: the report lines (every scheduling_unit batches) are formatted with Hydra's "
        "log format and written to os.devnull; WARNING: they are dropped unformatted. "
        "metrics.jsonl is written in every variant."
    )
    print(
        "The trial overrides batch_size() to return 1, except in the last row: there its "
        "batches are [1] lists sized by detflow.Trial.batch_size()."
    )
    print("overhead = harness - raw loop, per batch; fit() time includes its fixed cost below.")

    start = startup_cost(trial, args.repeats)
    print(
        f"fixed cost of fit() (1 batch: plan, report, validation, checkpoint with fsync): "
        f"best {start.best / 1e3:.0f} µs, median {start.median / 1e3:.0f} µs"
    )

    lightning = lightning_timing(
        min(args.lightning_batches, args.batches), args.epoch_batches, args.repeats
    )
    if isinstance(lightning, str):
        print(lightning)
    else:
        over = lightning.per_batch - raw.best
        mine = harness[0].best - raw.best
        print(
            f"{lightning.label} (no-op manual-optimization module; no progress bar, logger, "
            f"checkpointing, model summary or validation): {lightning.per_batch:.0f} ns/batch "
            f"(best runs of {lightning.long.batches:,} less {lightning.short.batches:,} batches, "
            f"its fit() start-up left out), overhead {over:.0f} ns/batch; detflow's "
            f"({harness[0].label}) is {mine / over:.4f} of it (target <= {1 / LIGHTNING_RATIO:g})"
        )

    headline = harness[0]
    overhead = headline.best - raw.best
    verdict = "PASS" if overhead <= TARGET_NS else "FAIL"
    print(
        f"\n{verdict}: detflow overhead {overhead:.0f} ns/batch (best of {args.repeats}; median "
        f"{headline.median - raw.median:.0f}) with {headline.label}; "
        f"target {TARGET_NS:.0f} ns/batch"
    )
    return 1 if args.strict and verdict == "FAIL" else 0


if __name__ == "__main__":
    raise SystemExit(main())
