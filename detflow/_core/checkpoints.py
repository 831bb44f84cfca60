"""A run's ``checkpoints/`` directory as a layout: its checkpoints, their metrics, which to keep.

``checkpoints/<batches, 10 digits>/`` is one complete checkpoint (``state.json`` holds its
counters and, when it was validated there, ``searcher.metric`` as ``metric``); ``latest.json``
and ``best.json`` point at the last good and the best one; ``.tmp-*`` is a write cut short.
The harness writes and reads checkpoints (:mod:`detflow._harness.checkpoint`); the sweep
driver prunes an ended trial's with :func:`retain`. Both decide what stays with :func:`kept`.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from detflow._core.files import remove_quietly, write_atomic

__all__ = [
    "BEST_POINTER",
    "LATEST_POINTER",
    "checkpoint_metric",
    "checkpoint_names",
    "kept",
    "pointer",
    "retain",
]

LATEST_POINTER = "latest.json"
BEST_POINTER = "best.json"


def checkpoint_names(root: Path) -> list[str]:
    """The complete checkpoints in ``root``, oldest (fewest batches) first."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def checkpoint_metric(root: Path, name: str) -> float | None:
    """The ``searcher.metric`` checkpoint ``name`` was validated at; None when it was not (or
    its ``state.json`` cannot say)."""
    try:
        meta = json.loads((root / name / "state.json").read_text())
    except (OSError, ValueError):
        return None
    metric = meta.get("metric") if isinstance(meta, dict) else None
    if isinstance(metric, bool) or not isinstance(metric, (int, float)):
        return None
    return float(metric) if math.isfinite(metric) else None


def pointer(root: Path, name: str) -> str | None:
    """The checkpoint a pointer file (``latest.json``, ``best.json``) names, if it reads."""
    try:
        value = json.loads((root / name).read_text())
    except (OSError, ValueError):
        return None
    target = value.get("name") if isinstance(value, dict) else None
    return target if isinstance(target, str) else None


def kept(
    metrics: Mapping[str, float | None],
    *,
    latest: int,
    best: int,
    smaller_is_better: bool,
    pinned: Iterable[str] = (),
) -> set[str]:
    """Which of the checkpoints ``metrics`` lists (name -> metric at it, None when it was not
    validated there) stay: the ``latest`` newest, the ``best`` best by metric (of equal
    metrics the earlier, as ``best.json`` keeps it), and ``pinned``.

    >>> found = {"0000000010": 0.5, "0000000020": None, "0000000030": 0.2, "0000000040": 0.3}
    >>> sorted(kept(found, latest=1, best=1, smaller_is_better=True))
    ['0000000030', '0000000040']
    >>> sorted(kept(found, latest=0, best=2, smaller_is_better=False))
    ['0000000010', '0000000040']
    >>> kept(found, latest=0, best=0, smaller_is_better=True)
    set()
    """
    names = sorted(metrics)
    keep = set(names[len(names) - latest :]) if latest > 0 else set()
    scored = [(m if smaller_is_better else -m, n) for n, m in metrics.items() if m is not None]
    keep.update(name for _, name in sorted(scored)[:best] if best > 0)
    keep.update(name for name in pinned if name in metrics)
    return keep


def retain(
    root: Path, *, latest: int, best: int, smaller_is_better: bool, keep_one: bool = False
) -> list[str]:
    """Keep the ``latest`` newest and the ``best`` best checkpoints of an ended run in
    ``root``; delete the others (and writes cut short); return the names deleted, oldest
    first. ``keep_one``: keep at least one checkpoint, its best (its newest when none was
    validated), where it has any. ``best.json`` is pointed at the best one kept;
    ``latest.json`` and ``best.json`` are removed when what they named is gone.

    Only for a run that no process trains, resumes or promotes any more: a running one keeps
    its latest (see :meth:`detflow._harness.checkpoint.CheckpointStore.save`).

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for batches, metric in ((10, 0.5), (20, 0.2), (30, 0.4)):
    ...     (root / f"{batches:010d}").mkdir()
    ...     _ = (root / f"{batches:010d}" / "state.json").write_text(json.dumps({"metric": metric}))
    >>> retain(root, latest=0, best=0, smaller_is_better=True, keep_one=True)
    ['0000000010', '0000000030']
    >>> checkpoint_names(root), pointer(root, "best.json")
    (['0000000020'], '0000000020')
    """
    names = checkpoint_names(root)
    metrics = {name: checkpoint_metric(root, name) for name in names}
    keep = kept(metrics, latest=latest, best=best, smaller_is_better=smaller_is_better)
    if keep_one and not keep and names:
        keep = kept(metrics, latest=0, best=1, smaller_is_better=smaller_is_better) or {names[-1]}
    deleted = [name for name in names if name not in keep]
    for name in deleted:
        shutil.rmtree(root / name, ignore_errors=True)
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".") and ".tmp-" in path.name:
                remove_quietly(path)
    if pointer(root, LATEST_POINTER) not in keep:
        (root / LATEST_POINTER).unlink(missing_ok=True)
    scored = {n: m for n, m in metrics.items() if n in keep}
    top = kept(scored, latest=0, best=1, smaller_is_better=smaller_is_better)
    if top:
        (name,) = top
        if pointer(root, BEST_POINTER) != name:
            text = json.dumps({"name": name, "metric": metrics[name]})
            write_atomic(root / BEST_POINTER, text.encode())
    else:
        (root / BEST_POINTER).unlink(missing_ok=True)
    return deleted
