"""``detflow summary / plot / explain`` on real run and sweep directories made by train.py."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from detflow._core.artifacts import SweepState
from detflow._harness import tensorboard as _tensorboard
from detflow._results.cli import main, render_rich, sweep_summary
from detflow._results.reader import SweepDir, load
from tests.support import REPO, read_metrics

ASHA = [
    "searcher.name=asha",
    "searcher.max_trials=6",
    "searcher.max_rungs=3",
    "searcher.divisor=2",
    "searcher.max_concurrent_trials=2",
    "min_validation_period=8 batches",
    "hyperparameters.lr=tag(log, interval(0.003, 0.3))",
]
GRID = [  # two of four trials fail at batch 40
    "searcher.name=grid",
    "searcher.max_concurrent_trials=2",
    "searcher.max_length=2 epochs",
    "hyperparameters.lr=choice(0.02,0.1)",
    "hyperparameters.fail_at_batch=choice(0,40)",
]


@dataclass(frozen=True)
class Made:
    asha: Path
    asha_log: str
    grid: Path
    run: Path
    other: Path


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), _tensorboard.ENV: "0"}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Made]:
    """A real ASHA sweep, a grid sweep with failures and a single run, made concurrently."""
    root = tmp_path_factory.mktemp("cli")
    jobs = {
        "asha": ["-m", "+experiment=quadratic", *ASHA, f"hydra.sweep.dir={root / 'asha'}"],
        "grid": ["-m", "+experiment=quadratic", *GRID, f"hydra.sweep.dir={root / 'grid'}"],
        "run": [  # lr = 0.05 x linear(k=16x1/8); momentum given in train.py's code
            "+experiment=quadratic",
            "hyperparameters.global_batch_size=16",
            f"hydra.run.dir={root / 'run'}",
        ],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(REPO / "train.py"), *args],
            cwd=root,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in jobs.items()
    }
    logs = {name: proc.communicate(timeout=180)[0] for name, proc in procs.items()}
    assert procs["asha"].returncode == 0, logs["asha"]
    assert procs["grid"].returncode == 1, logs["grid"]  # failed trials: the sweep says so
    assert procs["run"].returncode == 0, logs["run"]
    other = root / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("hello\n")
    yield Made(root / "asha", logs["asha"], root / "grid", root / "run", other)


def detflow(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "detflow._results.cli", *map(str, args)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def table_rows(stdout: str) -> list[list[str]]:
    """The body rows of a plain table: the lines that start with a trial id."""
    return [line.split() for line in stdout.splitlines() if re.match(r"^\s+\d+\s", line)]


def searcher_ranking(sweep: Path) -> list[int]:
    """The order ``searcher.best()`` implies: furthest rung reported first, then the trial's
    best metric (at any validation: its run's ``best_metric``)."""
    state = json.loads((sweep / "searcher.json").read_text())["searcher"]
    keyed = []
    for trial in state["trials"]:
        rung, _ = max(trial["metrics"])
        best = json.loads((sweep / str(trial["trial_id"]) / "result.json").read_text())
        assert trial["best"] == best["best_metric"]
        keyed.append((-rung, trial["best"], trial["trial_id"]))
    return [trial_id for _, _, trial_id in sorted(keyed)]


def sweep_lines(log: str) -> list[str]:
    """The sweep's own log lines (Hydra's ``[time][HYDRA] ...``), without the prefix."""
    return [line.split("] ", 1)[1] for line in log.splitlines() if "][HYDRA] " in line]


# -- summary ---------------------------------------------------------------------------------
def test_summary_ranks_a_sweep_best_first_as_the_searcher_does(made: Made) -> None:
    done = detflow("summary", made.asha)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"sweep {made.asha}: asha on validation_loss (smaller is better)")
    assert lines[1].split() == [
        "trial",
        "status",
        "rung",
        "lr",
        "epochs",
        "batches",
        "validation_loss",
        "best",
    ]
    rows = table_rows(done.stdout)
    assert [int(r[0]) for r in rows] == searcher_ranking(made.asha)
    assert rows[0][1] == "COMPLETED" and rows[0][4] == "4"  # trained the full 4 epochs
    assert {r[4] for r in rows} <= {"1", "2", "4"}  # the rungs' lengths, in epochs
    # One meaning of best: the sweep's closing line is the summary's, word for word.
    (logged,) = [line for line in sweep_lines(made.asha_log) if line.startswith("best: ")]
    assert logged in lines
    assert logged.startswith(f"best: trial {rows[0][0]} (lr={rows[0][3]}), validation_loss ")
    assert logged.endswith(f"validation_loss {rows[0][7]}, trained {rows[0][5]} batches (4 epochs)")


def test_sweep_lines_write_numbers_short_and_lengths_in_whole_batches(made: Made) -> None:
    lines = sweep_lines(made.asha_log)
    for line in lines:  # no 17-digit floats, no fraction of a batch
        for number in re.findall(r"\d+\.\d+(?:e-?\d+)?", line):
            assert len(number.split("e")[0].replace(".", "").lstrip("0")) <= 6, line
    starts = [line for line in lines if re.match(r"(starting|promoting) trial", line)]
    assert starts and all(
        re.fullmatch(r"(starting|promoting) trial \d+ to [124] epochs? lr=[\d.e-]+", line)
        for line in starts
    ), starts  # the quadratic's epoch is known to the trial only: the unit alone
    reached = [line for line in lines if re.match(r"trial \d+ reached", line)]
    assert reached and all(
        re.fullmatch(
            r"trial \d+ reached (32 batches \(1 epoch\)|64 batches \(2 epochs\)"
            r"|128 batches \(4 epochs\)): validation_loss=[\d.e-]+",
            line,
        )
        for line in reached
    ), reached
    assert lines[0].startswith(
        "asha search: 6 trials planned, up to 2 at once, max_length 4 epochs, "
        "rungs at 1, 2, 4 epochs, in "
    )


def test_summary_puts_failed_trials_last_with_their_error(made: Made) -> None:
    done = detflow("summary", made.grid)
    assert done.returncode == 0, done.stderr
    assert "4 trials: 2 completed, 2 failed" in done.stdout.splitlines()[0]
    rows = table_rows(done.stdout)
    assert [r[1] for r in rows] == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    assert float(rows[0][6]) <= float(rows[1][6])  # validation_loss, smaller first
    failed = [line for line in done.stdout.splitlines() if " FAILED " in line]
    assert all(line.rstrip().endswith("TrialError: loss is nan at batch 40") for line in failed)
    assert all(r[4] == "32" for r in rows[2:])  # batches reached before failing


def test_summary_csv_and_json_are_for_scripts(made: Made) -> None:
    as_csv = detflow("summary", made.asha, "--csv")
    as_json = detflow("summary", made.asha, "--json")
    assert as_csv.returncode == 0 and as_json.returncode == 0
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    data = json.loads(as_json.stdout)
    assert [int(r["trial_id"]) for r in rows] == [t["trial_id"] for t in data["trials"]]
    assert [t["trial_id"] for t in data["trials"]] == searcher_ranking(made.asha)
    assert data["best_trial"] == data["trials"][0]["trial_id"]
    assert (data["metric"], data["smaller_is_better"], data["unit"]) == (
        "validation_loss",
        True,
        "epochs",
    )
    assert data["rung_lengths"] == [1, 2, 4]
    first = rows[0]
    assert set(first) >= {"hyperparameters.lr", "length_epochs", "metric", "best_metric", "dir"}
    assert float(first["hyperparameters.lr"]) == data["trials"][0]["hparams"]["hyperparameters.lr"]
    assert float(first["metric"]) == data["trials"][0]["metric"]  # full precision


def test_summary_of_a_run_shows_its_final_metrics(made: Made) -> None:
    done = detflow("summary", made.run)
    assert done.returncode == 0, done.stderr
    result = json.loads((made.run / "result.json").read_text())
    first, *rest = done.stdout.splitlines()
    assert first == (
        f"run {made.run}: completed, 4 epochs trained (1024 records, 64 batches, 64 steps)"
    )
    metric_row = next(line.split() for line in rest if line.split()[0] == "validation_loss")
    assert float(metric_row[1]) == pytest.approx(result["metric"], rel=1e-3)
    assert any(line.split()[0] == "loss" and "training" in line for line in rest)
    data = json.loads(detflow("summary", made.run, "--json").stdout)
    assert data["validation"]["validation_loss"] == result["metric"]


def test_summary_reads_a_sweep_that_is_still_running(made: Made, tmp_path: Path) -> None:
    """State as a live sweep leaves it: a trial in flight, no results.csv yet, a cut line."""
    sweep = tmp_path / "live"
    shutil.copytree(made.asha, sweep)
    (sweep / "results.csv").unlink()
    state = SweepState.read(sweep / "searcher.json")  # as the sweeper would have saved it
    assert state is not None
    running = state["trials"][-1]
    running["metrics"], running["length_trained"] = [], "0/1"
    state["in_flight"] = [running["trial_id"]]
    SweepState.write(sweep / "searcher.json", state)
    metrics = sweep / str(running["trial_id"]) / "metrics.jsonl"
    (metrics.parent / "result.json").unlink()
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # a report cut short
    done = detflow("summary", sweep)
    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout)
    assert len(rows) == len(state["trials"])
    live = next(r for r in rows if r[0] == str(running["trial_id"]))
    assert live[1] == "RUNNING" and live[-1] == str(json.loads(lines[2])["batches"])
    assert "1 running" in done.stdout.splitlines()[0]


def test_summary_of_another_sweepers_directory_reads_its_run_dirs(
    made: Made, tmp_path: Path
) -> None:
    sweep = tmp_path / "basic"
    shutil.copytree(made.grid, sweep)
    for name in ("results.csv", "searcher.json"):
        (sweep / name).unlink()
    sweep_dir = load(sweep)
    assert isinstance(sweep_dir, SweepDir)
    assert [t.status for t in sweep_dir.trials] == ["COMPLETED", "COMPLETED", "RUNNING", "RUNNING"]
    assert sweep_dir.keys == ["hyperparameters.lr", "hyperparameters.fail_at_batch"]


# -- plot ------------------------------------------------------------------------------------
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plot_draws_every_trial_into_a_png(made: Made, tmp_path: Path) -> None:
    out = tmp_path / "curves.png"
    done = detflow("plot", made.asha, "-o", out)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out}"
    width, height = png_size(out)
    assert width >= 1000 and height >= 600
    assert out.stat().st_size > 40_000  # curves, text and colour, not an empty canvas


def test_plot_options_and_a_single_run(made: Made, tmp_path: Path) -> None:
    grid = tmp_path / "grid.png"
    done = detflow("plot", made.grid, "-o", grid, "--x", "epochs", "--log")
    assert done.returncode == 0, done.stderr
    assert png_size(grid)[0] >= 1000
    done = detflow("plot", made.run)  # default output: RUN_DIR/curves.png
    assert done.returncode == 0, done.stderr
    assert png_size(made.run / "curves.png")[0] >= 800
    bad = detflow("plot", made.run, "--x", "minutes")
    assert bad.returncode == 2 and "invalid choice: 'minutes'" in bad.stderr


# -- explain ---------------------------------------------------------------------------------
def test_explain_shows_values_sources_derivations_and_lengths(made: Made) -> None:
    done = detflow("explain", made.run)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"run {made.run} (quadratic): completed, validation_loss ")

    def line(start: str) -> str:
        return next(x for x in lines if x.strip().startswith(start))

    assert re.fullmatch(r"\s+lr = 0\.1 = 0\.05 x linear\(k=16x1/8\)\s+config", line("lr ="))
    assert re.fullmatch(r"\s+momentum = 0\.9\s+code", line("momentum ="))
    assert re.fullmatch(r"\s+global_batch_size = 16\s+override", line("global_batch_size ="))
    assert re.fullmatch(r"\s+base_batch_size = 8\s+config", line("base_batch_size ="))
    assert lines[lines.index(line("lengths")) + 1].split() == [
        "length",
        "given",
        "records",
        "batches",
        "steps",
        "epochs",
    ]
    assert "16 batches per epoch" in line("lengths")
    max_length = ["searcher.max_length", "4", "epochs", "1024", "64", "64", "4"]
    assert line("searcher.max_length").split() == max_length
    assert line("min_validation_period").split()[-4:] == ["256", "16", "16", "1"]
    assert line("trained (completed)").split()[-4:] == ["1024", "64", "64", "4"]


def test_explain_a_sweep_trial_names_the_searcher_and_its_rung(made: Made) -> None:
    data = json.loads(detflow("summary", made.asha, "--json").stdout)
    short = next(t for t in data["trials"] if t["length"] == 1)
    done = detflow("explain", short["dir"])
    assert done.returncode == 0, done.stderr
    lr = next(x for x in done.stdout.splitlines() if x.strip().startswith("lr ="))
    assert lr.split()[-1] == "searcher"
    target = next(x for x in done.stdout.splitlines() if "target (this job)" in x)
    assert target.split()[3:] == ["1", "epochs", "256", "32", "32", "1"]


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["summary", "plot", "explain"])
def test_a_directory_that_is_not_a_run_or_sweep_is_one_line_exit_2(
    made: Made, command: str
) -> None:
    done = detflow(command, made.other)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        f"detflow {command}: error: {made.other} is not a run or sweep directory "
        "(it has none of hparams.json"
    )
    assert "python train.py" in done.stderr  # what is accepted


def test_errors_for_a_missing_path_and_explain_on_a_sweep(made: Made) -> None:
    missing = detflow("summary", made.other / "nope")
    assert missing.returncode == 2
    assert f"{made.other / 'nope'} does not exist" in missing.stderr
    sweep = detflow("explain", made.asha)
    assert sweep.returncode == 2 and sweep.stderr.count("\n") == 1
    listed = detflow("summary", made.asha, "--json")
    assert listed.returncode == 0, listed.stderr
    best = json.loads(listed.stdout)["best_trial"]
    assert f"explain takes one trial's run directory, e.g. {made.asha / str(best)}" in sweep.stderr


# -- in process: rich rendering and the entry point ------------------------------------------
def test_rich_table_on_a_terminal(made: Made) -> None:
    import rich.console as rich_console

    sweep = load(made.grid)
    assert isinstance(sweep, SweepDir)
    title, headers, rows, footer = sweep_summary(sweep)
    out = io.StringIO()
    console = rich_console.Console(file=out, width=160, color_system=None)
    render_rich(console, title, headers, rows, footer, [None] * len(rows))
    text = out.getvalue()
    assert text.splitlines()[0] == title
    assert "validation_loss" in text and "TrialError: loss is nan at batch 40" in text
    assert text.index("COMPLETED") < text.index("FAILED")


def test_main_returns_the_exit_status(made: Made, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", str(made.run), "--csv"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "metric,value,kind"
    assert main(["explain", str(made.other)]) == 2
    assert "is not a run or sweep directory" in capsys.readouterr().err


def test_plot_without_matplotlib_says_what_to_install(
    made: Made, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    assert main(["plot", str(made.run), "-o", str(made.other / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detflow plot: error: plot needs matplotlib: pip install")
    assert err.count("\n") == 1


# -- tensorboard -----------------------------------------------------------------------------
def test_tensorboard_writer_is_off_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_tensorboard.ENV, "0")
    assert _tensorboard.open_writer(tmp_path) is None
    assert not (tmp_path / _tensorboard.SUBDIR).exists()


def test_tensorboard_scalars_against_batches_and_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tensorboard.backend.event_processing import event_accumulator as accumulator

    monkeypatch.delenv(_tensorboard.ENV, raising=False)
    writer = _tensorboard.open_writer(tmp_path)
    assert writer is not None
    writer.write("train", {"loss": 1.0, "skipped": float("nan")}, batches=10)
    writer.write("validation", {"validation_loss": 0.5}, batches=10)
    writer.write("train", {"loss": 0.5}, batches=20)  # lost: the run resumes from batch 10
    writer.close()
    resumed = _tensorboard.open_writer(tmp_path, start_batches=10)
    assert resumed is not None
    resumed.write("train", {"loss": 0.25}, batches=20)
    resumed.close()
    events = accumulator.EventAccumulator(str(tmp_path / _tensorboard.SUBDIR))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train/loss", "validation/validation_loss"]
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(10, 1.0), (20, 0.25)]


def test_a_run_writes_tensorboard_events_when_tensorboard_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness's hook (``Run.fit``/``_report``): scalars per report against batches."""
    from tensorboard.backend.event_processing import event_accumulator as accumulator

    import detflow
    from trials.quadratic import QuadraticTrial

    monkeypatch.delenv(_tensorboard.ENV, raising=False)
    config = {
        "hyperparameters": {"global_batch_size": 8, "lr": 0.05},
        "searcher": {"max_length": "2 epochs"},
        "min_validation_period": "16 batches",
    }
    run = detflow.init(config, run_dir=tmp_path)
    run.fit(QuadraticTrial(run))
    events = accumulator.EventAccumulator(str(tmp_path / _tensorboard.SUBDIR))
    events.Reload()
    steps = [e.step for e in events.Scalars("validation/validation_loss")]
    assert steps == [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"]
    assert steps == [16, 32, 48, 64]
    assert "train/loss" in events.Tags()["scalars"]


def test_event_file_records_carry_tensorboard_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each record: length, masked CRC-32C of it, the Event, masked CRC-32C of the Event."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    monkeypatch.delenv(_tensorboard.ENV, raising=False)
    writer = _tensorboard.open_writer(tmp_path, start_batches=5)
    assert writer is not None
    writer.write("train", {"loss": 0.125, "flag": True, "text": "x"}, batches=7, wall_time=3.5)
    writer.close()
    (path,) = (tmp_path / _tensorboard.SUBDIR).iterdir()
    data, events = path.read_bytes(), []
    while data:
        (length,) = struct.unpack("<Q", data[:8])
        assert struct.unpack("<I", data[8:12])[0] == masked_crc32c(data[:8])
        payload = data[12 : 12 + length]
        assert struct.unpack("<I", data[12 + length : 16 + length])[0] == masked_crc32c(payload)
        events.append(event_pb2.Event.FromString(payload))
        data = data[16 + length :]
    assert events[0].file_version == "brain.Event:2"
    assert (events[1].step, events[1].session_log.status) == (6, event_pb2.SessionLog.START)
    (value,) = events[2].summary.value
    assert (events[2].step, events[2].wall_time, value.tag, value.simple_value) == (
        7,
        3.5,
        "train/loss",
        0.125,
    )


def test_a_run_does_not_import_tensorboard(tmp_path: Path) -> None:
    """Writing the event files must not cost a trial tensorboard's ~0.35 s import."""
    script = (
        "import sys, detflow\n"
        "from trials.quadratic import QuadraticTrial\n"
        "cfg = {'hyperparameters': {'global_batch_size': 8, 'lr': 0.05},"
        " 'searcher': {'max_length': '2 batches'}}\n"
        f"run = detflow.init(cfg, run_dir={str(tmp_path)!r})\n"
        "run.fit(QuadraticTrial(run))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(_tensorboard.ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert any((tmp_path / _tensorboard.SUBDIR).iterdir())
