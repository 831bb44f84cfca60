"""The ``quadratic`` problem as a plain training loop: detflow without a :class:`Trial`.

Run from the repository root, with the example's experiments::

    python -m trials.quadratic_loop +experiment=quadratic 'searcher.max_length=10 batches'
    python -m trials.quadratic_loop -m +experiment=quadratic searcher.name=asha \\
        searcher.max_trials=4 'hyperparameters.lr=tag(log, interval(0.01, 0.2))'

Noisy gradient descent on ``f(w) = sum_i c_i (w_i - 1)^2``: each batch holds samples of
gradient noise; the optimizer steps once per ``aggregation_frequency`` batches. Each epoch
visits the samples in an order shuffled with Python's global RNG, as a shuffling
``DataLoader`` does with torch's: detflow saves and restores that RNG, so a resumed run
trains on the same batches as an uninterrupted one. Hyperparameters: ``lr`` (required),
``dims`` (8), ``noise`` (1.0), ``records_per_epoch`` of the data (256), ``seconds_per_batch``
(sleep, to play a slower model in pre-emption tests).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import conf
import detflow
from detflow import FitResult, Run

conf.register()


class NoisySamples:
    """The training data: fixed noise samples, in batches, reshuffled every epoch."""

    def __init__(self, seed: int, records: int, batch_size: int, noise: float) -> None:
        draw = random.Random(f"{seed}:samples")
        self.samples = [draw.gauss(0.0, noise) for _ in range(records)]
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    def __iter__(self) -> Iterator[list[float]]:
        order = list(range(len(self.samples)))
        random.shuffle(order)  # the global RNG, as at the start of each epoch of a DataLoader
        for start in range(0, len(order), self.batch_size):
            yield [self.samples[i] for i in order[start : start + self.batch_size]]


def train(run: Run) -> FitResult:
    """Train the quadratic in a plain loop; what detflow needs is the ``run.`` calls."""
    hp = run.hparams
    lr, dims = float(hp["lr"]), int(hp.get("dims", 8))
    seconds_per_batch = float(hp.get("seconds_per_batch", 0.0))
    curvature = [1.0 + i / max(1, dims - 1) for i in range(dims)]
    data = NoisySamples(
        run.seed,
        int(hp.get("records_per_epoch", 256)),
        run.per_slot_batch_size,
        float(hp.get("noise", 1.0)),
    )

    def loss(w: list[float]) -> float:
        return sum(c * (x - 1.0) ** 2 for c, x in zip(curvature, w, strict=True))

    state: dict[str, Any] = run.restore() or {"w": [0.0] * dims, "grad": [0.0] * dims, "pending": 0}
    if run.should_validate:  # perform_initial_validation: once, before the first batch
        run.report_validation({"loss": loss(state["w"])})
    for batch in run.batches(data):
        if seconds_per_batch:
            time.sleep(seconds_per_batch)
        w, grad = state["w"], state["grad"]
        noise = sum(batch) / len(batch)
        run.report_training({"loss": loss(w) + noise * noise})
        for i, c in enumerate(curvature):
            grad[i] += 2 * c * (w[i] - 1.0) + noise
        state["pending"] += 1
        if state["pending"] == run.aggregation_frequency:
            for i in range(dims):
                w[i] -= lr * grad[i] / state["pending"]
                grad[i] = 0.0
            state["pending"] = 0
        if run.should_validate:
            run.report_validation({"loss": loss(w)})
        if run.should_checkpoint:
            run.checkpoint(state)
    return run.finish()


CONF = Path(__file__).resolve().parent.parent / "conf"  # the example's configs


@detflow.main(config_path=str(CONF), config_name="config")
def main(cfg: Any) -> float | None:
    """``python -m trials.quadratic_loop +experiment=quadratic``: one run, a sweep, Slurm."""
    run = detflow.init(cfg)
    return train(run).validation.get(run.experiment.searcher.metric)


if __name__ == "__main__":
    main()
