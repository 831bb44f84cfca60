"""The bad-input matrix: every wrong value, file or flag a user can give, through the real
entry points (``python train.py ...`` and ``python -m detflow._results.cli ...``) in subprocesses.

Each case must end with a non-zero exit status and ONE clear error line (``Error: ...`` from
``detflow.main`` and the sweeper, ``detflow COMMAND: error: ...`` from the ``detflow``
command) that names what is wrong and what is accepted; no traceback (unless
``HYDRA_FULL_ERROR=1``); nothing submitted to Slurm (``sbatch``/``srun``/``salloc`` on
``PATH`` are spies that leave a marker); no trial started for a bad search space or launcher
option; and no existing run or sweep file changed.

The cases run once per module, two at a time, and each parametrized test asserts on its
cached result.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tests.support import REPO, run_cli

Kind = Literal["run", "sweep", "cli"]
Base = Literal["run", "sweep"]

#: The one error line: ``detflow.main``'s and the sweeper's, or the ``detflow`` command's.
ERROR_LINE = re.compile(r"^(Error: |detflow(?: \w+)?: error: )")
#: What must never be printed without ``HYDRA_FULL_ERROR=1``.
FORBIDDEN = (
    "Traceback",
    "HYDRA_FULL_ERROR=1 for a complete stack trace",
    "Error in call to target",
    "Error executing job",
)
SPIES = ("sbatch", "srun", "salloc")
SPY_MARKER_ENV = "DETFLOW_TEST_SPY_MARKER"
#: The finished sweep every sweep case copies: a two-point grid of the quadratic trial.
SWEEP_ARGS = ("searcher.name=grid", "hyperparameters.dims=choice(2,4)")
SLURM = "hydra/launcher=detflow_slurm"
LOCAL = "hydra/launcher=detflow_local"


# -- corruptions of a copied run or sweep directory ------------------------------------------
def _latest_checkpoint(run: Path) -> Path:
    name = str(json.loads((run / "checkpoints" / "latest.json").read_text())["name"])
    return run / "checkpoints" / name


def truncate_trial_state(case: Path) -> None:
    path = _latest_checkpoint(case / "run") / "trial.json"
    path.write_bytes(path.read_bytes()[:10])


def truncate_checkpoint_state(case: Path) -> None:
    path = _latest_checkpoint(case / "run") / "state.json"
    path.write_bytes(path.read_bytes()[:7])


def empty_checkpoint_state(case: Path) -> None:
    (_latest_checkpoint(case / "run") / "state.json").write_text("{}")


def drop_checkpoint_counters(case: Path) -> None:
    path = _latest_checkpoint(case / "run") / "state.json"
    meta = json.loads(path.read_text())
    del meta["counters"]
    path.write_text(json.dumps(meta))


def list_trial_state(case: Path) -> None:
    (_latest_checkpoint(case / "run") / "trial.json").write_text("[0.5, 0.25]")


def garbage_latest_pointer(case: Path) -> None:
    (case / "run" / "checkpoints" / "latest.json").write_text('{"name": "00000')


def garbage_results_row(case: Path) -> None:
    with open(case / "sweep" / "results.csv", "a") as handle:
        handle.write("garbage,not,a,row\n")


def garbage_results_number(case: Path) -> None:
    path = case / "sweep" / "results.csv"
    lines = path.read_text().splitlines()
    cells = lines[1].split(",")
    cells[5] = "many"  # batches
    lines[1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def truncate_searcher_state(case: Path) -> None:
    path = case / "sweep" / "searcher.json"
    path.write_bytes(path.read_bytes()[:40])


def edit_searcher_state(case: Path) -> None:
    path = case / "sweep" / "searcher.json"
    path.write_text(path.read_text().replace('"trials": [', '"trials": [7, '))


def duplicate_searcher_trial(case: Path) -> None:
    """A hand edit that keeps valid JSON: trial 0 listed twice (it hid trial 1 before)."""
    path = case / "sweep" / "searcher.json"
    state = json.loads(path.read_text())
    state["searcher"]["trials"].append(dict(state["searcher"]["trials"][0]))
    path.write_text(json.dumps(state))


def bump_searcher_state_version(case: Path) -> None:
    path = case / "sweep" / "searcher.json"
    state = json.loads(path.read_text())
    state["version"] = 2
    path.write_text(json.dumps(state))


def metrics_not_utf8(case: Path) -> None:
    """A byte no UTF-8 text has, in the middle of a run's ``metrics.jsonl``."""
    path = case / "run" / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b'{"kind": "train", "note": "\xff"}'
    path.write_bytes(b"\n".join(lines))


def metrics_list_line(case: Path) -> None:
    path = case / "run" / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = b"[1, 2]"
    path.write_bytes(b"\n".join(lines))


def metrics_nul_bytes(case: Path) -> None:
    path = case / "run" / "metrics.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[2] = b"\x00" * 8
    path.write_bytes(b"\n".join(lines))


def hparams_entry_not_an_object(case: Path) -> None:
    path = case / "run" / "hparams.json"
    data = json.loads(path.read_text())
    data[next(iter(data))] = 3
    path.write_text(json.dumps(data))


def remove_trial_dir(case: Path) -> None:
    shutil.rmtree(case / "sweep" / "1")


def garbage_hparams(case: Path) -> None:
    (case / "run" / "hparams.json").write_text('{"hyperparameters.lr": {"value": 0.')


def garbage_result(case: Path) -> None:
    (case / "run" / "result.json").write_text("not json at all\n")


def garbage_trial_result(case: Path) -> None:
    (case / "sweep" / "0" / "result.json").write_text('{"status": ')


def list_hparams(case: Path) -> None:
    (case / "run" / "hparams.json").write_text("[1, 2, 3]\n")


# -- the matrix ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: how to run it and what its one error line must contain.

    ``kind``: ``run`` is ``python train.py +experiment=quadratic ARGS`` in a fresh (or the
    copied) run directory; ``sweep`` the same with ``-m`` and a sweep directory; ``cli`` is
    ``python -m detflow._results.cli ARGS``. ``base`` copies the finished run or sweep into the
    case's directory first (``{run}`` / ``{sweep}`` in ``args`` name the copy; ``{dir}`` is
    the case's directory) and ``corrupt`` then breaks it. Without ``base`` the run or sweep
    directory is fresh, and nothing may start in it: no ``hparams.json``, metrics or
    checkpoints, no trial directory, no ``.detflow`` (or ``.detflow/slurm``) folder.
    """

    id: str
    kind: Kind
    args: tuple[str, ...]
    needles: tuple[str, ...]
    base: Base | None = None
    corrupt: Callable[[Path], None] | None = None
    #: Files (relative to the copied directory) the error path may rewrite.
    may_change: tuple[str, ...] = field(default=())


def run(id: str, *args: str, needles: tuple[str, ...]) -> Case:
    return Case(id, "run", args, needles)


def sweep(id: str, *args: str, needles: tuple[str, ...]) -> Case:
    return Case(id, "sweep", args, needles)


def cli(id: str, *args: str, needles: tuple[str, ...], base: Base | None = None) -> Case:
    return Case(id, "cli", args, needles, base=base)


CASES: list[Case] = [
    # -- config values -----------------------------------------------------------------------
    run("searcher-name", "searcher.name=bogus", needles=("searcher.name", "grid, random, asha")),
    run(
        "max-trials-zero",
        "searcher.max_trials=0",
        needles=("searcher.max_trials", "a positive integer"),
    ),
    run(
        "max-trials-too-many",
        "searcher.max_trials=1000000",
        needles=("searcher.max_trials = 1000000", "an integer from 1 to 100000"),
    ),
    run(
        "max-concurrent-negative",
        "searcher.max_concurrent_trials=-2",
        needles=("searcher.max_concurrent_trials", "a positive integer"),
    ),
    run("divisor-one", "searcher.divisor=1", needles=("searcher.divisor = 1", "an integer >= 2")),
    run(
        "max-rungs-zero",
        "searcher.max_rungs=0",
        needles=("searcher.max_rungs", "a positive integer"),
    ),
    run("metric-empty", "searcher.metric=''", needles=("searcher.metric", "non-empty")),
    run(
        "precedence",
        "hparams_precedence=yaml",
        needles=("hparams_precedence", "code", "config"),
    ),
    run(
        "slots-zero",
        "resources.slots_per_trial=0",
        needles=("resources.slots_per_trial", "a positive integer"),
    ),
    run(
        "slots-not-dividing-batch",
        "resources.slots_per_trial=3",
        needles=("hyperparameters.global_batch_size", "multiple of resources.slots_per_trial"),
    ),
    run(
        "aggregation-zero",
        "optimizations.aggregation_frequency=0",
        needles=("optimizations.aggregation_frequency", "a positive integer"),
    ),
    run(
        "batch-size-zero",
        "hyperparameters.global_batch_size=0",
        needles=("hyperparameters.global_batch_size", "a positive integer"),
    ),
    run(
        "batch-size-text",
        "hyperparameters.global_batch_size=eight",
        needles=("hyperparameters.global_batch_size", "eight", "integer"),
    ),
    run(
        "batch-size-missing",
        "~hyperparameters.global_batch_size",
        needles=("hyperparameters.global_batch_size", "positive integer"),
    ),
    run(
        "base-batch-size-zero",
        "hyperparameters.base_batch_size=0",
        needles=("hyperparameters.base_batch_size", "a positive integer"),
    ),
    run(
        "records-per-epoch-zero",
        "records_per_epoch=0",
        needles=("records_per_epoch", "a positive integer"),
    ),
    run(
        "scheduling-unit-zero",
        "scheduling_unit=0",
        needles=("scheduling_unit", "a positive integer"),
    ),
    run("seed-text", "seed=abc", needles=("seed=abc", "Integer")),
    run("resume-text", "resume=maybe", needles=("resume=maybe", "bool")),
    run(
        "smaller-is-better-text",
        "searcher.smaller_is_better=sometimes",
        needles=("searcher.smaller_is_better=sometimes", "bool"),
    ),
    run("unknown-key", "bogus_key=1", needles=("bogus_key", "use +bogus_key=1")),
    # -- lengths and units -------------------------------------------------------------------
    run(
        "length-zero",
        "searcher.max_length=0 epochs",
        needles=("searcher.max_length", "<positive int> <unit>"),
    ),
    run(
        "length-negative",
        "searcher.max_length=-3 batches",
        needles=("searcher.max_length", "<positive int> <unit>"),
    ),
    run(
        "length-fraction",
        "searcher.max_length=1.5 epochs",
        needles=("searcher.max_length", "<positive int> <unit>"),
    ),
    run(
        "length-unknown-unit",
        "searcher.max_length=5 parsecs",
        needles=("searcher.max_length", "records, batches, steps, epochs"),
    ),
    run(
        "length-no-unit",
        "searcher.max_length=5",
        needles=("searcher.max_length", "<positive int> <unit>"),
    ),
    run(
        "length-word",
        "searcher.max_length=forever",
        needles=("searcher.max_length", "<positive int> <unit>"),
    ),
    run(
        "length-mapping-unit",
        "searcher.max_length={fortnights: 2}",
        needles=("searcher.max_length", "records, batches, steps, epochs"),
    ),
    run(
        "validation-period-zero",
        "min_validation_period=0 batches",
        needles=("min_validation_period", "<positive int> <unit>"),
    ),
    run(
        "checkpoint-period-unit",
        "min_checkpoint_period=2 hours",
        needles=("min_checkpoint_period", "records, batches, steps, epochs"),
    ),
    # -- df.scale ----------------------------------------------------------------------------
    run(
        "scale-unknown-rule",
        "hyperparameters.lr=${df.scale:0.1,bogus}",
        needles=("hyperparameters.lr", "bogus", "linear, sqrt"),
    ),
    run(
        "scale-value-text",
        "hyperparameters.lr=${df.scale:abc,linear}",
        needles=("hyperparameters.lr", "abc", "number"),
    ),
    run(
        "scale-no-rule",
        "hyperparameters.lr=${df.scale:0.1}",
        needles=("hyperparameters.lr", "expected ${df.scale:VALUE,RULE} with RULE one of"),
    ),
    run(
        "scale-extra-argument",
        "hyperparameters.lr=${df.scale:0.1,linear,2}",
        needles=("hyperparameters.lr = '${df.scale:0.1,linear,2}'", "${df.scale:VALUE,RULE}"),
    ),
    run(
        "scale-adam-beta-reaches-one",
        "+hyperparameters.beta=${df.scale:0.5,adam_beta}",
        "hyperparameters.global_batch_size=64",
        needles=("hyperparameters.beta", "adam_beta"),
    ),
    run(
        "scale-no-base-batch-size",
        "~hyperparameters.base_batch_size",
        needles=("hyperparameters.base_batch_size", "df.scale"),
    ),
    # -- search spaces (-m) ------------------------------------------------------------------
    sweep(
        "interval-reversed",
        "hyperparameters.lr=interval(1,0)",
        needles=("hyperparameters.lr", "interval(1.0, 0.0)", "low < high"),
    ),
    # The value reads "Interval(low=0.01, ...)": detflow/_space.py grid_points (not ours) could
    # write it as the user did, "interval(0.01, 0.1)".
    sweep(
        "grid-continuous",
        "searcher.name=grid",
        "hyperparameters.lr=interval(0.01,0.1)",
        needles=("hyperparameters.lr", "choice(...)"),
    ),
    sweep("searcher-unknown", "searcher.name=bayes", needles=("searcher.name", "asha")),
    sweep(
        "log-choice",
        "searcher.name=random",
        "searcher.max_trials=2",
        "hyperparameters.lr=tag(log,choice(0.1,0.2))",
        needles=("hyperparameters.lr = 'tag(log,choice(0.1,0.2))'", "only on an interval"),
    ),
    sweep(
        "log-interval-from-zero",
        "searcher.name=random",
        "searcher.max_trials=2",
        "hyperparameters.lr=tag(log,interval(0,1))",
        needles=("hyperparameters.lr", "low > 0 for a log interval"),
    ),
    sweep(
        "space-grammar",
        "searcher.name=random",
        "searcher.max_trials=2",
        "+searcher.space={hyperparameters.lr: 'interval(0.1'}",
        needles=("searcher.space.hyperparameters.lr", "Hydra sweep grammar"),
    ),
    sweep(
        "grid-invalid-point",
        "searcher.name=grid",
        "hyperparameters.global_batch_size=choice(8,0)",
        needles=("hyperparameters.global_batch_size = 0", "trial 1 of the search"),
    ),
    sweep(
        "asha-divisor-one",
        "searcher.name=asha",
        "searcher.max_trials=2",
        "searcher.divisor=1",
        "hyperparameters.lr=interval(0.01,0.1)",
        needles=("searcher.divisor = 1", "an integer >= 2"),
    ),
    sweep(
        "random-without-max-trials",
        "searcher.name=random",
        "hyperparameters.lr=interval(0.01,0.1)",
        needles=("searcher.max_trials = None", "random search starts", "no default"),
    ),
    sweep(
        "unknown-searcher-key",
        "searcher.name=grid",
        "+searcher.max_trial=5",
        needles=("searcher.max_trial", "did you mean searcher.max_trials?"),
    ),
    run(
        "determined-key",
        "+reproducibility.experiment_seed=42",
        needles=("reproducibility.experiment_seed", "use seed"),
    ),
    run(
        "hparam-type-mismatch",
        "hyperparameters.global_batch_size=4.5",
        needles=("hyperparameters.global_batch_size = 4.5", "an integer"),
    ),
    sweep(
        "random-no-trials",
        "searcher.name=random",
        "searcher.max_trials=0",
        "hyperparameters.lr=interval(0.01,0.1)",
        needles=("searcher.max_trials", "a positive integer"),
    ),
    sweep(
        "swept-bad-length",
        "searcher.name=grid",
        "searcher.max_length=choice(1 epochs,0 epochs)",
        needles=("searcher.max_length", "<positive int> <unit>"),
    ),
    # -- launcher options (-m) ---------------------------------------------------------------
    sweep(
        "slurm-time-negative",
        SLURM,
        "hydra.launcher.time=-1",
        needles=("hydra.launcher.time = -1", "positive integer"),
    ),
    sweep(
        "slurm-partition-newline",
        SLURM,
        "hydra.launcher.partition='gpu\nbatch'",
        needles=("hydra.launcher.partition", "single line"),
    ),
    sweep(
        "slurm-account-empty",
        SLURM,
        "hydra.launcher.account=' '",
        needles=("hydra.launcher.account", "non-empty"),
    ),
    sweep(
        "slurm-nodes-zero",
        SLURM,
        "hydra.launcher.nodes=0",
        needles=("hydra.launcher.nodes", "positive integer"),
    ),
    sweep(
        "slurm-nodes-not-dividing-slots",
        SLURM,
        "hydra.launcher.nodes=2",
        needles=("hydra.launcher.nodes = 2", "divisor of resources.slots_per_trial (1)"),
    ),
    sweep(
        "slurm-tasks-per-node-not-slots",
        SLURM,
        "hydra.launcher.tasks_per_node=2",
        needles=("hydra.launcher.tasks_per_node = 2", "resources.slots_per_trial (1)"),
    ),
    sweep(
        "slurm-array-parallelism-zero",
        SLURM,
        "hydra.launcher.array_parallelism=0",
        needles=("hydra.launcher.array_parallelism", "positive integer"),
    ),
    sweep(
        "slurm-gpus-negative",
        SLURM,
        "hydra.launcher.gpus_per_node=-1",
        needles=("hydra.launcher.gpus_per_node", ">= 0"),
    ),
    sweep(
        "slurm-max-requeues-negative",
        SLURM,
        "hydra.launcher.max_requeues=-1",
        needles=("hydra.launcher.max_requeues", "0 or more"),
    ),
    sweep(
        "slurm-time-text",
        SLURM,
        "hydra.launcher.time=forever",
        needles=("hydra.launcher.time=forever", "Integer"),
    ),
    sweep(
        "slurm-unknown-option",
        SLURM,
        "+hydra.launcher.partitio=gpu",
        needles=("hydra.launcher.partitio", "partition"),
    ),
    sweep(
        "local-max-parallel-negative",
        LOCAL,
        "hydra.launcher.max_parallel=-1",
        needles=("hydra.launcher.max_parallel", "0 or a positive integer"),
    ),
    sweep(
        "local-gpus-per-trial-negative",
        LOCAL,
        "hydra.launcher.gpus_per_trial=-1",
        needles=("hydra.launcher.gpus_per_trial", "0 or more"),
    ),
    sweep(
        "local-more-gpus-than-listed",
        LOCAL,
        "hydra.launcher.gpus=[0]",
        "hydra.launcher.gpus_per_trial=2",
        needles=("hydra.launcher.gpus_per_trial", "at most the 1 GPUs"),
    ),
    # -- the detflow command -----------------------------------------------------------------
    cli("summary-missing-dir", "summary", "{dir}/nowhere", needles=("nowhere", "does not exist")),
    cli("plot-missing-dir", "plot", "{dir}/nowhere", needles=("nowhere", "does not exist")),
    cli("explain-missing-dir", "explain", "{dir}/nowhere", needles=("nowhere", "does not exist")),
    cli("summary-empty-dir", "summary", "{dir}", needles=("is not a run or sweep directory",)),
    cli(
        "summary-a-file",
        "summary",
        "{run}/result.json",
        needles=("result.json is a file", "a run"),
        base="run",
    ),
    cli(
        "explain-a-sweep",
        "explain",
        "{sweep}",
        needles=("is a sweep directory", "one trial's run directory"),
        base="sweep",
    ),
    cli("summary-no-dir", "summary", needles=("the following arguments are required: dir",)),
    cli(
        "summary-bad-flag",
        "summary",
        "{sweep}",
        "--bogus",
        needles=("unrecognized arguments: --bogus",),
        base="sweep",
    ),
    cli(
        "summary-csv-and-json",
        "summary",
        "{sweep}",
        "--csv",
        "--json",
        needles=("--json", "not allowed with argument --csv"),
        base="sweep",
    ),
    cli("unknown-command", "report", "{dir}", needles=("invalid choice: 'report'", "summary")),
    cli(
        "plot-bad-unit",
        "plot",
        "{sweep}",
        "--x",
        "parsecs",
        needles=("--x", "invalid choice: 'parsecs'", "epochs"),
        base="sweep",
    ),
    cli(
        "plot-output-is-a-directory",
        "plot",
        "{sweep}",
        "-o",
        "{dir}",
        needles=("cannot write", "Is a directory", "-o takes"),
        base="sweep",
    ),
    # -- corrupt files -----------------------------------------------------------------------
    Case(
        "checkpoint-trial-state-truncated",
        "run",
        ("resume=true",),
        ("trial.json is corrupt", "0000000128 to resume from", "new run directory"),
        base="run",
        corrupt=truncate_trial_state,
    ),
    Case(
        "checkpoint-state-truncated",
        "run",
        ("resume=true",),
        ("state.json is corrupt", "0000000128 to resume from", "new run directory"),
        base="run",
        corrupt=truncate_checkpoint_state,
    ),
    Case(
        "checkpoint-state-emptied",
        "run",
        ("resume=true",),
        ("state.json is corrupt", "batches None, not the 128", "new run directory"),
        base="run",
        corrupt=empty_checkpoint_state,
    ),
    Case(
        "checkpoint-state-without-counters",
        "run",
        ("resume=true",),
        ("state.json is corrupt", "counters None are not the exact counters", "new run directory"),
        base="run",
        corrupt=drop_checkpoint_counters,
    ),
    Case(
        "checkpoint-trial-state-not-a-dict",
        "run",
        ("resume=true",),
        ("trial.json is corrupt", "a list, not the dict", "new run directory"),
        base="run",
        corrupt=list_trial_state,
    ),
    Case(
        "checkpoint-pointer-garbage",
        "run",
        ("resume=true",),
        ("latest.json is corrupt", "delete it", "new run directory"),
        base="run",
        corrupt=garbage_latest_pointer,
    ),
    Case(
        "results-csv-garbage-row-summary",
        "cli",
        ("summary", "{sweep}"),
        ("results.csv row 3 'garbage,not,a,row'", "4 cells, the header has"),
        base="sweep",
        corrupt=garbage_results_row,
    ),
    Case(
        "results-csv-garbage-number-summary",
        "cli",
        ("summary", "{sweep}"),
        ("results.csv row 1", "batches 'many' is not an integer"),
        base="sweep",
        corrupt=garbage_results_number,
    ),
    Case(
        "searcher-state-truncated-resume",
        "sweep",
        SWEEP_ARGS,
        ("searcher.json", "edited or damaged", "new hydra.sweep.dir"),
        base="sweep",
        corrupt=truncate_searcher_state,
    ),
    Case(
        "searcher-state-edited-resume",
        "sweep",
        SWEEP_ARGS,
        ("searcher.json", "checksum does not match", "edited or damaged"),
        base="sweep",
        corrupt=edit_searcher_state,
    ),
    Case(
        "searcher-state-duplicated-trial-resume",
        "sweep",
        SWEEP_ARGS,
        ("searcher.json", "checksum does not match", "edited or damaged"),
        base="sweep",
        corrupt=duplicate_searcher_trial,
    ),
    Case(
        "searcher-state-duplicated-trial-summary",
        "cli",
        ("summary", "{sweep}"),
        ("searcher.json", "checksum does not match"),
        base="sweep",
        corrupt=duplicate_searcher_trial,
    ),
    Case(
        "searcher-state-unknown-version-resume",
        "sweep",
        SWEEP_ARGS,
        ("searcher.json", "version 2", "version 1, the one this detflow writes"),
        base="sweep",
        corrupt=bump_searcher_state_version,
    ),
    Case(
        "searcher-state-other-search-resume",
        "sweep",
        ("searcher.name=grid", "hyperparameters.dims=choice(2,4,8)"),
        ("searcher.json", "does not match", "new hydra.sweep.dir"),
        base="sweep",
    ),
    Case(
        "searcher-state-truncated-summary",
        "cli",
        ("summary", "{sweep}"),
        ("searcher.json", "edited or damaged"),
        base="sweep",
        corrupt=truncate_searcher_state,
    ),
    Case(
        "trial-dir-missing-summary",
        "cli",
        ("summary", "{sweep}"),
        ("results.csv lists trial 1 (COMPLETED)", "does not exist", "restore"),
        base="sweep",
        corrupt=remove_trial_dir,
    ),
    Case(
        "trial-dir-missing-plot",
        "cli",
        ("plot", "{sweep}"),  # writes SWEEP/curves.png: the snapshot would see it
        ("results.csv lists trial 1 (COMPLETED)", "does not exist"),
        base="sweep",
        corrupt=remove_trial_dir,
    ),
    Case(
        "metrics-not-utf8-summary",
        "cli",
        ("summary", "{run}"),
        ("metrics.jsonl line 2", "not UTF-8 text"),
        base="run",
        corrupt=metrics_not_utf8,
    ),
    Case(
        "metrics-not-utf8-plot",
        "cli",
        ("plot", "{run}", "-o", "{dir}/curves.png"),
        ("metrics.jsonl line 2", "not UTF-8 text"),
        base="run",
        corrupt=metrics_not_utf8,
    ),
    Case(
        "metrics-not-utf8-resume",
        "run",
        ("resume=true",),
        ("metrics.jsonl line 2", "not UTF-8 text"),
        base="run",
        corrupt=metrics_not_utf8,
    ),
    Case(
        "metrics-list-line-resume",
        "run",
        ("resume=true",),
        ("metrics.jsonl line 2", "a JSON list, not an object"),
        base="run",
        corrupt=metrics_list_line,
    ),
    Case(
        "metrics-nul-bytes-summary",
        "cli",
        ("summary", "{run}"),
        ("metrics.jsonl line 3", "NUL bytes"),
        base="run",
        corrupt=metrics_nul_bytes,
    ),
    Case(
        "hparams-entry-not-an-object-explain",
        "cli",
        ("explain", "{run}"),
        ("hparams.json entry", "not a {value, source} object"),
        base="run",
        corrupt=hparams_entry_not_an_object,
    ),
    Case(
        "hparams-garbage-explain",
        "cli",
        ("explain", "{run}"),
        ("hparams.json is corrupt", "expected the JSON object"),
        base="run",
        corrupt=garbage_hparams,
    ),
    Case(
        "hparams-a-list-explain",
        "cli",
        ("explain", "{run}"),
        ("hparams.json holds a JSON list", "expected the JSON object"),
        base="run",
        corrupt=list_hparams,
    ),
    Case(
        "result-garbage-summary",
        "cli",
        ("summary", "{run}"),
        ("run/result.json is corrupt", "expected the JSON object"),
        base="run",
        corrupt=garbage_result,
    ),
    Case(
        "result-garbage-explain",
        "cli",
        ("explain", "{run}"),
        ("run/result.json is corrupt", "expected the JSON object"),
        base="run",
        corrupt=garbage_result,
    ),
    Case(
        "trial-result-garbage-summary",
        "cli",
        ("summary", "{sweep}/0"),
        ("sweep/0/result.json is corrupt", "expected the JSON object"),
        base="sweep",
        corrupt=garbage_trial_result,
    ),
    # -- sbatch options detflow writes itself, in additional_parameters (-m, Slurm) ---------
    sweep(
        "slurm-extra-array",
        SLURM,
        "+hydra.launcher.additional_parameters={array:'0-1000'}",
        needles=("additional_parameters = 'array'", "searcher.max_concurrent_trials"),
    ),
    sweep(
        "slurm-extra-signal-dry-run",
        SLURM,
        "hydra.launcher.dry_run=true",
        "+hydra.launcher.additional_parameters.signal='USR1@1'",
        needles=("additional_parameters = 'signal'", "hydra.launcher.signal_delay_s"),
    ),
    sweep(
        "slurm-extra-output",
        SLURM,
        "+hydra.launcher.additional_parameters.output=/etc/passwd",
        needles=("additional_parameters = 'output'", "hydra.launcher.submitit_folder"),
    ),
    sweep(
        "slurm-extra-error-dry-run",
        SLURM,
        "hydra.launcher.dry_run=true",
        "+hydra.launcher.additional_parameters={error:/tmp/x}",
        needles=("additional_parameters = 'error'", "hydra.launcher.submitit_folder"),
    ),
    sweep(
        "slurm-extra-open-mode-underscore",
        SLURM,
        "+hydra.launcher.additional_parameters.open_mode=truncate",
        needles=("additional_parameters = 'open_mode'", "--open-mode"),
    ),
    sweep(
        "slurm-extra-job-name-underscore",
        SLURM,
        "+hydra.launcher.additional_parameters.job_name=other",
        needles=("additional_parameters = 'job_name'", "hydra.job.name"),
    ),
    sweep(
        "slurm-extra-job-name-dash-dry-run",
        SLURM,
        "hydra.launcher.dry_run=true",
        "+hydra.launcher.additional_parameters={job-name:other}",
        needles=("additional_parameters = 'job-name'", "hydra.job.name"),
    ),
    sweep(
        "slurm-extra-no-requeue",
        SLURM,
        "+hydra.launcher.additional_parameters={no-requeue:true}",
        needles=("additional_parameters = 'no-requeue'", "hydra.launcher.max_requeues=0"),
    ),
    sweep(
        "slurm-extra-abbreviated-signal",
        SLURM,
        "+hydra.launcher.additional_parameters.sig='USR1@1'",
        needles=("'sig'", "--sig abbreviates --signal", "hydra.launcher.signal_delay_s"),
    ),
    sweep(
        "slurm-extra-time",
        SLURM,
        "+hydra.launcher.additional_parameters.time=5",
        needles=("additional_parameters = 'time'", "hydra.launcher.time"),
    ),
    sweep(
        "slurm-extra-leading-dashes-owned",
        SLURM,
        "+hydra.launcher.additional_parameters={--output:1}",
        needles=("'--output'", "hydra.launcher.submitit_folder", "without leading dashes"),
    ),
    sweep(
        "slurm-extra-leading-dashes",
        SLURM,
        "hydra.launcher.dry_run=true",
        "+hydra.launcher.additional_parameters={--mail-type:ALL}",
        needles=("'--mail-type'", "without leading dashes: mail-type"),
    ),
    sweep(
        "slurm-extra-upper-case",
        SLURM,
        "+hydra.launcher.additional_parameters.J=other",
        needles=("additional_parameters = 'J'", "lower case"),
    ),
    sweep(
        "slurm-time-too-long",
        SLURM,
        "hydra.launcher.time=1180591620717411303424",
        needles=("hydra.launcher.time = 1180591620717411303424", "at most 525600 (365 days)"),
    ),
    sweep(
        "slurm-time-over-a-year-dry-run",
        SLURM,
        "hydra.launcher.dry_run=true",
        "hydra.launcher.time=525601",
        needles=("hydra.launcher.time = 525601", "at most 525600"),
    ),
    sweep(
        "slurm-signal-delay-too-long",
        SLURM,
        "hydra.launcher.signal_delay_s=65536",
        needles=("hydra.launcher.signal_delay_s = 65536", "at most 65535"),
    ),
]


# -- running the matrix ----------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What a case did: exit status, output, and the evidence of side effects."""

    returncode: int
    output: str
    spied: str | None  # what the Slurm spies recorded, if anything ran them
    changed: list[str]  # files of the copied directory that changed (beyond may_change)
    started: list[str]  # what appeared in a fresh run or sweep directory


Snapshot = dict[str, tuple[bytes, int]]


def snapshot(root: Path) -> Snapshot:
    """Every file's bytes and mtime under ``root``."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def make_spies(directory: Path) -> Path:
    """``sbatch``, ``srun`` and ``salloc`` that record their call and fail."""
    directory.mkdir()
    for name in SPIES:
        spy = directory / name
        spy.write_text(f'#!/bin/sh\necho "{name} $*" >> "${SPY_MARKER_ENV}"\nexit 1\n')
        spy.chmod(spy.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def base_env(spies: Path) -> dict[str, str]:
    """The test's environment: spies first on PATH, HYDRA_FULL_ERROR unset, caller's
    PYTHONPATH kept after the repository (where the Hydra plugins may be found)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["PATH"] = os.pathsep.join([str(spies), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


@dataclass(frozen=True)
class Fixtures:
    run: Path  # a finished ``+experiment=quadratic`` run
    sweep: Path  # a finished two-point grid sweep
    spies: Path
    cases: Path  # one directory per case under it


def copy_base(fixtures: Fixtures, base: Base, case_dir: Path) -> Path:
    """Copy the finished run or sweep into ``case_dir``; paths inside point at the copy."""
    source = fixtures.run if base == "run" else fixtures.sweep
    target = case_dir / base
    shutil.copytree(source, target)
    results = target / "results.csv"
    if results.exists():
        results.write_text(results.read_text().replace(str(source), str(target)))
        shutil.copystat(source / "results.csv", results)
    return target


def execute(
    case: Case, fixtures: Fixtures, case_dir: Path, extra_env: dict[str, str] | None = None
) -> Outcome:
    """Run one case in ``case_dir`` and collect its evidence."""
    case_dir.mkdir(parents=True)
    copied = copy_base(fixtures, case.base, case_dir) if case.base else None
    if case.corrupt is not None:
        case.corrupt(case_dir)
    before = snapshot(copied) if copied else {}
    marker = case_dir / "spied.log"
    env = {**base_env(fixtures.spies), SPY_MARKER_ENV: str(marker), **(extra_env or {})}
    places = {"{dir}": str(case_dir), "{run}": str(case_dir / "run")}
    places["{sweep}"] = str(case_dir / "sweep")
    args = [_fill(a, places) for a in case.args]
    if case.kind == "cli":
        done = subprocess.run(
            [sys.executable, "-m", "detflow._results.cli", *args],
            cwd=case_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    else:
        where = (
            ["+experiment=quadratic", f"hydra.run.dir={case_dir / 'run'}"]
            if case.kind == "run"
            else ["-m", "+experiment=quadratic", f"hydra.sweep.dir={case_dir / 'sweep'}"]
        )
        done = run_cli([*where, *args], cwd=case_dir, env=env, timeout=60)
    after = snapshot(copied) if copied else {}
    changed = sorted(
        name
        for name in set(before) | set(after)
        if before.get(name) != after.get(name) and name not in case.may_change
    )
    started = [] if case.base else work_started(case_dir)
    return Outcome(
        done.returncode,
        done.stdout + done.stderr,
        marker.read_text() if marker.exists() else None,
        changed,
        started,
    )


def work_started(case_dir: Path) -> list[str]:
    """What a bad input must not have made: training files in the run directory, anything
    in the sweep directory (trial directories, ``.detflow``, ``searcher.json``...)."""
    run_dir, sweep_dir = case_dir / "run", case_dir / "sweep"
    found = [f"run/{n}" for n in TRAINING_FILES if (run_dir / n).exists()]
    if sweep_dir.exists():
        found += sorted(f"sweep/{p.name}" for p in sweep_dir.iterdir())
    return found


TRAINING_FILES = ("hparams.json", "metrics.jsonl", "checkpoints", "result.json", "tensorboard")


def _fill(arg: str, places: dict[str, str]) -> str:
    for name, value in places.items():
        arg = arg.replace(name, value)
    return arg


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> Fixtures:
    root = tmp_path_factory.mktemp("bad_inputs")
    spies = make_spies(root / "spies")
    env = base_env(spies)
    made = run_cli(["+experiment=quadratic", f"hydra.run.dir={root / 'run'}"], cwd=root, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    made = run_cli(
        ["-m", "+experiment=quadratic", f"hydra.sweep.dir={root / 'sweep'}", *SWEEP_ARGS],
        cwd=root,
        env=env,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    return Fixtures(root / "run", root / "sweep", spies, root / "cases")


@pytest.fixture(scope="module")
def outcomes(fixtures: Fixtures) -> dict[str, Outcome]:
    """Every case run once, two at a time (the machine has two cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {c.id: pool.submit(execute, c, fixtures, fixtures.cases / c.id) for c in CASES}
        return {name: future.result() for name, future in futures.items()}


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if ERROR_LINE.match(line)]


def test_the_matrix_is_large_and_distinct() -> None:
    assert len(CASES) >= 45
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({(c.kind, c.args, c.base, c.corrupt) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(
    case: Case, outcomes: dict[str, Outcome]
) -> None:
    got = outcomes[case.id]
    shown = f"exit {got.returncode}, output:\n{got.output}"
    assert got.returncode != 0, shown
    for marker in FORBIDDEN:
        assert marker not in got.output, shown
    lines = error_lines(got.output)
    assert len(lines) == 1, shown
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not in the error line\n{shown}"
    assert got.spied is None, f"a Slurm command ran: {got.spied}"
    assert got.started == [], f"work started: {got.started}\n{shown}"
    assert got.changed == [], f"files changed: {got.changed}\n{shown}"


def test_the_spies_would_see_a_submission(fixtures: Fixtures, tmp_path: Path) -> None:
    """The control for "nothing submitted": an ``sbatch`` call leaves the marker."""
    marker = tmp_path / "spied.log"
    env = {**base_env(fixtures.spies), SPY_MARKER_ENV: str(marker)}
    done = subprocess.run(["sbatch", "--wrap", "true"], env=env, check=False)
    assert done.returncode == 1
    assert marker.read_text() == "sbatch --wrap true\n"


FULL_ERROR_CASES = [
    "searcher-name",
    "seed-text",
    "scale-unknown-rule",
    "interval-reversed",
    "slurm-time-negative",
    "checkpoint-trial-state-truncated",
    "searcher-state-truncated-resume",
]


def test_hydra_full_error_shows_the_traceback(fixtures: Fixtures) -> None:
    """``HYDRA_FULL_ERROR=1`` is the documented way to see where an error came from."""
    by_id = {c.id: c for c in CASES}

    def one(name: str) -> Outcome:
        return execute(
            by_id[name], fixtures, fixtures.cases / f"full-{name}", {"HYDRA_FULL_ERROR": "1"}
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        got: Iterator[Outcome] = pool.map(one, FULL_ERROR_CASES)
        for name, outcome in zip(FULL_ERROR_CASES, got, strict=True):
            assert outcome.returncode != 0, (name, outcome.output)
            assert "Traceback" in outcome.output, (name, outcome.output)
            assert outcome.spied is None, name
