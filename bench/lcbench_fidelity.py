"""How well a short training run ranks lcbench's configurations by their final accuracy.

For each lcbench task, ``--configs`` random configurations (drawn as detflow's random search
draws them) are evaluated by the surrogate at a few epochs; each epoch's ranking is compared
with epoch 52's: Spearman's rank correlation, and the share of the top 10% at 52 epochs that
are also the top 10% at that epoch (0.1 is what a random ranking gives). This is why
detflow's rung defaults keep the bottom rung off 1 epoch of 52 (bench/README.md)::

    python -m bench.lcbench_fidelity            # 400 configs, every task, ~5 s
    python -m bench.lcbench_fidelity --configs 2000 --tasks 146212,3945
    python -m bench.lcbench_fidelity --pairs 1:4,1:52,4:13,4:52   # rung against next rung

``--pairs A:B,...`` prints Spearman's correlation between epochs A and B instead: how well a
rung predicts the next one, which is what a test of the rung at the next rung sees, against
how well it predicts the end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

from bench import lcbench
from detflow._search.space import sample

#: The epochs compared with the last.
EPOCHS = (1, 2, 4, 8, 13, 16, 26)


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    for rank, i in enumerate(order):
        ranks[i] = float(rank)
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float:
    """Spearman's rank correlation (ties broken by position: the surrogate's outputs are
    continuous)."""
    rx, ry = _ranks(xs), _ranks(ys)
    n = len(rx)
    mean = (n - 1) / 2
    sxy = sum((a - mean) * (b - mean) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mean) ** 2 for a in rx)
    return sxy / sxx


def top_overlap(xs: list[float], ys: list[float], share: float = 0.1) -> float:
    """The share of the top ``share`` by ``ys`` that is also the top ``share`` by ``xs``
    (larger is better for both)."""
    k = max(1, int(len(xs) * share))
    top_x = set(sorted(range(len(xs)), key=lambda i: -xs[i])[:k])
    top_y = set(sorted(range(len(ys)), key=lambda i: -ys[i])[:k])
    return len(top_x & top_y) / k


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lcbench_fidelity", description=__doc__)
    parser.add_argument("--configs", type=int, default=400, help="random configs per task")
    parser.add_argument("--tasks", default="", help="comma-separated task ids (default: all)")
    parser.add_argument("--metric", default="val_accuracy", choices=sorted(lcbench.METRICS))
    parser.add_argument("--pairs", default="", help="epoch pairs A:B,... to correlate")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t] or list(lcbench.tasks())
    dims = lcbench.space()
    configs = [sample(dims, random.Random(f"fidelity:{i}")) for i in range(args.configs)]
    if args.pairs:
        pairs = [_pair(text, parser) for text in args.pairs.split(",") if text]
        return _correlate_pairs(tasks, configs, pairs, args.metric)
    epochs = [*EPOCHS, lcbench.EPOCHS]
    larger = lcbench.METRICS[args.metric]
    by_epoch: dict[int, list[tuple[float, float]]] = {e: [] for e in EPOCHS}
    print("task     " + "  ".join(f"rho@{e:<2d} top@{e:<2d}" for e in EPOCHS))
    for task in tasks:
        rows = lcbench.query(task, [c for c in configs for _ in epochs], epochs * len(configs))
        sign = 1.0 if larger else -1.0
        at = {
            e: [sign * float(rows[i * len(epochs) + j][args.metric]) for i in range(len(configs))]
            for j, e in enumerate(epochs)
        }
        final = at[lcbench.EPOCHS]
        cells = []
        for e in EPOCHS:
            rho, overlap = spearman(at[e], final), top_overlap(at[e], final)
            by_epoch[e].append((rho, overlap))
            cells.append(f"{rho:+6.2f} {overlap:6.2f}")
        print(f"{task:8s} " + "  ".join(cells), flush=True)
    print(
        "median   "
        + "  ".join(
            f"{statistics.median(r for r, _ in by_epoch[e]):+6.2f} "
            f"{statistics.median(o for _, o in by_epoch[e]):6.2f}"
            for e in EPOCHS
        )
    )
    return 0


def _pair(text: str, parser: argparse.ArgumentParser) -> tuple[int, int]:
    first, _, second = text.partition(":")
    try:
        pair = int(first), int(second)
    except ValueError:
        parser.error(f"--pairs: {text!r} is not A:B (two epochs)")
    if not all(1 <= e <= lcbench.EPOCHS for e in pair):
        parser.error(f"--pairs: {text!r}: epochs are 1..{lcbench.EPOCHS}")
    return pair


def _correlate_pairs(
    tasks: list[str], configs: list[dict[str, object]], pairs: list[tuple[int, int]], metric: str
) -> int:
    epochs = sorted({e for pair in pairs for e in pair})
    sign = 1.0 if lcbench.METRICS[metric] else -1.0
    by_pair: dict[tuple[int, int], list[float]] = {p: [] for p in pairs}
    print("task     " + "  ".join(f"{a:>3d}->{b:<3d}" for a, b in pairs))
    for task in tasks:
        rows = lcbench.query(task, [c for c in configs for _ in epochs], epochs * len(configs))
        at = {
            e: [sign * float(rows[i * len(epochs) + j][metric]) for i in range(len(configs))]
            for j, e in enumerate(epochs)
        }
        cells = []
        for a, b in pairs:
            rho = spearman(at[a], at[b])
            by_pair[(a, b)].append(rho)
            cells.append(f"{rho:+9.2f}")
        print(f"{task:8s} " + "  ".join(cells), flush=True)
    print("median   " + "  ".join(f"{statistics.median(by_pair[p]):+9.2f}" for p in pairs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
