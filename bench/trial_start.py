"""Row ``local_torch_trial_start_s``: a real torch trial's start in a local sweep, warm
against cold. Baseline: the same sweep and trial, run by a copy of ``train.py`` that imports
the trial module inside its task function (the example as it was before #16), so that every
forked trial imports torch and scikit-learn itself; measured in the same run.

Run from the repository root::

    python -m bench.trial_start             # 6 trials a side
    python -m bench.trial_start --quick     # 4 trials a side

Each side is a fresh ``python APP -m`` local sweep (``hydra/launcher=detflow_local``, the
fork server) of the example's digits MLP, ``+experiment=digits_mlp``, one batch per trial,
one trial at a time (``searcher.max_concurrent_trials=1``), a random search over ``lr``. A
trial's start-to-result is the time between the driver's ``starting trial N`` line and its
``trial N reached ...`` line (Hydra's log time stamps, milliseconds), so it counts what a
user waits for: forking (or spawning), imports, ``detflow.init``, building the model and the
data, one batch, one validation, one checkpoint, the result read back by the driver. The
figure is the median over the sweep's trials (the first one included: it also starts the
fork server, which imports torch once for the whole sweep).

- ``warm``: ``python train.py ... hydra.launcher.preload=[trials.digits]``: the fork server
  imports the trial module (and so torch and scikit-learn) once, before it forks.
- ``cold`` (baseline): the same command without the preload: ``trials/__init__.py`` imports
  its trial modules lazily, so every forked trial imports torch itself.

The example keeps its trials lazy on purpose: ``import trials`` at the top of ``train.py``
would make every ``python train.py`` (the quadratic runs and every Slurm job included) pay the
2.6 s import of torch and scikit-learn; the preload pays it once per sweep, only where asked.

Target: warm <= 0.5 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench._common import machine, table

__all__ = ["ROW_ID", "TARGET_S", "TrialStart", "measure"]

ROW_ID = "local_torch_trial_start_s"
TARGET_S = 0.5
REPO = Path(__file__).resolve().parent.parent

#: what the warm side adds: the fork server imports the example's torch trial before it forks.
PRELOAD = "hydra.launcher.preload=[trials.digits]"

_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
_STARTING = re.compile(r"starting trial (\d+) ")
_REACHED = re.compile(r"trial (\d+) reached ")


@dataclass(frozen=True)
class TrialStart:
    """The row: the warm median (``value``), the cold one (``baseline``), in seconds."""

    value: float
    baseline: float
    warm: tuple[float, ...]  # each trial's start-to-result, warm
    cold: tuple[float, ...]  # and cold
    id: str = ROW_ID
    unit: str = "s"
    target: str = f"<= {TARGET_S} s"

    @property
    def passed(self) -> bool:
        return self.value <= TARGET_S


def sweep_arguments(trials: int, sweep_dir: Path) -> list[str]:
    """The local sweep both sides run (the warm side adds :data:`PRELOAD`)."""
    return [
        "-m",
        "+experiment=digits_mlp",
        "hydra/launcher=detflow_local",
        "searcher.name=random",
        f"searcher.max_trials={trials}",
        "searcher.max_concurrent_trials=1",
        "searcher.max_length=1 batches",
        "hyperparameters.lr=interval(0.01,0.2)",
        f"hydra.sweep.dir={sweep_dir}",
    ]


def start_to_result(log: str) -> list[float]:
    """Each trial's seconds from ``starting trial N`` to ``trial N reached``, by trial id.

    >>> start_to_result(
    ...     "[2026-01-01 10:00:00,100][detflow.sweep][INFO] - starting trial 0 to 1 batch\\n"
    ...     "[2026-01-01 10:00:00,350][detflow.sweep][INFO] - trial 0 reached 1 batch: x=1\\n"
    ... )
    [0.25]
    """
    started: dict[int, datetime] = {}
    ended: dict[int, datetime] = {}
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if stamp is None:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if (match := _STARTING.search(line)) is not None:
            started.setdefault(int(match.group(1)), at)
        elif (match := _REACHED.search(line)) is not None:
            ended[int(match.group(1))] = at
    return [
        round((ended[t] - started[t]).total_seconds(), 3) for t in sorted(started) if t in ended
    ]


def run_sweep(trials: int, workdir: Path, tag: str, *extra: str) -> list[float]:
    """Run one side's sweep of ``train.py`` (``extra`` arguments added); its trials'
    start-to-result seconds."""
    env = dict(os.environ, DETFLOW_TENSORBOARD="0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.pop("HYDRA_FULL_ERROR", None)
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *sweep_arguments(trials, workdir / tag), *extra],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    output = done.stdout + done.stderr
    (workdir / f"{tag}.log").write_text(output)
    seconds = start_to_result(output)
    if done.returncode != 0 or len(seconds) != trials:
        raise RuntimeError(f"{tag} sweep failed ({len(seconds)} of {trials} trials):\n{output}")
    return seconds


def metrics(sweep_dir: Path) -> list[tuple[str, str, str]]:
    """(trial id, lr, best metric) of each trial, from the sweep's ``results.csv``."""
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [(r["trial_id"], r["hyperparameters.lr"], r["best_metric"]) for r in rows]


def measure(quick: bool, workdir: Path | None = None) -> TrialStart:
    """Both sides, cold first (its trials also warm the page cache for the warm side's);
    the two sweeps' trials must train alike (same hyperparameters, same metrics)."""
    trials = 4 if quick else 6
    with tempfile.TemporaryDirectory(prefix="df-trial-start-") as scratch:
        work = workdir or Path(scratch)
        cold = run_sweep(trials, work, "cold")
        warm = run_sweep(trials, work, "warm", PRELOAD)
        if metrics(work / "warm") != metrics(work / "cold"):  # the same seeds, the same trials
            raise RuntimeError(f"warm and cold trials trained differently: see {work}")
    return TrialStart(statistics.median(warm), statistics.median(cold), tuple(warm), tuple(cold))


def render(result: TrialStart) -> list[str]:
    header = ["side", "median s", "each trial, s", f"target <= {TARGET_S} s"]
    rows = [
        [
            "cold: each trial imports torch (no preload)",
            f"{result.baseline:.3f}",
            ", ".join(f"{s:.2f}" for s in result.cold),
            "-",
        ],
        [
            "warm: preload=[trials.digits]",
            f"{result.value:.3f}",
            ", ".join(f"{s:.2f}" for s in result.warm),
            "PASS" if result.passed else "FAIL",
        ],
    ]
    return table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="4 trials a side instead of 6")
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    result = measure(args.quick)
    print("\n".join(render(result)))
    print(f"{ROW_ID}: {result.value:.3f} s against {result.baseline:.3f} s (cold)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
