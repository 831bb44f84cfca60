"""The ``detflow`` command: ``summary``, ``plot`` and ``explain`` of run and sweep directories,
``status`` and ``cancel`` of a sweep and its Slurm jobs, ``import-determined`` of a
Determined AI experiment config.

Examples
--------
A shell session after ``python train.py -m +experiment=digits_asha``::

    detflow summary multirun/2024-05-01/12-00-00          # trials, best first
    detflow summary multirun/2024-05-01/12-00-00 --json   # the same, for scripts
    detflow plot multirun/2024-05-01/12-00-00 -o curves.png
    detflow explain multirun/2024-05-01/12-00-00/3        # one trial: values and sources

From Python, :func:`main` takes the arguments and returns the exit status:

>>> main(["summary", "/nonexistent/sweep"])
2
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from detflow._core.artifacts import TrialStatus
from detflow._core.errors import ConfigError, NotResultsError
from detflow._core.text import short_names
from detflow._core.units import Unit
from detflow._results.reader import (
    UNFINISHED,
    RunDir,
    SweepDir,
    TrialSummary,
    format_number,
    format_table,
    load,
)
from detflow._search.driver import best_line, length_text

__all__ = ["main", "run_summary", "sweep_summary"]

_STATUS_ORDER = (
    TrialStatus.COMPLETED,
    TrialStatus.STOPPED_EARLY,
    TrialStatus.PENDING,
    TrialStatus.RUNNING,
    TrialStatus.FAILED,
)


class CommandError(Exception):
    """A problem the command reports in one line (exit status 2), not with a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``detflow`` with ``argv`` (``sys.argv[1:]`` by default); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.handler(args)
    except (NotResultsError, CommandError) as exc:
        print(f"detflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # ``detflow summary DIR | head``: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detflow",
        description="See and compare detflow runs and sweeps without reading their files.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    summary = commands.add_parser(
        "summary",
        help="a sweep's trials, best first (or a run's final metrics)",
        description="A sweep directory: its trials, best first by searcher.metric, failures "
        "last. A run directory: its final metrics. Works while a sweep is still running.",
    )
    summary.add_argument("dir", type=Path, help="a sweep or run directory")
    fmt = summary.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV on stdout, for scripts")
    fmt.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")
    summary.add_argument(
        "--metrics",
        type=_names,
        metavar="A,B",
        help="validation metrics to show beside searcher.metric and its best (default: the "
        f"others the trials report, up to {_DEFAULT_METRICS} columns in all)",
    )
    summary.set_defaults(handler=_summary)

    plot = commands.add_parser(
        "plot",
        help="learning curves of every trial, ASHA rungs marked (PNG)",
        description="Validation metric and training loss of every trial against training "
        "length, ASHA rungs as vertical lines, the best trial highlighted. Needs matplotlib.",
    )
    plot.add_argument("dir", type=Path, help="a sweep or run directory")
    plot.add_argument(
        "-o", "--output", type=Path, help="the image to write (default: DIR/curves.png)"
    )
    plot.add_argument(
        "--x",
        choices=[u.value for u in Unit],
        help="the x axis unit (default: batches; the searcher's unit when the trials differ "
        "in batch size)",
    )
    scale = plot.add_mutually_exclusive_group()
    scale.add_argument("--log", action="store_true", help="log y scale")
    scale.add_argument("--linear", action="store_true", help="linear y scale")
    plot.add_argument("--title", help="the figure's title (default: the directory and search)")
    plot.add_argument(
        "--color-by",
        metavar="KEY",
        help="colour the curves by this swept hyperparameter (lr or hyperparameters.lr), "
        "by 'metric' (each trial's best) or by 'trial' (each its own colour); default: "
        "'trial' for a pbt sweep, else the first swept hyperparameter in the search's "
        "order, else the metric",
    )
    plot.set_defaults(handler=_plot)

    explain = commands.add_parser(
        "explain",
        help="every hyperparameter of a run: value, source, derivation; its lengths",
        description="Every hyperparameter with its value and source layer (default, config, "
        "code, override, searcher), scaled values with the rule and inputs that made them, "
        "and the run's lengths in records, batches, steps and epochs.",
    )
    explain.add_argument("dir", type=Path, help="a run directory (one trial of a sweep)")
    explain.set_defaults(handler=_explain)

    new = commands.add_parser(
        "new",
        help="write a small working project into a new or empty directory",
        description="Write a project that runs and sweeps as written: train.py (the script, "
        "detflow's root config), experiments.py, trial.py (a trial with no dependencies) "
        "and README.md with its commands. Refuses a directory that holds anything.",
    )
    new.add_argument("dir", type=Path, help="the project's directory (created if missing)")
    new.set_defaults(handler=_new)
    _add_import_determined(commands)
    _add_status_and_cancel(commands)
    return parser


# -- summary ---------------------------------------------------------------------------------
def _summary(args: argparse.Namespace) -> int:
    target = load(args.dir)
    out = sys.stdout
    if isinstance(target, SweepDir):
        metrics = _metric_columns(target, args.metrics)
        if args.json:
            json.dump(_sweep_json(target), out, indent=2)
            out.write("\n")
        elif args.csv:
            out.write(_sweep_csv(target, metrics))
        else:
            title, headers, rows, footer = sweep_summary(target, metrics)
            styles = [_row_style(t, target) for t in target.trials]
            _print_table(out, title, headers, rows, footer, styles)
        return 0
    if args.json:
        json.dump(_run_json(target), out, indent=2)
        out.write("\n")
    elif args.csv:
        out.write(_run_csv(target))
    else:
        title, headers, rows, footer = run_summary(target)
        _print_table(out, title, headers, rows, footer, [None] * len(rows))
    return 0


def sweep_summary(
    sweep: SweepDir, metrics: Sequence[str] = ()
) -> tuple[str, list[str], list[list[str]], list[str]]:
    """The title, header, rows (best first) and closing lines of ``detflow summary SWEEP``.

    ``metrics`` are more validation metrics to show, after ``searcher.metric`` (at the end
    of the trial's furthest rung) and ``best`` (its best at any validation, which it ranks
    by).

    Examples
    --------
    >>> from pathlib import Path
    >>> from detflow._results.reader import TrialSummary
    >>> t = TrialSummary(0, TrialStatus.COMPLETED, 0, {"hyperparameters.lr": 0.1}, 4, 128,
    ...                  0.25, 0, 0.2, None, Path("s/0"))
    >>> title, head, rows, foot = sweep_summary(
    ...     SweepDir(Path("s"), [t], "validation_loss", True, Unit.EPOCHS, "grid"))
    >>> head
    ['trial', 'status', 'lr', 'epochs', 'batches', 'validation_loss', 'best']
    >>> rows
    [['0', 'COMPLETED', '0.1', '4', '128', '0.25', '0.2']]
    >>> foot
    ['best: trial 0 (lr=0.1), validation_loss 0.2, trained 128 batches (4 epochs)']
    """
    keys = sweep.keys or sorted({k for t in sweep.trials for k in t.hparams})
    short = short_names(keys)
    rungs = len(sweep.rung_lengths) > 1
    failed = any(t.status is TrialStatus.FAILED for t in sweep.trials)
    unit = sweep.unit.value if sweep.unit else "length"
    lengths = [] if sweep.unit is Unit.BATCHES else [unit]  # never two columns of batches
    others = [m for m in metrics if m != sweep.metric]
    headers = ["trial", "status", *(["rung"] if rungs else []), *short.values()]
    restarted = any(t.restarts for t in sweep.trials)
    headers += [*lengths, "batches", sweep.metric, "best", *others]
    headers += ["restarts"] if restarted else []
    headers += ["error"] if failed else []
    rows = []
    for t in sweep.trials:
        row = [str(t.trial_id), str(t.status), *([str(t.rung)] if rungs else [])]
        row += [format_number(t.hparams.get(k)) for k in keys]
        batches = t.batches if t.batches is not None or lengths else t.length
        row += [*([format_number(t.length)] if lengths else []), format_number(batches)]
        row += [format_number(t.metric), format_number(t.best_metric)]
        if others:
            validation = sweep.validation(t)
            row += [format_number(validation.get(m)) for m in others]
        if restarted:
            row.append(str(t.restarts))
        if failed:
            row.append(t.error or "")
        rows.append(row)
    statuses = [*_STATUS_ORDER, *sorted({t.status for t in sweep.trials} - set(_STATUS_ORDER))]
    counts = {s: sum(t.status == s for t in sweep.trials) for s in statuses}
    tally = ", ".join(f"{n} {s.lower().replace('_', ' ')}" for s, n in counts.items() if n)
    direction = "smaller" if sweep.smaller_is_better else "larger"
    title = (
        f"sweep {sweep.path}: {sweep.searcher or 'search'} on {sweep.metric} "
        f"({direction} is better), {len(sweep.trials)} trials" + (f": {tally}" if tally else "")
    )
    footer = []
    best = sweep.best
    if best is not None:  # the sweep's own closing line says the same
        best_value = best.best_metric if best.best_metric is not None else best.metric
        trained = _trained(best, unit)
        footer.append(
            best_line(best.trial_id, best.hparams, sweep.metric, best_value, trained, keys)
        )
    elif sweep.trials:
        footer.append("best: none yet (no trial has reported a metric)")
    else:
        footer.append("no trials yet")
    if rungs:
        footer.append(
            f"ranked by rung reached, then best; {sweep.metric}: at the end of that rung, "
            "best: at any validation"
        )
    return title, headers, rows, footer


#: The metric columns ``detflow summary`` shows without ``--metrics`` (searcher.metric's too).
_DEFAULT_METRICS = 3


def _names(text: str) -> list[str]:
    """``--metrics a,b``: names, in order, each once."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected metric names separated by commas, got {text!r}")
    return list(dict.fromkeys(names))


def _metric_columns(sweep: SweepDir, asked: Sequence[str] | None) -> list[str]:
    """The validation metrics shown beside searcher.metric: the ones asked for (each must be
    reported by some trial, once any has reported), else the others the best trials report."""
    reported: dict[str, None] = {}
    for trial in sweep.trials:
        reported.update(dict.fromkeys(sweep.validation(trial)))
        if asked is None and len(reported) >= _DEFAULT_METRICS:
            break
    if asked is None:
        return [m for m in reported if m != sweep.metric][: _DEFAULT_METRICS - 1]
    unknown = [m for m in asked if m not in reported and m != sweep.metric]
    if unknown and reported:
        raise CommandError(
            f"--metrics {','.join(asked)}: no trial reported {', '.join(unknown)}; "
            f"the trials report {', '.join(reported)}"
        )
    return [m for m in asked if m != sweep.metric]


def _trained(trial: TrialSummary, unit: str) -> str:
    """What a trial trained, as the sweep's lines write it: ``128 batches (4 epochs)``."""
    if trial.length is None:
        return (
            "?"
            if trial.batches is None
            else length_text(trial.batches, Fraction(trial.batches), "batches")
        )
    return length_text(trial.batches, trial.length, unit)


def _row_style(trial: TrialSummary, sweep: SweepDir) -> str | None:
    if sweep.best is not None and trial is sweep.best:
        return "bold green"
    colours = {TrialStatus.FAILED: "red", TrialStatus.RUNNING: "cyan", TrialStatus.PENDING: "cyan"}
    return colours.get(trial.status)


def _sweep_json(sweep: SweepDir) -> dict[str, Any]:
    best = sweep.best
    return {
        "dir": str(sweep.path),
        "searcher": sweep.searcher,
        "metric": sweep.metric,
        "smaller_is_better": sweep.smaller_is_better,
        "unit": sweep.unit.value if sweep.unit else None,
        "rung_lengths": [_number(x) for x in sweep.rung_lengths],
        "best_trial": best.trial_id if best else None,
        "trials": [{**t.to_json(), "validation": sweep.validation(t)} for t in sweep.trials],
    }


def _sweep_csv(sweep: SweepDir, metrics: Sequence[str] = ()) -> str:
    """One row per trial; ``metrics`` (more validation metrics) as the last columns."""
    keys = sweep.keys or sorted({k for t in sweep.trials for k in t.hparams})
    unit = sweep.unit.value if sweep.unit else "length"
    others = [m for m in metrics if m != sweep.metric]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    head = ["trial_id", "status", "rung", *keys, f"length_{unit}", "batches", "metric"]
    writer.writerow([*head, "best_metric", "restarts", "error", "dir", *others])
    for t in sweep.trials:
        cells: list[Any] = [t.trial_id, t.status, t.rung, *(t.hparams.get(k, "") for k in keys)]
        cells += [_blank(_number(t.length)), _blank(t.batches), _blank(t.metric)]
        cells += [_blank(t.best_metric), t.restarts, t.error or "", str(t.dir)]
        validation = sweep.validation(t) if others else {}
        writer.writerow([*cells, *(_blank(validation.get(m)) for m in others)])
    return out.getvalue()


def run_summary(run: RunDir) -> tuple[str, list[str], list[list[str]], list[str]]:
    """The title, header, rows and closing lines of ``detflow summary RUN_DIR``."""
    result = run.result or {}
    unit = run.unit
    if run.result is not None:
        counts = ", ".join(
            f"{_trained_in(run, u)} {u.value}"
            for u in Unit
            if u != unit and _trained_in(run, u) is not None
        )
        trained = f"{_fraction_text(result.get('length'))} {unit.value if unit else ''}".strip()
        title = f"run {run.path}: {run.status}, {trained} trained ({counts})"
    else:
        last = run.metrics[-1] if run.metrics else {}
        so_far = ", ".join(f"{last[u.value]} {u.value}" for u in Unit if u.value in last)
        title = f"run {run.path}: {UNFINISHED}" + (f", {so_far} so far" if so_far else "")
    rows = []
    validation = result.get("validation")
    latest_validation = run.latest("validation")
    if not isinstance(validation, dict) or not validation:
        validation = (latest_validation or {}).get("metrics") or {}
    best = result.get("best_metric")
    for name, value in validation.items():
        note = "validation"
        if name == run.metric_name:
            note += ", searcher.metric"
        best_text = format_number(best) if name == run.metric_name else ""
        rows.append([name, format_number(value), best_text, note])
    train = run.latest("train")
    for name, value in ((train or {}).get("metrics") or {}).items():
        at = f" at {train['batches']} batches" if train and "batches" in train else ""
        rows.append([name, format_number(value), "", f"training, last report{at}"])
    footer = [] if rows else ["no metrics reported yet"]
    return title, ["metric", "value", "best", "kind"], rows, footer


def _trained_in(run: RunDir, unit: Unit) -> str | None:
    """What the run trained in ``unit``: records as counted, the rest from batches."""
    result = run.result or {}
    geometry = run.geometry()
    batches = result.get("batches")
    if unit is Unit.RECORDS or geometry is None or not isinstance(batches, int):
        value = result.get(unit.value)
        return None if value is None else format_number(value)
    try:
        return format_number(geometry.in_unit(batches, unit))
    except ConfigError:
        return None


def _run_json(run: RunDir) -> dict[str, Any]:
    result = dict(run.result or {})
    train = run.latest("train")
    return {
        "dir": str(run.path),
        "status": run.status,
        "metric_name": run.metric_name,
        **result,
        "validation": result.get("validation") or (run.latest("validation") or {}).get("metrics"),
        "training": (train or {}).get("metrics") or {},
    }


def _run_csv(run: RunDir) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["metric", "value", "kind"])
    train = (run.latest("train") or {}).get("metrics") or {}
    validation = (
        (run.result or {}).get("validation")
        or (run.latest("validation") or {}).get("metrics")
        or {}
    )
    for name, value in validation.items():
        writer.writerow([name, repr(value), "validation"])
    for name, value in train.items():
        writer.writerow([name, repr(value), "training"])
    return out.getvalue()


# -- plot ------------------------------------------------------------------------------------
def _plot(args: argparse.Namespace) -> int:
    target = load(args.dir)
    if importlib.util.find_spec("matplotlib") is None:
        raise CommandError(
            "plot needs matplotlib: pip install 'detflow[examples]' (or: pip install matplotlib)"
        )
    from detflow._results.plot import plot_curves

    output = args.output or args.dir / "curves.png"
    yscale = "log" if args.log else "linear" if args.linear else "auto"
    x = Unit(args.x) if args.x else None
    try:
        written = plot_curves(
            target, output, x=x, yscale=yscale, title=args.title, color_by=args.color_by
        )
    except ConfigError as exc:  # --color-by a key the sweep did not sweep
        raise CommandError(str(exc)) from None
    except OSError as exc:  # a directory, a read-only place...
        why = exc.strerror or str(exc).splitlines()[0]
        raise CommandError(
            f"cannot write {output}: {why}; -o takes the PNG file to write"
        ) from None
    print(f"wrote {written}")
    return 0


# -- explain ---------------------------------------------------------------------------------
def _explain(args: argparse.Namespace) -> int:
    from detflow._results.explain import explain

    target = load(args.dir)
    if isinstance(target, SweepDir):
        best = target.best
        example = best.dir if best is not None else args.dir / "0"
        raise CommandError(
            f"{args.dir} is a sweep directory; explain takes one trial's run directory, "
            f"e.g. {example}" + (" (the best trial)" if best is not None else "")
        )
    print("\n".join(explain(target)))
    return 0


# -- new -------------------------------------------------------------------------------------
def _new(args: argparse.Namespace) -> int:
    from detflow._results.scaffold import ProjectExists, next_command, write_project

    try:
        written = write_project(args.dir)
    except ProjectExists as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        why = exc.strerror or str(exc).splitlines()[0]
        raise CommandError(f"cannot write {args.dir}: {why}") from None
    print(f"wrote {args.dir}: {', '.join(p.name for p in written)}")
    print(f"next: {next_command(args.dir)}  (README.md there: a search, resume, Slurm)")
    return 0


# -- status, cancel (detflow._results.status) ---------------------------------------------------
def _add_status_and_cancel(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="a sweep's trials by status, its Slurm jobs and its detached driver",
        description="The trials of a sweep by status, the trial jobs Slurm has queued or "
        "running, and the state of the driver job of a detached sweep "
        "(hydra.sweeper.detach=true). Works while the sweep runs.",
    )
    status.add_argument("dir", type=Path, help="a sweep directory")
    status.add_argument("--json", action="store_true", help="JSON on stdout, for scripts")
    status.set_defaults(handler=_status)
    cancel = commands.add_parser(
        "cancel",
        help="stop a sweep's driver job and its trial jobs; the same command resumes it",
        description="Stop the driver job of a detached sweep (it saves its state), ask the "
        "running trial jobs to checkpoint, then cancel them. The sweep's state is kept: the "
        "command that started it resumes it (printed at the end).",
    )
    cancel.add_argument("dir", type=Path, help="a sweep directory")
    cancel.set_defaults(handler=_cancel)


def _status(args: argparse.Namespace) -> int:
    from detflow._results.status import sweep_status

    found = sweep_status(args.dir)
    if args.json:
        json.dump(found.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n".join(found.lines()))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from detflow._results.status import cancel_sweep

    print("\n".join(cancel_sweep(args.dir).lines()))
    return 0


# -- import-determined -----------------------------------------------------------------------
def _add_import_determined(commands: Any) -> None:
    command = commands.add_parser(
        "import-determined",
        help="port a Determined AI experiment config to a detflow experiment module",
        description="Write a Python module that defines the experiment (a module-level "
        "`experiment` dict) and registers it under its name, and print what became of every "
        "top-level key: the detflow key it became, or the detflow way of doing it. Takes "
        "configs of Determined 0.13 to 0.38. Without -o the module goes to stdout and the "
        "report to stderr.",
    )
    command.add_argument("file", type=Path, help="the Determined config (YAML)")
    command.add_argument("-o", "--output", type=Path, help="the module to write (OUT.py)")
    command.add_argument("--force", action="store_true", help="overwrite OUT.py if it exists")
    command.set_defaults(handler=_import_determined)


def _import_determined(args: argparse.Namespace) -> int:
    from detflow._results.import_determined import (
        import_config,
        module_text,
        read_config,
        report_lines,
    )

    try:
        raw = read_config(args.file)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    imported = import_config(raw, fallback_name=args.file.stem)
    text = module_text(imported, str(args.file))
    report = sys.stdout
    if args.output is None:
        sys.stdout.write(text)
        report = sys.stderr
    else:
        if args.output.exists() and not args.force:
            raise CommandError(f"{args.output} exists: give --force to overwrite it")
        try:
            args.output.write_text(text)
        except OSError as exc:
            why = exc.strerror or str(exc).splitlines()[0]
            raise CommandError(f"cannot write {args.output}: {why}") from None
        print(f"wrote {args.output}: experiment {imported.name}", file=report)
    for line in report_lines(imported):
        print(line, file=report)
    return 0


# -- output ----------------------------------------------------------------------------------
def _print_table(
    out: TextIO,
    title: str,
    headers: list[str],
    rows: list[list[str]],
    footer: list[str],
    styles: list[str | None],
) -> None:
    """A rich table on a terminal (when rich is installed); plain aligned text otherwise."""
    if out.isatty():
        try:
            from rich.console import Console
        except ImportError:
            pass
        else:
            render_rich(Console(file=out), title, headers, rows, footer, styles)
            return
    table = format_table(headers, rows, indent="  ") if rows else []
    lines = [title, *table, *footer]
    out.write("\n".join(lines) + "\n")


def render_rich(
    console: Any,
    title: str,
    headers: list[str],
    rows: list[list[str]],
    footer: list[str],
    styles: list[str | None],
) -> None:
    """Print the table with rich: numbers right-aligned, the best row and failures styled."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    for i, header in enumerate(headers):
        numeric = bool(rows) and all(_numeric(r[i]) for r in rows if r[i])
        wraps = header == "error"  # only the error text wraps; figures are never cut
        width = max(len(header), *(len(r[i]) for r in rows)) if rows else len(header)
        table.add_column(
            header,
            justify="right" if numeric else "left",
            overflow="fold",
            no_wrap=not wraps,
            min_width=None if wraps else width,
        )
    for row, style in zip(rows, styles, strict=True):
        table.add_row(*row, style=style)
    console.print(title, highlight=False, markup=False)
    needed = sum(c.min_width or 12 for c in table.columns) + 2 * (len(headers) - 1)
    if rows and needed > console.width:  # rich would cut columns off: print them all, plain
        console.out("\n".join(format_table(headers, rows, indent="  ")), highlight=False)
    elif rows:
        console.print(table)
    for line in footer:
        console.print(line, highlight=False, markup=False)


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number(value: Any) -> Any:
    from fractions import Fraction

    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else float(value)
    return value


def _fraction_text(text: Any) -> str:
    from fractions import Fraction

    try:
        return format_number(Fraction(str(text)))
    except (ValueError, ZeroDivisionError):
        return str(text)


def _blank(value: Any) -> Any:
    return "" if value is None else value


if __name__ == "__main__":
    sys.exit(main())
