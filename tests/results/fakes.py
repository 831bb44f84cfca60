"""Sweep and run directories written by hand, file by file, as the reader reads them.

Faster than a real sweep and shaped at will: 50 trials, 16 values of a categorical key, rungs
close together, a last batch of each epoch that is short. The files are the contract of
``detflow._core.artifacts`` (``results.csv``, ``searcher.json``, ``result.json``,
``hparams.json``, ``metrics.jsonl``, ``.hydra/config.yaml``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from detflow._core.artifacts import SweepState, results_header, results_row

#: Sixteen values of a categorical hyperparameter, in the order the search lists them.
ACTIVATIONS = (
    "relu", "gelu", "silu", "tanh", "elu", "selu", "mish", "softplus",
    "leaky", "prelu", "celu", "hardswish", "sigmoid", "swish", "relu6", "identity",
)  # fmt: skip
#: The swept keys in the search's own order: not alphabetical (act < dropout < lr).
KEYS = ("hyperparameters.lr", "hyperparameters.dropout", "hyperparameters.act")
BATCHES_PER_EPOCH = 10
GLOBAL_BATCH_SIZE = 32


@dataclass
class FakeTrial:
    trial_id: int
    hparams: dict[str, Any]
    rung: int
    status: str
    curve: list[tuple[int, float, float]] = field(default_factory=list)  # batches, loss, acc
    rung_ends: dict[int, float] = field(default_factory=dict)  # rung -> loss at its end

    @property
    def batches(self) -> int:
        return self.curve[-1][0] if self.curve else 0

    @property
    def best(self) -> float:
        return min(loss for _, loss, _ in self.curve)


def write_sweep(
    root: Path,
    trials: int,
    *,
    rungs: tuple[Fraction, ...] = (Fraction(1), Fraction(4), Fraction(16)),
    failed: tuple[int, ...] = (),
    unit: str = "epochs",
) -> Path:
    """An ASHA sweep of ``trials`` trials over :data:`KEYS`, its lengths in ``unit``
    (``epochs`` or ``batches``); return its directory.

    Trial ``i`` reaches rung ``k`` when it is among the best ``trials / 4**k`` at rung 0;
    every trial's loss is lowest before its end (it rises a little at the last validations),
    so its best differs from its last. ``failed`` trials fail in their first rung.
    """
    root.mkdir(parents=True, exist_ok=True)
    per = BATCHES_PER_EPOCH if unit == "epochs" else 1  # batches in one unit
    made = [_trial(i, trials) for i in range(trials)]
    order = sorted(made, key=lambda t: (_quality(t.hparams), t.trial_id))
    for position, trial in enumerate(order):
        reach = 0
        while reach + 1 < len(rungs) and position < trials / 4 ** (reach + 1):
            reach += 1
        trial.rung = reach
        trial.status = "COMPLETED" if reach == len(rungs) - 1 else "STOPPED_EARLY"
        if trial.trial_id in failed:
            trial.rung, trial.status = 0, "FAILED"
    for trial in made:
        end = rungs[trial.rung] * per
        if trial.status == "FAILED":
            end = Fraction(math.ceil(rungs[0] * per) // 2)
        quality = _quality(trial.hparams)
        ends = {math.ceil(r * per) for r in rungs}
        for batches in (b for b in range(1, math.ceil(end) + 1) if b % 2 == 0 or b in ends):
            loss = quality + 2.0 / (1 + batches / 8) + 0.0004 * max(0, batches - 0.8 * end) ** 1.5
            trial.curve.append((batches, loss, 1 / (1 + loss)))
        for k, length in enumerate(rungs[: trial.rung + 1] if trial.status != "FAILED" else ()):
            at = math.ceil(length * per)
            trial.rung_ends[k] = next(loss for b, loss, _ in trial.curve if b == at)
        _write_run(root / str(trial.trial_id), trial, rungs, unit)
    _write_state(root, made, rungs, per)
    _write_results(root, made, unit, per)
    return root


def _trial(i: int, n: int) -> FakeTrial:
    fraction = (i * 0.6180339887) % 1.0  # spread evenly, in no sorted order
    hparams = {
        "hyperparameters.lr": round(10 ** (-3 + 2.5 * fraction), 6),
        "hyperparameters.dropout": [0.0, 0.1, 0.3][i % 3],
        "hyperparameters.act": ACTIVATIONS[i % len(ACTIVATIONS)],
    }
    return FakeTrial(i, hparams, 0, "")


def _quality(hparams: dict[str, Any]) -> float:
    """The loss a trial's curve settles at: best near lr 0.03, a little worse per act."""
    lr = hparams["hyperparameters.lr"]
    act = ACTIVATIONS.index(hparams["hyperparameters.act"])
    return float(0.05 + (math.log10(lr) + 1.5) ** 2 * 0.2 + act * 0.003 + hparams[KEYS[1]] * 0.05)


def _write_run(path: Path, trial: FakeTrial, rungs: tuple[Fraction, ...], unit: str) -> None:
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    hparams = {
        "hyperparameters.global_batch_size": {"value": GLOBAL_BATCH_SIZE, "source": "config"},
        **{k: {"value": v, "source": "searcher"} for k, v in trial.hparams.items()},
    }
    (path / "hparams.json").write_text(json.dumps(hparams))
    lines = []
    for batches, loss, accuracy in trial.curve:
        counts = {
            "records": batches * GLOBAL_BATCH_SIZE,
            "batches": batches,
            "steps": batches,
            "epochs": batches // BATCHES_PER_EPOCH,
        }
        lines.append({"kind": "train", **counts, "metrics": {"loss": loss * 1.1}})
        validation = {"validation_loss": loss, "validation_accuracy": accuracy}
        lines.append({"kind": "validation", **counts, "metrics": validation})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (path / ".hydra" / "config.yaml").write_text(
        "name: fake\nhyperparameters:\n  global_batch_size: 32\n"
        f"searcher:\n  name: asha\n  metric: validation_loss\n  smaller_is_better: true\n"
        f"  max_length: {rungs[-1]} {unit}\n"
    )
    if trial.status == "FAILED":
        return
    batches, loss, accuracy = trial.curve[-1]
    result = {
        "status": "completed",
        "records": batches * GLOBAL_BATCH_SIZE,
        "batches": batches,
        "steps": batches,
        "epochs": batches // BATCHES_PER_EPOCH,
        "target_batches": batches,
        "batches_per_epoch": BATCHES_PER_EPOCH,
        "global_batch_size": GLOBAL_BATCH_SIZE,
        "aggregation_frequency": 1,
        "length": str(Fraction(batches, BATCHES_PER_EPOCH) if unit == "epochs" else batches),
        "unit": unit,
        "metric": loss,
        "best_metric": trial.best,
        "validation": {"validation_loss": loss, "validation_accuracy": accuracy},
    }
    (path / "result.json").write_text(json.dumps(result))


def _write_state(root: Path, made: list[FakeTrial], rungs: tuple[Fraction, ...], per: int) -> None:
    trials = [
        {
            "trial_id": t.trial_id,
            "hparams": t.hparams,
            "rung": t.rung,
            "metrics": [[k, m] for k, m in sorted(t.rung_ends.items())],
            "length_trained": _fraction(Fraction(t.batches, per)),
            "error": "TrialError: loss is nan" if t.status == "FAILED" else None,
            "best": None if t.status == "FAILED" else t.best,
        }
        for t in made
    ]
    settings = {
        "searcher": "AshaSearcher",
        "smaller_is_better": True,
        "rung_lengths": [_fraction(r) for r in rungs],
        "seed": 0,
        "divisor": 4,
    }
    state = {"version": 1, "settings": settings, "trials": trials, "in_flight": []}
    state["keys"] = list(KEYS)
    SweepState.write(root / "searcher.json", state)


def _write_results(root: Path, made: list[FakeTrial], unit: str, per: int) -> None:
    keys = sorted(KEYS)  # as the sweeper writes results.csv: alphabetical
    text = ",".join(results_header(keys, unit)) + "\n"
    for t in made:
        failed = t.status == "FAILED"
        last = "" if not t.rung_ends else repr(t.rung_ends[max(t.rung_ends)])
        cells = [
            t.trial_id,
            t.status,
            t.rung,
            *(t.hparams[k] for k in keys),
            _number(Fraction(t.batches, per)),
            t.batches,
            "" if failed else repr(t.best),
            last,
            0,  # restarts
            "TrialError: loss is nan" if failed else "",
            root / str(t.trial_id),
            "",  # parent: a pbt child's only
        ]
        text += results_row(cells)
    (root / "results.csv").write_text(text)


def write_run(path: Path, *, records_per_epoch: int = 1438, epochs: int = 5) -> Path:
    """A finished run whose epochs end in a short batch: 1438 records in 45 batches of 32."""
    (path / ".hydra").mkdir(parents=True, exist_ok=True)
    gbs = 32
    per_epoch = -(-records_per_epoch // gbs)
    batches = per_epoch * epochs
    hparams = {"hyperparameters.global_batch_size": {"value": gbs, "source": "config"}}
    (path / "hparams.json").write_text(json.dumps(hparams))
    (path / ".hydra" / "config.yaml").write_text(
        "name: digits\nhyperparameters:\n  global_batch_size: 32\n"
        f"searcher:\n  name: single\n  metric: validation_loss\n  max_length: {epochs} epochs\n"
        "min_validation_period: 1 epochs\nmin_checkpoint_period: 100 batches\n"
    )
    result = {
        "status": "completed",
        "records": records_per_epoch * epochs,
        "batches": batches,
        "steps": batches,
        "epochs": epochs,
        "target_batches": batches,
        "batches_per_epoch": per_epoch,
        "global_batch_size": gbs,
        "aggregation_frequency": 1,
        "length": str(epochs),
        "unit": "epochs",
        "metric": 0.11,
        "best_metric": 0.09,
        "validation": {"validation_loss": 0.11, "validation_accuracy": 0.96},
    }
    (path / "result.json").write_text(json.dumps(result))
    return path


def _fraction(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def _number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.6g}"
