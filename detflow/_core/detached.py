"""What a detached sweep (``hydra.sweeper.detach=true``) leaves in its directory about its
driver job: written by :mod:`detflow._hydra.detach` when it submits the driver, read by
``detflow status`` / ``detflow cancel`` (:mod:`detflow._results.status`).

>>> import tempfile
>>> sweep = Path(tempfile.mkdtemp())
>>> DriverRecord("123", "detflow-sweep-train", ["python", "train.py", "-m"], "/work",
...              str(sweep / ".detflow/slurm")).write(sweep)
>>> DriverRecord.read(sweep).job_id
'123'
>>> DriverRecord.read(Path(tempfile.mkdtemp())) is None
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from detflow._core.files import write_atomic

__all__ = ["DRIVER_ENV", "DRIVER_LOG", "DRIVER_RECORD", "DriverRecord"]

#: Set (to the sweep directory) in the driver job's environment: the sweep runs there,
#: it is not detached again.
DRIVER_ENV = "DETFLOW_SWEEP_DRIVER"
#: The driver job's record, relative to the sweep directory.
DRIVER_RECORD = ".detflow/driver/driver.json"
#: The driver job's output (every run of it, requeues appended), relative to the sweep dir.
DRIVER_LOG = ".detflow/driver/driver.log"


@dataclass(frozen=True)
class DriverRecord:
    """The driver job of a detached sweep: its Slurm job id and name, the command it runs
    (from ``cwd``), and where the sweep's trial jobs keep their scripts (``trials_under``:
    the static part of ``hydra.launcher.submitit_folder``), which tells them apart."""

    job_id: str
    job_name: str
    command: list[str]
    cwd: str
    trials_under: str

    def write(self, sweep_dir: Path) -> None:
        """Write the record into ``sweep_dir`` (atomically)."""
        path = sweep_dir / DRIVER_RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(asdict(self), indent=2) + "\n").encode())

    @classmethod
    def read(cls, sweep_dir: Path) -> DriverRecord | None:
        """The record in ``sweep_dir``; ``None`` when the sweep was never detached (or the
        file is not one: a sweep without a readable record has no driver job to show)."""
        try:
            raw = json.loads((sweep_dir / DRIVER_RECORD).read_text())
            return cls(
                job_id=str(raw["job_id"]),
                job_name=str(raw["job_name"]),
                command=[str(word) for word in raw["command"]],
                cwd=str(raw["cwd"]),
                trials_under=str(raw["trials_under"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
