"""A full disk while ``torch.save`` writes a checkpoint's ``trial.pt``: one line, the last good
checkpoint intact, and ``resume=true`` (once there is room) ends as an uninterrupted run.

torch's zip writer reports a failed write as ``RuntimeError: [enforce fail at
inline_container.cc:...]``; the checkpoint store finds the ``OSError`` behind it (its
``__context__``) and raises that, naming the file. The end-to-end case uses a real full disk:
a small tmpfs (root only, as in ``test_faults.py``) on the run's ``checkpoints/``.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from detflow._harness import checkpoint as checkpoint_module  # noqa: E402
from detflow._harness.checkpoint import CheckpointStore  # noqa: E402
from tests.support import REPO, needs_root  # noqa: E402

#: A one-file project whose trial's state is a 64 KiB tensor (torch.save's trial.pt).
SCRIPT = """
import torch
import detflow


class TensorFit(detflow.Trial):
    def __init__(self, run):
        self.run = run
        self.w = torch.zeros(int(run.hparams["size"]), dtype=torch.float32)

    def training_data(self, epoch):
        return [[1.0] * self.run.per_slot_batch_size] * 16

    def train_batch(self, batch):
        self.w -= self.run.hparams["lr"] * 2 * (self.w - 3.0)
        return {"loss": float(((self.w - 3.0) ** 2).mean())}

    def validation_data(self):
        return [[0.0] * 4]

    def evaluate_batch(self, batch):
        return {"loss": float(((self.w - 3.0) ** 2).mean())}

    def state_dict(self):
        return {"w": self.w}

    def load_state_dict(self, state):
        self.w = state["w"].clone()


detflow.register_experiment(
    "tensor",
    {
        "hyperparameters": {"global_batch_size": 8, "lr": 0.01, "size": 16384},
        "searcher": {"max_length": "4 epochs"},
    },
)


@detflow.main()
def train(cfg):
    run = detflow.init(cfg)
    run.fit(TensorFit(run))


if __name__ == "__main__":
    train()
"""


# -- the store alone: torch's RuntimeError becomes the OSError behind it -----------------------
def _enospc_like_torch(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
    """What torch.save does on a full disk: the file's OSError, then its own RuntimeError."""
    handle.write(b"PK\x03\x04 partial")
    try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
        ) from None


def _saved(store: CheckpointStore, batches: int) -> Path:
    return store.save({"batches": batches}, {"w": torch.zeros(4)}, None, True)


def test_torch_save_failing_on_a_full_disk_raises_the_oserror_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CheckpointStore(tmp_path / "checkpoints")
    first = _saved(store, 8)
    monkeypatch.setattr(torch, "save", _enospc_like_torch)
    with pytest.raises(OSError) as info:
        _saved(store, 16)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "checkpoints" / f"{16:010d}" / "trial.pt")
    loaded = store.load()  # the last good checkpoint, whole
    assert loaded is not None and loaded.path == first
    assert sorted(p.name for p in store.root.iterdir()) == [f"{8:010d}", "latest.json"]


def test_another_torch_save_error_is_not_taken_for_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuses(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("cannot pickle 'generator' object")

    store = CheckpointStore(tmp_path / "checkpoints")
    monkeypatch.setattr(torch, "save", refuses)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        _saved(store, 8)
    assert list(store.root.iterdir()) == []


def test_without_an_oserror_behind_it_the_free_space_decides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torch whose writer says nothing of the OSError: a disk with less room than the
    state's tensors is full; one with room is not (the RuntimeError stands)."""

    def fails(obj: Any, handle: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:445] . PytorchStreamWriter")

    class Statvfs:
        def __init__(self, free: int) -> None:
            self.f_bavail, self.f_frsize = free, 1

    store = CheckpointStore(tmp_path / "checkpoints")
    monkeypatch.setattr(torch, "save", fails)
    monkeypatch.setattr(checkpoint_module.os, "statvfs", lambda path: Statvfs(4096))
    with pytest.raises(OSError) as info:
        _saved(store, 8)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(checkpoint_module.os, "statvfs", lambda path: Statvfs(10**12))
    with pytest.raises(RuntimeError, match="PytorchStreamWriter"):
        _saved(store, 8)


# -- a real full disk, end to end ---------------------------------------------------------------


def _train(project: Path, run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    log = run_dir.parent / f"{run_dir.name}.log"  # Hydra's log file off the small disk
    return subprocess.run(
        [
            sys.executable,
            str(project / "train.py"),
            "+experiment=tensor",
            f"hydra.run.dir={run_dir}",
            f"hydra.job_logging.handlers.file.filename={log}",
            *extra,
        ],
        cwd=project,
        env={
            **{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
            "PYTHONPATH": str(REPO),
            "DETFLOW_TENSORBOARD": "0",
        },
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _pages(size: int, page: int) -> int:
    return -(-size // page)


@needs_root
def test_disk_full_while_torch_saves_a_checkpoint(
    tmp_path: Path, tmpfs: Callable[[Path, int], Path]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    reference = tmp_path / "ref"  # as long a name as "run"
    done = _train(project, reference)
    assert done.returncode == 0, done.stdout + done.stderr
    kept = reference / "checkpoints" / f"{64:010d}"
    assert (kept / "trial.pt").stat().st_size > 64 * 1024  # torch.save, of a 64 KiB tensor

    run_dir = tmp_path / "run"
    checkpoints = tmpfs(run_dir / "checkpoints", 512)
    page = os.statvfs(checkpoints).f_bsize
    files = sum(_pages(p.stat().st_size, page) for p in kept.iterdir())
    # Room for checkpoint 16 and its two pointers, then for half of checkpoint 32's trial.pt:
    # the disk fills while torch.save writes it.
    half = _pages((kept / "trial.pt").stat().st_size, page) // 2
    info = os.statvfs(checkpoints)
    filler = checkpoints / "filler"
    filler.write_bytes(b"\0" * (info.f_bavail * info.f_frsize - (files + 2 + half) * page))

    failed = _train(project, run_dir)
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "Traceback" not in output and "enforce fail" not in output, output
    lines = [line for line in output.splitlines() if "No space left on device" in line]
    assert len(lines) == 1, output
    trial_pt = checkpoints / f"{32:010d}" / "trial.pt"
    assert f"trial failed: cannot write {trial_pt}: No space left on device" in lines[0]
    assert "resume=true" in lines[0]
    latest = json.loads((checkpoints / "latest.json").read_text())
    assert latest["name"] == f"{16:010d}"
    loaded = CheckpointStore(checkpoints).load()
    assert loaded is not None and loaded.path == checkpoints / f"{16:010d}"
    assert loaded.trial_state["w"].shape == (16384,)
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        f"{16:010d}",
        "best.json",
        "filler",
        "latest.json",
    ]
    assert [str(p) for p in run_dir.rglob("*") if ".tmp" in p.name] == []

    filler.unlink()
    resumed = _train(project, run_dir, "resume=true")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resumed from {checkpoints / f'{16:010d}'}: 16 batches" in resumed.stdout
    got = CheckpointStore(checkpoints).load()
    want = CheckpointStore(reference / "checkpoints").load()
    assert got is not None and want is not None and got.meta["batches"] == 64
    assert torch.equal(got.trial_state["w"], want.trial_state["w"])
    assert json.loads((run_dir / "result.json").read_text())["batches"] == 64
