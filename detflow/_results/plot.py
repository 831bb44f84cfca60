"""``detflow plot``: learning curves of a sweep's trials (or one run) as a PNG.

Top panel: ``searcher.metric`` at every validation; bottom panel: the training loss; both
against the training length in the chosen unit. Curves are coloured by one swept
hyperparameter (``--color-by``; by default the first one the search sweeps, in its order) or by
each trial's best metric: a colour bar for a numeric key with many values, a compact legend
of its values otherwise, either in a side panel a fifth of the figure wide, beside the best
trials listed best first. ASHA's rungs (pbt's generations) are dotted vertical lines, their
lengths on a top axis (labels that would touch are left out, never drawn over each other); the
best trial is drawn thick and outlined. A pbt sweep's lineage is drawn: a dashed line from the
point of the parent's curve where a child copied its checkpoint to the child's first point,
each trial (population member) in a colour of its own by default. matplotlib is imported here
only, and only its Agg canvas is used: no display, no global backend switch.
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from detflow._core.artifacts import RESULTS_FILE, TrialStatus, read_results_csv
from detflow._core.errors import ConfigError
from detflow._core.text import short_names
from detflow._core.units import BatchMath, Length, Unit
from detflow._results.reader import RunDir, SweepDir, format_number, format_table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "LINEAGE",
    "METRIC",
    "RUNGS",
    "SIDE",
    "TRIAL",
    "Colouring",
    "colouring",
    "default_x",
    "figure",
    "plot_curves",
]

#: ``--color-by metric``: colour each trial by its best ``searcher.metric``.
METRIC = "metric"
#: ``--color-by trial``: each trial its own colour (a pbt sweep's default: one per member).
TRIAL = "trial"
#: The label (``Artist.get_label``) of a line from a parent's curve to its pbt child's.
LINEAGE = "detflow-lineage"
#: The labels (``Artist.get_label``) of the side panel and of the rungs' axis.
SIDE, RUNGS = "detflow-side", "detflow-rungs"
_TRAIN_KEYS = ("loss", "train_loss", "training_loss")
_COLOURBAR_MIN = 9  # a numeric key with this many values or more gets a colour bar
_CATEGORIES_MAX = 30  # values named in a categorical legend (two columns past 15)
_LISTED = 8  # trials listed best first in the side panel
_LABELLED = 10  # up to this many curves, each is labelled with its trial id at its end
_LINE = 34  # characters of a listed trial's line before it is cut
_MISSING = "0.6"  # the grey of a trial without a value for the colour key


@dataclass
class _Curve:
    trial_id: int | None
    label: str
    status: str  # a TrialStatus in a sweep, a run's RunEnd alone
    geometry: BatchMath | None
    val: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    train: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    best: bool = False
    hparams: dict[str, Any] = field(default_factory=dict)
    score: float | None = None  # the trial's best searcher.metric


@dataclass(frozen=True)
class Colouring:
    """How a sweep's curves are coloured: by ``key`` (a swept key, or :data:`METRIC`).

    ``colours`` maps each trial id to its colour. ``bar`` is set for a colour bar
    (``(norm, cmap)``); otherwise ``categories`` lists each value's label and colour, every
    colour different.
    """

    key: str
    title: str
    colours: dict[int, Any]
    categories: list[tuple[str, Any]] = field(default_factory=list)
    bar: tuple[Any, Any] | None = None


def plot_curves(
    target: RunDir | SweepDir,
    output: Path,
    *,
    x: Unit | None = None,
    yscale: str = "auto",
    title: str | None = None,
    color_by: str | None = None,
) -> Path:
    """Draw the learning curves of ``target`` into the PNG ``output``; return its path.

    ``x`` is the x axis unit; by default batches, or the searcher's unit when the trials
    differ in batch size (their batches are then not comparable). ``yscale`` is
    ``"linear"``, ``"log"`` or ``"auto"`` (log when the metric spans more than two decades
    and stays positive). ``color_by`` is a swept key (``lr`` or ``hyperparameters.lr``) or
    ``"metric"``; see :func:`colouring`. It is ignored for a single run.

    Examples
    --------
    >>> import json, tempfile
    >>> run_dir = Path(tempfile.mkdtemp())
    >>> _ = (run_dir / "metrics.jsonl").write_text("\\n".join(json.dumps(
    ...     {"kind": kind, "batches": b, "records": 8 * b, "steps": b, "epochs": b // 4,
    ...      "metrics": {name: 1 / b}}) for b in (4, 8, 12)
    ...     for kind, name in (("train", "loss"), ("validation", "validation_loss"))))
    >>> from detflow._results.reader import load
    >>> plot_curves(load(run_dir), run_dir / "curves.png").stat().st_size > 10_000
    True
    """
    fig = figure(target, x=x, yscale=yscale, title=title, color_by=color_by)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, format="png")
    return output


def figure(
    target: RunDir | SweepDir,
    *,
    x: Unit | None = None,
    yscale: str = "auto",
    title: str | None = None,
    color_by: str | None = None,
) -> Figure:
    """The figure :func:`plot_curves` writes (on an Agg canvas), to save or inspect."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if yscale not in ("auto", "linear", "log"):
        raise ConfigError("yscale", yscale, "one of auto, linear, log")
    if x is None:
        x = default_x(target)
    curves, metric, smaller, keys = _curves(target, x)
    colours: Colouring | None = None
    if isinstance(target, SweepDir):
        colours = colouring(target, _scores(curves), color_by)
    many = colours is not None

    fig = Figure(figsize=(11 if many else 9.5, 7.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        2, 2 if many else 1, height_ratios=(3, 2), width_ratios=(4, 1.0)[: 2 if many else 1]
    )
    top = fig.add_subplot(grid[0, 0])
    bottom = fig.add_subplot(grid[1, 0], sharex=top)
    top.tick_params(labelbottom=False)
    side = fig.add_subplot(grid[:, 1], label=SIDE) if many else None
    if side is not None:
        side.axis("off")

    palette = _palette(curves, colours)
    thin = len(curves) > 20
    for curve in sorted(curves, key=lambda c: c.best):  # the best one drawn last, on top
        colour = palette[id(curve)]
        _draw(top, curve.val, curve, colour, markers=True, solo=not many, thin=thin)
        _draw(bottom, curve.train, curve, colour, markers=False, solo=not many, thin=thin)
    if isinstance(target, SweepDir):
        parents = lineage(target)
        _links(top, curves, parents, palette, lambda c: c.val)
        _links(bottom, curves, parents, palette, lambda c: c.train)

    scale = _scale(yscale, [y for c in curves for y in c.val[1]])
    top.set_yscale(scale)
    bottom.set_yscale(_scale(yscale, [y for c in curves for y in c.train[1]]))
    direction = "lower" if smaller else "higher"
    top.set_ylabel(f"{metric} (validation, {direction} is better)")
    bottom.set_ylabel(_train_name(target) + " (training)")
    bottom.set_xlabel(_x_label(curves, x))
    for ax in (top, bottom):
        ax.grid(True, which="major", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    if not any(c.val[0] for c in curves):
        top.text(0.5, 0.5, "no validation yet", transform=top.transAxes, ha="center")
    rung_axis = _rungs(top, bottom, target, curves, x)
    _end_labels(top, curves, palette)
    if side is not None and colours is not None:
        _side(fig, side, colours, curves, metric, keys)
    fig.suptitle(title or _title(target, metric, len(curves)), fontsize=12)
    if rung_axis is not None:
        _declutter(fig, rung_axis)
    return fig


def _scores(curves: Sequence[_Curve]) -> dict[int, tuple[dict[str, Any], float | None]]:
    """Each trial's hyperparameters and best metric, as :func:`colouring` takes them."""
    return {c.trial_id: (c.hparams, c.score) for c in curves if c.trial_id is not None}


def colouring(
    sweep: SweepDir,
    trials: dict[int, tuple[dict[str, Any], float | None]],
    color_by: str | None = None,
) -> Colouring:
    """Colours for ``trials`` (id -> (hyperparameters, best metric)) of ``sweep``.

    ``color_by`` names a swept key (in full or without ``hyperparameters.``),
    :data:`METRIC` or :data:`TRIAL` (each trial its own colour); by default :data:`TRIAL` for
    a pbt sweep (one that has children), else the first swept key with more than one value,
    in the search's order, else the metric. A numeric key with many values (and the metric) gets a
    colour bar; any other key one legend entry per value, each its own colour. A key the sweep
    did not sweep is a :class:`ConfigError` naming ``--color-by`` and the accepted keys.

    Examples
    --------
    >>> sweep = SweepDir(Path("s"), [], "validation_loss", True, None, "grid",
    ...                  keys=["hyperparameters.lr", "hyperparameters.act"])
    >>> trials = {0: ({"hyperparameters.lr": 0.1, "hyperparameters.act": "relu"}, 0.5),
    ...           1: ({"hyperparameters.lr": 0.1, "hyperparameters.act": "tanh"}, 0.4)}
    >>> c = colouring(sweep, trials)  # lr has one value only: act is the first that varies
    >>> c.key, [label for label, _ in c.categories]
    ('hyperparameters.act', ['relu', 'tanh'])
    >>> colouring(sweep, trials, "metric").bar is not None
    True
    >>> colouring(sweep, trials, "momentum")
    Traceback (most recent call last):
    ...
    detflow._core.errors.ConfigError: --color-by = 'momentum' is not valid: expected ...
    """
    keys = sweep.keys or sorted({k for hparams, _ in trials.values() for k in hparams})
    key = _colour_key(sweep, keys, trials, color_by)
    if key == TRIAL:
        return _categorical(TRIAL, TRIAL, {i: i for i in sorted(trials)}, numeric=False)
    if key == METRIC:
        values = {i: score for i, (_, score) in trials.items()}
        title = f"best {sweep.metric}"
    else:
        values = {i: hparams.get(key) for i, (hparams, _) in trials.items()}
        title = short_names(keys)[key]
    present = [v for v in values.values() if v is not None]
    distinct = {_category(v): v for v in present}
    numeric = bool(present) and all(_number(v) for v in present)
    if numeric and (key == METRIC or len(distinct) >= _COLOURBAR_MIN) and len(distinct) > 1:
        return _bar(key, title, values)
    return _categorical(key, title, values, numeric)


def _colour_key(
    sweep: SweepDir,
    keys: list[str],
    trials: dict[int, tuple[dict[str, Any], float | None]],
    asked: str | None,
) -> str:
    if asked == TRIAL or (asked is None and lineage(sweep)):
        return TRIAL
    if asked is None:
        for key in keys:
            seen = {_category(h.get(key)) for h, _ in trials.values() if key in h}
            if len(seen) > 1:
                return key
        return METRIC
    if asked in (METRIC, sweep.metric):
        return METRIC
    for key in keys:
        if asked in (key, key.removeprefix("hyperparameters.")):
            return key
    names = [*short_names(keys).values(), METRIC, TRIAL]
    raise ConfigError(
        "--color-by", asked, f"a swept key, metric or trial: one of {', '.join(names)}"
    )


def _bar(key: str, title: str, values: dict[int, Any]) -> Colouring:
    import matplotlib as mpl
    from matplotlib.colors import ListedColormap, LogNorm, Normalize

    numbers = [float(v) for v in values.values() if _number(v)]
    low, high = min(numbers), max(numbers)
    norm: Normalize = (
        LogNorm(low, high) if low > 0 and high / low >= 10 else Normalize(low, high or 1.0)
    )
    base = mpl.colormaps["viridis"]
    cmap = ListedColormap([base(0.9 * i / 255) for i in range(256)])  # no pale yellow end
    colours = {i: cmap(norm(float(v))) if _number(v) else _MISSING for i, v in values.items()}
    return Colouring(key, title, colours, bar=(norm, cmap))


def _categorical(key: str, title: str, values: dict[int, Any], numeric: bool) -> Colouring:
    import matplotlib as mpl

    seen: dict[str, Any] = {}
    for value in values.values():
        if value is not None:
            seen.setdefault(_category(value), value)
    labels = sorted(seen, key=lambda k: float(seen[k])) if numeric else list(seen)
    count = len(labels)
    if numeric:  # ordered values, ordered colours
        base = mpl.colormaps["viridis"]
        palette = [base(0.9 * i / max(1, count - 1)) for i in range(count)]
    elif count <= 10:
        palette = [mpl.colormaps["tab10"](i) for i in range(count)]
    elif count <= 20:
        palette = [mpl.colormaps["tab20"](i) for i in range(count)]
    else:
        palette = [mpl.colormaps["turbo"](0.05 + 0.9 * i / (count - 1)) for i in range(count)]
    by_label = dict(zip(labels, palette, strict=True))
    colours = {i: by_label[_category(v)] if v is not None else _MISSING for i, v in values.items()}
    return Colouring(key, title, colours, categories=[(lb, by_label[lb]) for lb in labels])


def _category(value: Any) -> str:
    """A value as its legend entry names it (lists and dicts as JSON)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return format_number(value)


def _palette(curves: list[_Curve], colours: Colouring | None) -> dict[int, Any]:
    if colours is None:  # one run: one colour
        return {id(c): "C0" for c in curves}
    return {
        id(c): colours.colours.get(c.trial_id, _MISSING) if c.trial_id is not None else _MISSING
        for c in curves
    }


def default_x(target: RunDir | SweepDir) -> Unit:
    """Batches, unless a sweep's trials differ in batch geometry: then the searcher's unit.

    >>> default_x(RunDir(Path("."), {}, None, None))
    <Unit.BATCHES: 'batches'>
    """
    if isinstance(target, RunDir) or target.unit is None:
        return Unit.BATCHES
    shapes = set()
    for trial in target.trials:
        run = target.run(trial)
        geometry = run.geometry() if run is not None else None
        if geometry is not None:
            shapes.add((geometry.global_batch_size, geometry.aggregation_frequency))
    return Unit.BATCHES if len(shapes) <= 1 else target.unit


def _curves(target: RunDir | SweepDir, x: Unit) -> tuple[list[_Curve], str, bool, list[str]]:
    if isinstance(target, RunDir):
        curve = _Curve(None, target.path.name, target.status, target.geometry())
        _fill(curve, target, target.metric_name, x)
        return [curve], target.metric_name, target.smaller_is_better, []
    keys = target.keys or sorted({k for t in target.trials for k in t.hparams})
    short = short_names(keys)
    best = target.best
    curves = []
    for trial in target.trials:
        run = target.run(trial)
        if run is None:
            continue
        chosen = " ".join(
            f"{short[k]}={format_number(trial.hparams[k])}" for k in keys if k in trial.hparams
        )
        curve = _Curve(trial.trial_id, chosen, trial.status, run.geometry(), best=trial is best)
        curve.hparams = dict(trial.hparams)
        curve.score = trial.best_metric if trial.best_metric is not None else trial.metric
        _fill(curve, run, target.metric, x)
        curves.append(curve)
    return curves, target.metric, target.smaller_is_better, keys


def _fill(curve: _Curve, run: RunDir, metric: str, x: Unit) -> None:
    for record in run.metrics:
        position = _x(record, x, curve.geometry)
        values = record.get("metrics") or {}
        if position is None or not isinstance(values, dict):
            continue
        if record.get("kind") == "validation":
            value = values.get(metric)
            series = curve.val
        elif record.get("kind") == "train":
            name = next((k for k in _TRAIN_KEYS if k in values), next(iter(values), None))
            value = values.get(name) if name else None
            series = curve.train
        else:
            continue
        if isinstance(value, (int, float)) and math.isfinite(value) and abs(value) < 1e100:
            series[0].append(position)
            series[1].append(float(value))


def _x(record: dict[str, Any], x: Unit, geometry: BatchMath | None) -> float | None:
    batches = record.get("batches")
    if x is Unit.EPOCHS and geometry is not None and isinstance(batches, int):
        try:
            return float(geometry.in_unit(batches, Unit.EPOCHS))
        except ConfigError:
            pass
    value = record.get(x.value)
    return float(value) if isinstance(value, (int, float)) else None


def _draw(
    ax: Axes,
    series: tuple[list[float], list[float]],
    curve: _Curve,
    colour: Any,
    *,
    markers: bool,
    solo: bool,
    thin: bool,
) -> None:
    xs, ys = series
    if not xs:
        return
    from matplotlib import patheffects

    failed = curve.status == TrialStatus.FAILED
    style: dict[str, Any] = {
        "color": colour,
        "linewidth": 2.8 if curve.best else 1.8 if solo else 1.0 if thin else 1.4,
        "alpha": 1.0 if curve.best or solo else 0.75,
        "linestyle": "--" if failed else "-",
        "zorder": 5 if curve.best else 2,
    }
    if markers or len(xs) == 1:
        size = 4.5 if curve.best else 2.2 if thin else 3
        style.update(marker="o", markersize=size, markeredgewidth=0)
    if curve.best:
        style["path_effects"] = [patheffects.withStroke(linewidth=4.6, foreground="black")]
    ax.plot(xs, ys, **style)
    if failed:
        ax.plot(xs[-1:], ys[-1:], marker="x", color=colour, markersize=8, zorder=6)


def _end_labels(ax: Axes, curves: list[_Curve], palette: dict[int, Any]) -> None:
    """Trial ids at the ends of the validation curves (every curve up to
    :data:`_LABELLED` of them, else the best one only), nudged apart so none overlap."""
    if len(curves) < 2:
        return
    chosen = [c for c in curves if c.val[0] and (c.best or len(curves) <= _LABELLED)]
    if not chosen:
        return
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())  # frozen: the labels are placed against these limits
    ax.set_ylim(ax.get_ylim())
    to_axes = ax.transScale + ax.transLimits
    gap = 0.045  # of the axes' height: one line of 8-point text in a 3-inch panel
    placed: list[tuple[float, float]] = []
    ends = [(to_axes.transform((c.val[0][-1], c.val[1][-1])), c) for c in chosen]
    for (fx, fy), curve in sorted(ends, key=lambda e: e[0][1]):
        y = fy
        while any(abs(px - fx) < 0.08 and abs(py - y) < gap for px, py in placed):
            y += gap
        placed.append((fx, y))
        text = f"{curve.trial_id}" + (" best" if curve.best else "")
        ax.annotate(
            text,
            xy=(curve.val[0][-1], curve.val[1][-1]),
            xytext=(fx + 0.008, y),
            textcoords="axes fraction",
            va="center",
            fontsize=8,
            fontweight="bold" if curve.best else "normal",
            color="black" if curve.best else palette[id(curve)],
            annotation_clip=False,
            zorder=7,
        )


def _rungs(
    top: Axes, bottom: Axes, target: RunDir | SweepDir, curves: list[_Curve], x: Unit
) -> Any:
    """ASHA's rung lengths as dotted vertical lines, where they fall alike for every trial,
    and their lengths on a top axis (returned, for :func:`_declutter`)."""
    if not isinstance(target, SweepDir) or len(target.rung_lengths) < 2 or target.unit is None:
        return None
    unit = target.unit
    positions: set[tuple[float, ...]] = set()
    for curve in curves:
        if curve.geometry is None:
            continue
        try:
            positions.add(
                tuple(
                    float(curve.geometry.in_unit(curve.geometry.to_batches(Length(r, unit)), x))
                    for r in target.rung_lengths
                )
            )
        except ConfigError:
            continue
    if len(positions) == 1:
        (where,) = positions
    elif x is unit:
        where = tuple(float(r) for r in target.rung_lengths)
    else:  # the rungs fall at different places for different batch sizes
        return None
    for position in where:
        for ax in (top, bottom):
            ax.axvline(position, color="0.45", linestyle=":", linewidth=1.1, zorder=1)
    axis = top.secondary_xaxis("top")
    axis.set_label(RUNGS)
    axis.set_xticks(list(where), labels=[format_number(r) for r in target.rung_lengths], fontsize=8)
    axis.tick_params(colors="0.3", length=3)
    rungs = "pbt generations" if target.searcher == "pbt" else "ASHA rungs"
    axis.set_xlabel(f"{rungs} ({unit.value}; dotted lines)", fontsize=8, color="0.3")
    return axis


def lineage(sweep: SweepDir) -> dict[int, int]:
    """Each pbt child's parent (``results.csv``'s ``parent``): empty for other searches.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp())
    >>> _ = (path / RESULTS_FILE).write_text("trial_id,status,rung,parent\\n0,COMPLETED,1,\\n"
    ...                                      "1,COMPLETED,1,0\\n")
    >>> lineage(SweepDir(path, [], "validation_loss", True, None, "pbt"))
    {1: 0}
    """
    _, rows = read_results_csv(sweep.path / RESULTS_FILE)
    return {int(row["trial_id"]): int(row["parent"]) for row in rows if row.get("parent", "") != ""}


def _links(
    ax: Axes,
    curves: list[_Curve],
    parents: dict[int, int],
    palette: dict[int, Any],
    series_of: Any,
) -> None:
    """A dashed line, in the child's colour, from the parent's last point before the child's
    first (where it copied the checkpoint: a resumed run validates after it) to the child's
    first point."""
    by_id = {c.trial_id: c for c in curves if c.trial_id is not None}
    for child_id, parent_id in sorted(parents.items()):
        child, parent = by_id.get(child_id), by_id.get(parent_id)
        if child is None or parent is None:
            continue
        (cx, cy), (px, py) = series_of(child), series_of(parent)
        before = [i for i, x in enumerate(px) if cx and x < cx[0]]
        if not before:
            continue
        i = before[-1]
        ax.plot(
            [px[i], cx[0]],
            [py[i], cy[0]],
            color=palette[id(child)],
            linestyle="--",
            linewidth=1.1,
            alpha=0.9,
            zorder=6,  # above the parent's curve, which it leaves
            label=LINEAGE,
        )


def _declutter(fig: Figure, axis: Any) -> None:
    """Leave out rung labels that would touch a higher rung's (the top rung's is kept)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    labels = axis.get_xticklabels()
    boxes = [label.get_window_extent(renderer) for label in labels]
    kept = None
    texts = [label.get_text() for label in labels]
    for i in range(len(boxes) - 1, -1, -1):  # from the top rung down
        if kept is not None and boxes[i].x1 + 4 > boxes[kept].x0:
            texts[i] = ""
        else:
            kept = i
    if any(not t for t in texts):
        axis.set_xticks(axis.get_xticks(), labels=texts, fontsize=8)


def _side(
    fig: Figure,
    side: Axes,
    colours: Colouring,
    curves: list[_Curve],
    metric: str,
    keys: list[str],
) -> None:
    """The colour key (a bar or a legend of values) above, the best trials listed below."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if colours.bar is not None:
        norm, cmap = colours.bar
        cax = side.inset_axes((0.02, 0.58, 0.08, 0.38))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        bar.set_label(f"colour: {colours.title}", fontsize=9)
        bar.ax.tick_params(labelsize=8)
        if isinstance(norm, LogNorm):  # 1-2-5 ticks, written as the table writes numbers
            bar.ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: format_number(v)))
            bar.ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        shown = colours.categories[:_CATEGORIES_MAX]
        handles: list[Any] = [Line2D([], [], color=c, linewidth=2.4) for _, c in shown]
        labels = [label for label, _ in shown]
        if len(colours.categories) > len(shown):
            handles.append(Line2D([], [], color="none"))
            labels.append(f"... and {len(colours.categories) - len(shown)} more")
        side.legend(
            handles,
            labels,
            loc="upper left",
            fontsize=8,
            ncols=1 if len(labels) <= 15 else 2,
            frameon=False,
            title=f"colour: {colours.title}",
            title_fontsize=9,
            alignment="left",
            borderaxespad=0.0,
            handlelength=1.4,
            columnspacing=0.8,
        )
    listed = [c for c in curves if c.trial_id is not None]
    if listed:
        lines = ["best first:", *_listing(listed, keys)]
        side.text(
            0.0, 0.0, "\n".join(lines), transform=side.transAxes, va="bottom", ha="left",
            fontsize=7, family="monospace", linespacing=1.35,
        )  # fmt: skip


def _listing(curves: list[_Curve], keys: list[str]) -> list[str]:
    """The best trials (best first) as a small table (trial, best, one column per swept key)
    when it fits in :data:`_LINE` characters, else each trial on a line and its values wrapped
    below; the ones left out counted at the end."""
    short = short_names(keys)
    table = [
        [
            str(c.trial_id) + (" (failed)" if c.status == TrialStatus.FAILED else ""),
            format_number(c.score),
            *(format_number(c.hparams.get(k)) for k in keys),
        ]
        for c in curves[:_LISTED]
    ]
    lines = format_table(["trial", "best", *short.values()], table)
    if max(len(line) for line in lines) > _LINE:
        table = table[: _LISTED - 2]  # two lines or more each: fewer of them
        lines = []
        for row in table:
            lines.append(f"trial {row[0]}: best {row[1]}")
            chosen = " ".join(f"{short[k]}={v}" for k, v in zip(keys, row[2:], strict=True))
            lines += textwrap.wrap(chosen, _LINE, initial_indent="  ", subsequent_indent="  ")
    if len(curves) > len(table):
        lines.append(f"... and {len(curves) - len(table)} more")
    return lines


def _scale(choice: str, values: list[float]) -> str:
    if choice != "auto":
        return choice
    positive = [v for v in values if v > 0]
    if values and len(positive) == len(values) and max(positive) / min(positive) > 100:
        return "log"
    return "linear"


def _x_label(curves: list[_Curve], x: Unit) -> str:
    sizes = {c.geometry.global_batch_size for c in curves if c.geometry is not None}
    label = f"{x.value} trained"
    if x is Unit.BATCHES and len(sizes) == 1:
        label += f" (global batches of {sizes.pop()} records)"
    elif x is Unit.EPOCHS:
        epochs = {c.geometry.batches_per_epoch for c in curves if c.geometry is not None}
        if len(epochs) == 1 and None not in epochs:
            label += f" ({epochs.pop()} batches each)"
    return label


def _train_name(target: RunDir | SweepDir) -> str:
    runs = [target] if isinstance(target, RunDir) else [target.run(t) for t in target.trials[:1]]
    for run in runs:
        train = run.latest("train") if run is not None else None
        values = (train or {}).get("metrics") or {}
        for key in _TRAIN_KEYS:
            if key in values:
                return key
        if values:
            return str(next(iter(values)))
    return "loss"


def _title(target: RunDir | SweepDir, metric: str, count: int) -> str:
    where = "/".join(target.path.resolve().parts[-2:])
    if isinstance(target, RunDir):
        return f"run {where}: {metric}, {target.status}"
    searcher = f"{target.searcher} search" if target.searcher else "sweep"
    return f"{where}: {searcher}, {count} trials"


def _number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
