"""Slurm submission: detflow's sweeper + ``detflow_slurm`` against hydra-submitit-launcher.

Run from the repository root, on a machine with Slurm (``bash scripts/local-slurm.sh start``)::

    python -m bench.slurm_submit                  # a grid of 200 no-op trials on each side
    python -m bench.slurm_submit --trials 20      # quick
    python -m bench.slurm_submit --profile        # and cProfile each sweeping process
    python -m bench.slurm_submit --json out.json  # and write both sides' figures as JSON

Both sides run the same tiny Hydra app (written to a temporary directory) on the same Slurm
partition, one after the other, each in a fresh process. Every job is the same no-op:
``detflow.init(cfg)`` and a one-batch ``fit`` of a trivial :class:`detflow.Trial` (detflow's
sweeper needs the ``result.json`` it writes), then the job writes its start and end times.
The sides:

- **hydra-submitit-launcher**: ``hydra/sweeper=basic hydra/launcher=submitit_slurm
  'hyperparameters.x=range(0,N)'``;
- **detflow**: ``hydra/sweeper=detflow hydra/launcher=detflow_slurm searcher.name=grid
  searcher.max_concurrent_trials=N 'hyperparameters.x=range(0,N)'
  hydra.launcher.gpus_per_node=0``.

``sbatch``, ``sacct``, ``squeue``, ``scontrol`` and ``scancel`` are put behind logging
wrappers (first on the sweeping process's ``PATH``), so the benchmark knows when each
``sbatch`` returned and how many Slurm commands each side ran. Figures, in seconds from just
before the sweep's process is started:

- **submitted**: the last ``sbatch`` call returned (all N jobs are in Slurm's queue);
- **first job starts**: the first task function starts;
- **all done**: the sweep's process exits, every job having ended (``last job ends``: the
  last task function returns);
- **CPU of the sweeping process** (``getrusage``): on a small cluster node it competes with
  the jobs;
- **sbatch calls**, **job arrays** and **Slurm jobs** (from ``sacct``, filtered by the side's
  unique job name), and the other Slurm commands the sweeping process ran;
- **scheduler calls per minute**: the ``sacct``, ``squeue`` and ``scontrol`` calls over the
  sweep's whole time (and the most in any 60 s), the load a sweep puts on slurmctld/slurmdbd.

``--json FILE`` writes ``{"submitit": {...}, "detflow": {...}}``: each side's figures
(:func:`side_json`: ``all_submitted_s``, ``all_done_s``, ``scheduler_calls_per_minute``, ...).

Before each side the benchmark waits (up to two minutes) for Slurm's queue to empty; jobs
of other names that still ran on the cluster while a side ran are counted and reported. Each
side's jobs get a unique name (``hydra.job.name=dfbench_<side>_<random>``) and their own
sweep directory, so ``sacct`` sees only them. ``--profile`` runs each sweeping process under
:mod:`cProfile` and prints where its time went (the times are then inflated).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import pstats
import resource
import shlex
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import detflow

TIMES_ENV = "DETFLOW_BENCH_TIMES"
CALLS_ENV = "DETFLOW_BENCH_SLURM_CALLS"
WRAPPED = ("sbatch", "sacct", "squeue", "scontrol", "scancel")
DEADLINE_S = 900  # per side: a sweep still running then is a failure
SACCT_WAIT_S = 60.0  # for slurmdbd to record the last jobs
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
IDLE_WAIT_S = 120.0  # for other users' jobs to leave the queue before a side starts
REPO = Path(__file__).resolve().parents[1]
#: The Slurm commands that ask the scheduler (not sbatch, not scancel): their rate is its load.
SCHEDULER_QUERIES = ("sacct", "squeue", "scontrol")

APP_SOURCE = '''\
"""A no-op Hydra app for bench/slurm_submit.py (written there; run as a script)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from hydra.core.config_store import ConfigStore

import detflow


class NoOpTrial(detflow.Trial):
    """One batch that does nothing, a one-batch validation, a tiny state."""

    def training_data(self, epoch: int) -> list[int]:
        return [1]

    def train_batch(self, batch: Any) -> Mapping[str, Any]:
        return {"loss": 0.0}

    def batch_size(self, batch: Any) -> int:
        return 1

    def validation_data(self) -> list[int]:
        return [1]

    def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
        return {"loss": 0.0}

    def state_dict(self) -> dict[str, Any]:
        return {"w": 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# A plain dict (not a dataclass of __main__): every launcher can pickle it.
ConfigStore.instance().store(
    name="app",
    node={
        "name": "noop",
        "resume": False,
        "hyperparameters": {"global_batch_size": 1, "x": 0},
        "searcher": {
            "name": "grid",
            "metric": "validation_loss",
            "max_length": "1 batches",
            "max_concurrent_trials": 1,
        },
        "min_validation_period": "1 batches",
        "min_checkpoint_period": "1 batches",
    },
)


@detflow.main(config_path=None, config_name="app")
def task(cfg: Any) -> float:
    """detflow.init + a one-batch fit; write this job's start and end times."""
    start = time.time()
    run = detflow.init(cfg)
    run.fit(NoOpTrial())
    end = time.time()
    path = os.path.join(os.environ["DETFLOW_BENCH_TIMES"], str(cfg.hyperparameters.x))
    with open(path, "w") as handle:
        handle.write(f"{start:.6f} {end:.6f}\\n")
    return 0.0


if __name__ == "__main__":
    task()
'''

WRAPPER = """\
#!/bin/sh
# Logs "<name> <start> <end> <exit status> <caller's CPU ticks>" to
# $DETFLOW_BENCH_SLURM_CALLS, then exits as {real} did.
start=$(date +%s.%N)
{real} "$@"
status=$?
if [ -n "$DETFLOW_BENCH_SLURM_CALLS" ]; then
    ticks=$(awk '{{print $14 + $15}}' "/proc/$PPID/stat" 2>/dev/null || echo -1)
    echo "{name} $start $(date +%s.%N) $status $ticks" >> "$DETFLOW_BENCH_SLURM_CALLS"
fi
exit $status
"""


@dataclass(frozen=True)
class Side:
    """One way of submitting the grid."""

    key: str
    label: str

    def arguments(self, n: int, partition: str) -> list[str]:
        if self.key == "submitit":
            return [
                "hydra/sweeper=basic",
                "hydra/launcher=submitit_slurm",
                f"hydra.launcher.partition={partition}",
                f"hyperparameters.x=range(0,{n})",
            ]
        return [
            "hydra/sweeper=detflow",
            "hydra/launcher=detflow_slurm",
            f"hydra.launcher.partition={partition}",
            "hydra.launcher.gpus_per_node=0",
            "searcher.name=grid",
            f"searcher.max_concurrent_trials={n}",
            f"hyperparameters.x=range(0,{n})",
        ]


SIDES = (
    Side("submitit", "hydra-submitit-launcher (BasicSweeper)"),
    Side("detflow", "detflow sweeper + detflow_slurm"),
)


@dataclass(frozen=True)
class SlurmCall:
    """One wrapped Slurm command run by the sweeping process."""

    name: str
    start: float
    end: float
    status: int
    caller_cpu: float  # the calling process's CPU seconds (user + system) when it ended


@dataclass(frozen=True)
class Measurement:
    """One side's sweep; times in seconds from just before its process started."""

    side: Side
    trials: int
    submitted: float  # the last sbatch returned
    first_submitted: float  # the first sbatch returned
    first_start: float  # the first task function started
    last_end: float  # the last task function returned
    task_mean: float  # a task function's mean duration
    done: float  # the sweeping process exited
    sweep_cpu: float  # the sweeping process's CPU time (user + system)
    submit_cpu: float  # of it, until the last sbatch returned
    sbatch_calls: int
    sbatch_seconds: float  # time spent inside sbatch, all calls together
    arrays: int  # distinct array job ids in sacct
    single_jobs: int  # jobs not in an array
    slurm_jobs: int  # sacct rows (array tasks count one each)
    completed: int  # of them, COMPLETED
    sacct_calls: int
    other_calls: int  # squeue, scontrol, scancel
    foreign_jobs: int  # other jobs that ran on the cluster meanwhile
    squeue_calls: int = 0
    scontrol_calls: int = 0
    scheduler_calls_per_minute: float = 0.0  # sacct + squeue + scontrol over the whole sweep
    scheduler_calls_max_per_minute: int = 0  # the most of them in any 60 s


# -- setup ----------------------------------------------------------------------------------------
def write_wrappers(directory: Path) -> None:
    """Logging wrappers for the Slurm commands, in ``directory`` (to put first on PATH)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in WRAPPED:
        real = shutil.which(name)
        if real is None:
            raise SystemExit(f"{name} not found: is Slurm installed? (scripts/local-slurm.sh)")
        path = directory / name
        path.write_text(WRAPPER.format(name=name, real=shlex.quote(real)))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def check_slurm(partition: str) -> None:
    """Exit with a clear line when Slurm does not answer or has no such partition."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%P %a", "-p", partition],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SystemExit(
            f"Slurm does not answer ({exc}); run: bash scripts/local-slurm.sh start"
        ) from None
    if "up" not in out:
        raise SystemExit(f"partition {partition!r} is not up: {out.strip() or 'no such partition'}")


def wait_idle(limit_s: float) -> bool:
    """Wait (up to ``limit_s``) until Slurm's queue is empty; whether it is."""
    deadline = time.monotonic() + limit_s
    while True:
        queue = subprocess.run(
            ["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=False
        ).stdout
        if not queue.strip():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)


# -- one side -------------------------------------------------------------------------------------
def run_side(
    side: Side, n: int, workdir: Path, tag: str, partition: str, profile: Path | None = None
) -> Measurement:
    """Run ``side``'s sweep of ``n`` no-op jobs on Slurm in a fresh process and measure it.

    Its files (log, sweep directory, job times, Slurm calls) are ``workdir/tag*``.
    """
    name = f"dfbench_{side.key}_{uuid.uuid4().hex[:8]}"
    times = workdir / f"{tag}.times"
    times.mkdir()
    calls = workdir / f"{tag}.calls"
    sweep_dir = workdir / tag
    # The checkout's detflow and Hydra plugins first: the benchmark runs from the repository.
    python_path = [str(REPO), str(REPO / "launchers"), os.environ.get("PYTHONPATH", "")]
    env = dict(
        os.environ,
        **{TIMES_ENV: str(times), CALLS_ENV: str(calls)},
        PATH=f"{workdir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(p for p in python_path if p),
    )
    env.pop("HYDRA_FULL_ERROR", None)
    command = [sys.executable]
    if profile is not None:
        command += ["-m", "cProfile", "-o", str(profile)]
    command += [
        str(workdir / "app.py"),
        "-m",
        *side.arguments(n, partition),
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.job.name={name}",
    ]
    log_path = workdir / f"{tag}.log"
    with open(log_path, "wb") as output:
        cpu_before = _children_cpu()
        began = time.time()
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
        try:
            code = process.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = -9
        ended = time.time()
        cpu = _children_cpu() - cpu_before
    rows = [p.read_text().split() for p in times.iterdir()]
    slurm_calls = _read_calls(calls, began)
    sbatch = [c for c in slurm_calls if c.name == "sbatch"]
    if code != 0 or len(rows) != n or not sbatch:
        _cancel(name)
        tail = log_path.read_text(errors="replace").splitlines()[-20:]
        raise RuntimeError(
            f"{side.label}: exit status {code}, {len(rows)} of {n} jobs ran, "
            f"{len(sbatch)} sbatch call(s) seen "
            f"(log {log_path}); log tail:\n" + "\n".join(tail)
        )
    spans = [(float(r[0]) - began, float(r[1]) - began) for r in rows]
    jobs = _sacct(name, began, n)
    queries = sorted(c.end for c in slurm_calls if c.name in SCHEDULER_QUERIES)
    done_s = ended - began
    return Measurement(
        side=side,
        trials=n,
        submitted=max(c.end for c in sbatch),
        first_submitted=min(c.end for c in sbatch),
        first_start=min(start for start, _ in spans),
        last_end=max(end for _, end in spans),
        task_mean=sum(end - start for start, end in spans) / n,
        done=done_s,
        sweep_cpu=cpu,
        submit_cpu=max(sbatch, key=lambda c: c.end).caller_cpu,
        sbatch_calls=len(sbatch),
        sbatch_seconds=sum(c.end - c.start for c in sbatch),
        arrays=len({job_id.split("_")[0] for job_id, _ in jobs if "_" in job_id}),
        single_jobs=sum("_" not in job_id for job_id, _ in jobs),
        slurm_jobs=len(jobs),
        completed=sum(state == "COMPLETED" for _, state in jobs),
        sacct_calls=sum(c.name == "sacct" for c in slurm_calls),
        other_calls=sum(c.name not in ("sbatch", "sacct") for c in slurm_calls),
        foreign_jobs=_foreign_jobs(name, began, ended),
        squeue_calls=sum(c.name == "squeue" for c in slurm_calls),
        scontrol_calls=sum(c.name == "scontrol" for c in slurm_calls),
        scheduler_calls_per_minute=len(queries) / (done_s / 60.0) if done_s > 0 else 0.0,
        scheduler_calls_max_per_minute=_most_in_a_minute(queries),
    )


def _most_in_a_minute(times: list[float]) -> int:
    """The most of these (sorted) times that fall within any 60 s.

    >>> _most_in_a_minute([0.0, 10.0, 59.0, 61.0, 200.0])
    3
    """
    most, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= 60.0:
            first += 1
        most = max(most, last - first + 1)
    return most


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _read_calls(path: Path, began_wall: float) -> list[SlurmCall]:
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        name, start, end, status, ticks = line.split()
        calls.append(
            SlurmCall(
                name,
                float(start) - began_wall,
                float(end) - began_wall,
                int(status),
                int(ticks) / CLOCK_TICKS,
            )
        )
    return calls


def _sacct_lines(*arguments: str) -> list[list[str]]:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


def _sacct(name: str, began_wall: float, n: int) -> list[tuple[str, str]]:
    """``(job id, state)`` of every job (array task) named ``name`` since ``began_wall``.

    slurmdbd records jobs a moment after they end: wait (up to a minute) for ``n`` of them.
    """
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(began_wall - 60))
    deadline = time.monotonic() + SACCT_WAIT_S
    while True:
        rows = _sacct_lines("-S", start, "--name", name, "-o", "JobID,State")
        jobs = [(row[0], row[1].split(" ")[0]) for row in rows]
        ended = [job for job in jobs if job[1] not in ("PENDING", "RUNNING", "REQUEUED")]
        if len(ended) >= n or time.monotonic() > deadline:
            return jobs
        time.sleep(1.0)


def _foreign_jobs(name: str, began_wall: float, ended_wall: float) -> int:
    """Jobs of other names that ran on the cluster between ``began_wall`` and ``ended_wall``."""
    fmt = "%Y-%m-%dT%H:%M:%S"
    rows = _sacct_lines(
        "-a",
        "-S",
        time.strftime(fmt, time.localtime(began_wall)),
        "-E",
        time.strftime(fmt, time.localtime(ended_wall)),
        "-s",
        "R,CD,F,CA,TO,NF,PR,OOM",
        "-o",
        "JobID,JobName",
    )
    return sum(row[1] != name for row in rows)


def _cancel(name: str) -> None:
    subprocess.run(["scancel", "--name", name], check=False, timeout=60)


# -- report ---------------------------------------------------------------------------------------
# (label, Measurement attribute, whether the ratio detflow / submitit means something)
ROWS: tuple[tuple[str, str, bool], ...] = (
    ("first sbatch returned (s)", "first_submitted", True),
    ("all N submitted: last sbatch returned (s)", "submitted", True),
    ("time inside sbatch, all calls (s)", "sbatch_seconds", True),
    ("first job starts (s)", "first_start", True),
    ("last job ends (s)", "last_end", True),
    ("  a task function's mean time (s)", "task_mean", True),
    ("all done: the sweep exits (s)", "done", True),
    ("CPU of the sweep (+ its Slurm commands) (s)", "sweep_cpu", True),
    ("  the sweep's own CPU until all N submitted (s)", "submit_cpu", True),
    ("sbatch calls", "sbatch_calls", True),
    ("job arrays (sacct)", "arrays", False),
    ("jobs outside arrays (sacct)", "single_jobs", False),
    ("Slurm jobs / array tasks (sacct)", "slurm_jobs", False),
    ("  of them COMPLETED", "completed", False),
    ("sacct calls by the sweep", "sacct_calls", True),
    ("squeue calls by the sweep", "squeue_calls", False),
    ("scontrol calls by the sweep", "scontrol_calls", False),
    ("squeue/scontrol/scancel calls", "other_calls", False),
    ("scheduler calls (sacct+squeue+scontrol) per minute", "scheduler_calls_per_minute", True),
    ("  the most in any 60 s", "scheduler_calls_max_per_minute", False),
    ("other jobs on the cluster meanwhile", "foreign_jobs", False),
)


def table(runs: dict[str, list[Measurement]]) -> str:
    """Both sides side by side (medians over the repeats) and the ratio detflow / submitit."""
    sides = [side for side in SIDES if runs.get(side.key)]
    both = len(sides) == len(SIDES)
    header = ["", *(side.label for side in sides), "detflow / submitit" if both else ""]
    body: list[list[str]] = []
    for label, attr, ratio in ROWS:
        medians = {side.key: _median([getattr(m, attr) for m in runs[side.key]]) for side in sides}
        cells = [f"{v:.2f}" if isinstance(v, float) else str(v) for v in medians.values()]
        extra = "-"
        if both and ratio:
            base, ours = medians["submitit"], medians["detflow"]
            extra = f"{ours / base:.2f}x" if base else "-"
        body.append([label, *cells, extra])
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = []
    for row in [header, *body]:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if row is header:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _median(values: list[Any]) -> Any:
    """The median; of integers, the lower one (still an integer)."""
    if all(isinstance(v, int) for v in values):
        return statistics.median_low(values)
    return statistics.median(values)


def side_json(measurements: list[Measurement]) -> dict[str, Any]:
    """One side's figures for ``--json`` (medians over the repeats), times in seconds."""
    fields = {
        "all_submitted_s": "submitted",
        "first_submitted_s": "first_submitted",
        "first_job_starts_s": "first_start",
        "last_job_ends_s": "last_end",
        "task_mean_s": "task_mean",
        "all_done_s": "done",
        "sweep_cpu_s": "sweep_cpu",
        "submit_cpu_s": "submit_cpu",
        "sbatch_calls": "sbatch_calls",
        "sbatch_s": "sbatch_seconds",
        "job_arrays": "arrays",
        "single_jobs": "single_jobs",
        "slurm_jobs": "slurm_jobs",
        "completed": "completed",
        "sacct_calls": "sacct_calls",
        "squeue_calls": "squeue_calls",
        "scontrol_calls": "scontrol_calls",
        "scheduler_calls_per_minute": "scheduler_calls_per_minute",
        "scheduler_calls_max_per_minute": "scheduler_calls_max_per_minute",
        "foreign_jobs": "foreign_jobs",
    }
    out: dict[str, Any] = {
        key: _median([getattr(m, attr) for m in measurements]) for key, attr in fields.items()
    }
    out["trials"] = measurements[0].trials
    out["runs"] = len(measurements)
    return out


def write_json(path: Path, runs: dict[str, list[Measurement]]) -> None:
    """``{"submitit": {...}, "detflow": {...}}``; detflow's also holds its speed-ups."""
    data = {key: side_json(ms) for key, ms in runs.items() if ms}
    if "submitit" in data and "detflow" in data:
        base, ours = data["submitit"], data["detflow"]
        for key in ("all_submitted_s", "all_done_s"):
            ours[f"{key[:-2]}_speedup_vs_submitit"] = base[key] / ours[key] if ours[key] else None
    path.write_text(json.dumps(data, indent=2) + "\n")


def print_profile(path: Path, limit: int) -> None:
    """Where the sweeping process spent its time: cumulative, then own time."""
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit // 2)


def machine() -> str:
    """One line: CPUs, CPU model, Python, Slurm and its node."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    node = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N cpus=%c mem=%mMB"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    version = subprocess.run(
        ["sinfo", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return (
        f"nproc={os.cpu_count()} ({model}), CPython {platform.python_version()}, {version}, "
        f"node {node.splitlines()[0] if node else '?'}, detflow {detflow.__version__}, "
        f"submitit {importlib.metadata.version('submitit')}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="grid size (default 200)")
    parser.add_argument("--partition", default="debug", help="Slurm partition (default debug)")
    parser.add_argument(
        "--sides", default="submitit,detflow", help="comma-separated: submitit,detflow"
    )
    parser.add_argument(
        "--profile", action="store_true", help="run each sweep under cProfile and print it"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per side, alternating; medians shown"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="write both sides' figures here"
    )
    args = parser.parse_args(argv)
    keys = args.sides.split(",")
    sides = [side for side in SIDES if side.key in keys]
    if args.trials < 1 or args.repeats < 1 or not sides or len(sides) != len(set(keys)):
        parser.error("--trials and --repeats must be >= 1; --sides: submitit, detflow or both")
    if (
        "submitit" in keys
        and importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None
    ):
        raise SystemExit("hydra-submitit-launcher is missing: pip install hydra-submitit-launcher")
    check_slurm(args.partition)
    workdir = Path(tempfile.mkdtemp(prefix="detflow-slurm-bench-"))
    (workdir / "app.py").write_text(APP_SOURCE)
    write_wrappers(workdir / "bin")
    print(machine())
    print(f"{args.trials} trials per side, partition {args.partition}, in {workdir}")
    if args.profile:
        print("(under cProfile: the times below are inflated)")
    runs: dict[str, list[Measurement]] = {side.key: [] for side in sides}
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:  # alternate who goes first
            if not wait_idle(IDLE_WAIT_S):
                print(f"warning: Slurm's queue still holds other jobs after {IDLE_WAIT_S:.0f} s")
            print(f"running {side.label} (run {repeat + 1}/{args.repeats}) ...", flush=True)
            tag = f"{side.key}-{args.trials}-{repeat}"
            profile = workdir / f"{tag}.prof" if args.profile else None
            try:
                m = run_side(side, args.trials, workdir, tag, args.partition, profile)
            except RuntimeError as exc:
                print(f"FAILED: {exc}\n(working directory kept: {workdir})", file=sys.stderr)
                return 1
            print(
                f"  submitted at {m.submitted:.1f} s (sweep CPU {m.submit_cpu:.1f} s), jobs ran "
                f"{m.first_start:.1f}-{m.last_end:.1f} s, done at {m.done:.1f} s (sweep CPU "
                f"{m.sweep_cpu:.1f} s); load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            if m.foreign_jobs:
                print(
                    f"  warning: {m.foreign_jobs} other job(s) ran on the cluster meanwhile; "
                    "these times are not clean"
                )
            runs[side.key].append(m)
            if profile is not None:
                print_profile(profile, 30)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    if args.repeats > 1:
        print(f"medians of {args.repeats} runs per side")
    print(table(runs))
    if args.json is not None:
        write_json(args.json, runs)
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
