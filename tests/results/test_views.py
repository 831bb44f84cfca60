"""What a person reads in ``detflow summary / plot / explain``, on sweeps written by hand.

Each fixture is a directory of the files the reader reads (:mod:`tests.results.fakes`): 4 or
50 trials, a categorical key of 16 values, rungs close together, epochs whose last batch is
short.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from detflow._results.cli import main
from detflow._results.plot import RUNGS, SIDE, figure
from detflow._results.reader import SweepDir, load, load_run
from tests.results.fakes import ACTIVATIONS, write_run, write_sweep


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("views")
    return {
        "four": write_sweep(root / "four", 4),
        "fifty": write_sweep(root / "fifty", 50, failed=(3,)),
        "batches": write_sweep(
            root / "batches", 8, rungs=(Fraction(10), Fraction(40)), unit="batches"
        ),
        "rungs": write_sweep(
            root / "rungs", 50, rungs=tuple(Fraction(16, 2**k) for k in range(6, -1, -1))
        ),
        "run": write_run(root / "run"),
    }


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def table(out: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a plain ``detflow summary`` table (cells split on spaces)."""
    lines = out.splitlines()
    rows = [
        line.split() for line in lines[2:] if line.startswith("  ") and line.split()[0].isdigit()
    ]
    return lines[1].split(), rows


# -- summary: headers, --metrics --------------------------------------------------------------
@pytest.mark.parametrize(
    ("sweep", "lengths"),
    [("fifty", ["epochs", "batches"]), ("batches", ["batches"])],
)
def test_summary_headers_are_distinct_with_one_batches_column(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str], sweep: str, lengths: list[str]
) -> None:
    status, out, _ = run(capsys, "summary", sweeps[sweep])
    assert status == 0
    headers, _ = table(out)
    assert len(headers) == len(set(headers)), headers
    assert headers[:6] == ["trial", "status", "rung", "lr", "dropout", "act"]  # search order
    at = headers.index("validation_loss")
    assert headers[at - len(lengths) : at] == lengths
    assert headers[at + 1] == "best"


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        ((), ["validation_accuracy"]),  # by default: the other metrics the trials report
        (("--metrics", "validation_accuracy"), ["validation_accuracy"]),
        (("--metrics", "validation_loss"), []),  # searcher.metric is always there, once
        (("--metrics", "validation_accuracy,validation_loss"), ["validation_accuracy"]),
    ],
)
def test_summary_metrics_columns(
    sweeps: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    extra: list[str],
) -> None:
    status, out, _ = run(capsys, "summary", sweeps["four"], *args)
    assert status == 0
    headers, rows = table(out)
    assert headers[headers.index("best") + 1 :] == extra
    if extra:
        trial = rows[0][0]
        result = json.loads((sweeps["four"] / trial / "result.json").read_text())
        shown = float(rows[0][headers.index("validation_accuracy")])
        assert shown == pytest.approx(result["validation"]["validation_accuracy"], rel=1e-3)


def test_summary_metrics_names_what_was_reported_when_one_is_not(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "summary", sweeps["four"], "--metrics", "accuracy")
    assert (status, out) == (2, "")
    assert err == (
        "detflow summary: error: --metrics accuracy: no trial reported accuracy; "
        "the trials report validation_loss, validation_accuracy\n"
    )


def test_summary_csv_and_json_keep_their_fields_and_add_metrics(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fields = ["trial_id", "status", "rung", "hyperparameters.lr", "hyperparameters.dropout"]
    fields += ["hyperparameters.act", "length_epochs", "batches", "metric", "best_metric"]
    fields += ["restarts", "error", "dir"]
    _, out, _ = run(capsys, "summary", sweeps["four"], "--csv")
    assert next(csv.reader(io.StringIO(out))) == [*fields, "validation_accuracy"]
    _, out, _ = run(capsys, "summary", sweeps["four"], "--csv", "--metrics", "validation_loss")
    assert next(csv.reader(io.StringIO(out))) == fields
    _, out, _ = run(capsys, "summary", sweeps["four"], "--json")
    trial = json.loads(out)["trials"][0]
    assert set(trial) == {
        "trial_id", "status", "rung", "hparams", "length", "batches", "metric", "best_metric",
        "restarts", "error", "dir", "validation",
    }  # fmt: skip
    assert set(trial["validation"]) == {"validation_loss", "validation_accuracy"}


# -- one meaning of "best" ---------------------------------------------------------------------
def test_best_is_the_best_validation_in_the_table_the_footer_and_the_run(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each trial's ``best`` is its run's best_metric (its best validation, not its best rung
    end); trials rank by rung reached, then best; the footer names the first row."""
    sweep_dir = sweeps["fifty"]
    _, out, _ = run(capsys, "summary", sweep_dir)
    headers, rows = table(out)
    best_at = headers.index("best")
    ranked = []
    for row in rows:
        trial_dir = sweep_dir / row[0]
        result = load_run(trial_dir).result
        if result is None:  # the failed trial: last, no best
            assert row is rows[-1] and row[1] == "FAILED"
            continue
        assert float(row[best_at]) == pytest.approx(result["best_metric"], rel=1e-3)
        if row[1] == "COMPLETED":  # their loss rises at the end: the best is not the last
            assert result["best_metric"] < result["metric"]
        ranked.append((-int(row[2]), result["best_metric"], int(row[0])))
    assert ranked == sorted(ranked)
    top = rows[0]
    footer = next(line for line in out.splitlines() if line.startswith("best: "))
    assert footer.startswith(f"best: trial {top[0]} (lr={top[3]} dropout={top[4]} act={top[5]}), ")
    assert f", validation_loss {top[best_at]}, trained 160 batches (16 epochs)" in footer
    _, run_out, _ = run(capsys, "summary", sweep_dir / top[0])  # the trial's own summary
    metric_row = next(line.split() for line in run_out.splitlines() if "searcher.metric" in line)
    assert metric_row[2] == top[best_at]


# -- plot ----------------------------------------------------------------------------------------
def side_panel(fig: Any) -> Any:
    return next(ax for ax in fig.axes if ax.get_label() == SIDE)


def colour_bars(fig: Any) -> list[Any]:
    return list(side_panel(fig).child_axes)  # the bar's axes sit in the side panel


@pytest.mark.parametrize(
    ("color_by", "kind", "title", "entries"),
    [
        (None, "bar", "colour: lr", None),  # the first key in search order, not act
        ("lr", "bar", "colour: lr", None),
        ("hyperparameters.act", "legend", "colour: act", len(ACTIVATIONS)),
        ("act", "legend", "colour: act", len(ACTIVATIONS)),
        ("dropout", "legend", "colour: dropout", 3),
        ("metric", "bar", "colour: best validation_loss", None),
    ],
)
def test_plot_colours_by_a_key_with_a_key_that_reads_at_50_trials(
    sweeps: dict[str, Path], color_by: str | None, kind: str, title: str, entries: int | None
) -> None:
    sweep = load(sweeps["fifty"])
    assert isinstance(sweep, SweepDir)
    fig = figure(sweep, color_by=color_by)
    fig.canvas.draw()
    side = side_panel(fig)
    width = fig.get_window_extent().width
    assert side.get_window_extent().width < 0.25 * width  # the curves keep the figure
    legend = side.get_legend()
    if kind == "bar":
        (bar,) = colour_bars(fig)
        assert bar.get_ylabel() == title and legend is None
        return
    assert not colour_bars(fig)
    assert legend.get_title().get_text() == title
    colours = [tuple(line.get_color()) for line in legend.get_lines()]
    assert len(colours) == entries and len(set(colours)) == entries  # no colour twice
    box = legend.get_window_extent()
    assert box.x0 >= side.get_window_extent().x0 - 1 and box.x1 <= width  # outside the axes


def test_plot_rung_labels_never_overlap_and_the_top_rung_is_named(
    sweeps: dict[str, Path],
) -> None:
    sweep = load(sweeps["rungs"])
    assert isinstance(sweep, SweepDir)
    fig = figure(sweep)
    fig.canvas.draw()
    (axis,) = [ax for ax in fig.axes[0].child_axes if ax.get_label() == RUNGS]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels = [t for t in axis.get_xticklabels() if t.get_text()]
    assert labels[-1].get_text() == "16"
    assert 3 <= len(labels) < len(sweep.rung_lengths)  # rungs 1/8 and 1/4 epoch: too close
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 <= b.x0 for a, b in itertools.pairwise(boxes))


def test_plot_labels_each_of_a_few_curves_apart(sweeps: dict[str, Path]) -> None:
    sweep = load(sweeps["four"])
    assert isinstance(sweep, SweepDir)
    fig = figure(sweep)
    fig.canvas.draw()
    top = fig.axes[0]
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    names = {t.get_text(): t.get_window_extent(renderer) for t in top.texts}
    best = sweep.best
    assert best is not None
    assert set(names) == {f"{t.trial_id}" + (" best" if t is best else "") for t in sweep.trials}
    boxes = list(names.values())
    for i, a in enumerate(boxes):
        assert not any(a.overlaps(b) for b in boxes[i + 1 :])


@pytest.mark.parametrize("sweep", ["four", "fifty"])
def test_plot_writes_the_png(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, sweep: str
) -> None:
    out = tmp_path / f"{sweep}.png"
    status, printed, _ = run(capsys, "plot", sweeps[sweep], "-o", out)
    assert (status, printed) == (0, f"wrote {out}\n")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 40_000


def test_plot_color_by_a_key_not_swept_is_one_line_exit_2(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(
        capsys, "plot", sweeps["four"], "-o", tmp_path / "x.png", "--color-by", "momentum"
    )
    assert (status, out) == (2, "")
    assert err == (
        "detflow plot: error: --color-by = 'momentum' is not valid: expected a swept key, "
        "metric or trial: one of lr, dropout, act, metric, trial\n"
    )
    assert not (tmp_path / "x.png").exists()


# -- explain: records as trained ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "cells"),
    [  # 1438 records an epoch: 44 batches of 32 and one of 30
        ("searcher.max_length", ["5", "epochs", "7190", "225", "225", "5"]),
        ("min_validation_period", ["1", "epochs", "1438", "45", "45", "1"]),
        ("min_checkpoint_period", ["100", "batches", "3196", "100", "100", "2.222"]),
        ("trained (completed)", ["7190", "225", "225", "5"]),
    ],
)
def test_explain_counts_the_records_the_run_trained(
    sweeps: dict[str, Path], capsys: pytest.CaptureFixture[str], row: str, cells: list[str]
) -> None:
    status, out, _ = run(capsys, "explain", sweeps["run"])
    assert status == 0
    line = next(x for x in out.splitlines() if x.strip().startswith(row))
    assert line.split()[-len(cells) :] == cells
    assert "records: batches x global_batch_size" not in out  # counted, not nominal


def test_explain_says_when_records_are_nominal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = write_run(tmp_path / "run")
    result = json.loads((run_dir / "result.json").read_text())
    (run_dir / "result.json").unlink()  # still running: nothing counted per epoch yet
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"kind": "train", "records": 320, "batches": 10, "metrics": {}}) + "\n"
    )
    status, out, _ = run(capsys, "explain", run_dir)
    assert status == 0 and result["records"] == 7190
    assert "records: batches x global_batch_size until the run has trained an epoch" in out
    trained = next(x for x in out.splitlines() if "trained so far" in x)
    assert trained.split()[3:5] == ["320", "10"]
