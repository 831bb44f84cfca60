"""``detflow plot``: learning curves of a sweep's trials (or one run) as a PNG.

Top panel: ``searcher.metric`` at every validation; bottom panel: the training loss; both
against the training length in the chosen unit. ASHA's rungs are dotted vertical lines, the
best trial is drawn thick and outlined. matplotlib is imported here only, and only its Agg
canvas is used: no display, no global backend switch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

from detflow._core.artifacts import TrialStatus
from detflow._core.errors import ConfigError
from detflow._core.units import BatchMath, Length, Unit
from detflow._results.reader import RunDir, SweepDir, format_number

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["default_x", "plot_curves"]

_LEGEND_MAX = 16  # trials named in the legend; the rest are summed up in one entry
_TRAIN_KEYS = ("loss", "train_loss", "training_loss")


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


def plot_curves(
    target: RunDir | SweepDir,
    output: Path,
    *,
    x: Unit | None = None,
    yscale: str = "auto",
    title: str | None = None,
) -> Path:
    """Draw the learning curves of ``target`` into the PNG ``output``; return its path.

    ``x`` is the x axis unit; by default batches, or the searcher's unit when the trials
    differ in batch size (their batches are then not comparable). ``yscale`` is
    ``"linear"``, ``"log"`` or ``"auto"`` (log when the metric spans more than two decades
    and stays positive).

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if yscale not in ("auto", "linear", "log"):
        raise ConfigError("yscale", yscale, "one of auto, linear, log")
    if x is None:
        x = default_x(target)
    curves, metric, smaller, keys = _curves(target, x)
    colour_key = _colour_key(target, keys)
    many = len(curves) > 1

    fig = Figure(figsize=(11 if many else 9.5, 7.2), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(
        2, 2 if many else 1, height_ratios=(3, 2), width_ratios=(4, 1.0)[: 2 if many else 1]
    )
    top = fig.add_subplot(grid[0, 0])
    bottom = fig.add_subplot(grid[1, 0], sharex=top)
    top.tick_params(labelbottom=False)
    side = fig.add_subplot(grid[:, 1]) if many else None
    if side is not None:
        side.axis("off")
    colours = _colours(fig, curves, colour_key, side)

    for curve in sorted(curves, key=lambda c: c.best):  # the best one drawn last, on top
        colour = colours[id(curve)]
        _draw(top, curve.val, curve, colour, markers=True, solo=not many)
        _draw(bottom, curve.train, curve, colour, markers=False, solo=not many)

    _rungs(top, bottom, target, curves, x)
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
    if side is not None:
        _legend(side, curves, colours)
    fig.suptitle(title or _title(target, metric, len(curves)), fontsize=12)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, format="png")
    return output


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
    short = {k: k.removeprefix("hyperparameters.") for k in keys}
    best = target.best
    curves = []
    for trial in target.trials:
        run = target.run(trial)
        if run is None:
            continue
        chosen = ", ".join(
            f"{short[k]}={format_number(trial.hparams[k])}" for k in keys if k in trial.hparams
        )
        label = f"trial {trial.trial_id}" + (f": {chosen}" if chosen else "")
        if trial is best:
            label += "  (best)"
        elif trial.status == TrialStatus.FAILED:
            label += "  (failed)"
        curve = _Curve(trial.trial_id, label, trial.status, run.geometry(), best=trial is best)
        curve.hparams = dict(trial.hparams)
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


def _colour_key(target: RunDir | SweepDir, keys: list[str]) -> str | None:
    """The swept key to colour curves by: the first numeric one with several values."""
    if not isinstance(target, SweepDir) or len(target.trials) < 3:
        return None
    for key in keys:
        values = {t.hparams.get(key) for t in target.trials}
        if len(values) > 2 and all(_number(v) for v in values):
            return key
    return None


def _colours(fig: Any, curves: list[_Curve], key: str | None, side: Axes | None) -> dict[int, Any]:
    """A colour per curve: from a colour map over the swept value, or the tab palette."""
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, LogNorm, Normalize

    values = [float(v) for c in curves if key is not None and _number(v := c.hparams.get(key))]
    if key is None or len(values) < 2 or side is None:
        palette = mpl.colormaps["tab10" if len(curves) <= 10 else "tab20"]
        return {id(c): palette(i % palette.N) for i, c in enumerate(curves)}
    low, high = min(values), max(values)
    norm: Normalize = (
        LogNorm(low, high) if low > 0 and high / low >= 10 else Normalize(low, high or 1.0)
    )
    base = mpl.colormaps["viridis"]
    cmap = ListedColormap([base(0.9 * i / 255) for i in range(256)])  # no pale yellow end
    cax = side.inset_axes((0.04, 0.0, 0.07, 0.36))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label(f"colour: {key.removeprefix('hyperparameters.')}")
    return {
        id(c): cmap(norm(float(v))) if _number(v := c.hparams.get(key)) else "0.5" for c in curves
    }


def _draw(
    ax: Axes,
    series: tuple[list[float], list[float]],
    curve: _Curve,
    colour: Any,
    *,
    markers: bool,
    solo: bool,
) -> None:
    xs, ys = series
    if not xs:
        return
    from matplotlib import patheffects

    failed = curve.status == TrialStatus.FAILED
    style: dict[str, Any] = {
        "color": colour,
        "linewidth": 2.8 if curve.best else 1.8 if solo else 1.4,
        "alpha": 1.0 if curve.best or solo else 0.8,
        "linestyle": "--" if failed else "-",
        "zorder": 5 if curve.best else 2,
    }
    if markers or len(xs) == 1:
        style.update(marker="o", markersize=4.5 if curve.best else 3, markeredgewidth=0)
    if curve.best:
        style["path_effects"] = [patheffects.withStroke(linewidth=4.6, foreground="black")]
    ax.plot(xs, ys, **style)
    if failed:
        ax.plot(xs[-1:], ys[-1:], marker="x", color=colour, markersize=8, zorder=6)
    if curve.best and markers:
        ax.annotate(
            "best",
            (xs[-1], ys[-1]),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
            fontweight="bold",
        )


def _rungs(
    top: Axes, bottom: Axes, target: RunDir | SweepDir, curves: list[_Curve], x: Unit
) -> None:
    """ASHA's rung lengths as dotted vertical lines, where they fall alike for every trial."""
    if not isinstance(target, SweepDir) or len(target.rung_lengths) < 2 or target.unit is None:
        return
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
        return
    last = len(where) - 1
    for rung, position in enumerate(where):
        for ax in (top, bottom):
            ax.axvline(position, color="0.45", linestyle=":", linewidth=1.1, zorder=1)
        length = format_number(target.rung_lengths[rung])
        name = unit.value[:-1] if length == "1" else unit.value
        top.text(
            position,
            1.0,
            f" rung {rung}: {length} {name} " + ("(max) " if rung == last else ""),
            transform=top.get_xaxis_transform(),
            rotation=0,
            ha="right" if rung == last else "left",
            va="bottom",
            fontsize=8,
            color="0.3",
        )


def _legend(side: Axes, curves: list[_Curve], colours: dict[int, Any]) -> None:
    from matplotlib.lines import Line2D

    shown = curves[:_LEGEND_MAX]
    handles: list[Any] = [
        Line2D(
            [],
            [],
            color=colours[id(c)],
            linewidth=2.8 if c.best else 1.6,
            linestyle="--" if c.status == TrialStatus.FAILED else "-",
        )
        for c in shown
    ]
    labels = [c.label for c in shown]
    if len(curves) > len(shown):
        handles.append(Line2D([], [], color="none"))
        labels.append(f"... and {len(curves) - len(shown)} more")
    side.legend(
        handles,
        labels,
        loc="upper left",
        fontsize=8,
        frameon=False,
        title="best first",
        title_fontsize=8,
        alignment="left",
        borderaxespad=0.0,
    )


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
