"""TensorBoard scalar event files for a run, written when ``tensorboard`` is installed.

Every report of a run (training and validation metrics) becomes scalars tagged
``train/<name>`` and ``validation/<name>`` at step = batches trained, in
``<run dir>/tensorboard/``; ``tensorboard --logdir SWEEP_DIR`` then shows every trial of a
sweep. Nothing here is required: without ``tensorboard`` (or with ``DETFLOW_TENSORBOARD=0``)
:func:`open_writer` returns ``None`` and nothing is written; ``DETFLOW_TENSORBOARD=1`` writes
the files even where ``tensorboard`` is not installed.

The event file is written here, not through ``tensorboard``'s writer: importing that takes
~0.35 s, which every trial's start-up would pay. The format is small and stable: TFRecord
framing (length, masked CRC-32C, payload, masked CRC-32C) around ``tensorflow.Event``
protobuf messages, of which only the scalar fields are used (see :func:`_event`).
"""

from __future__ import annotations

import importlib.util
import math
import os
import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["ENV", "SUBDIR", "ScalarWriter", "open_writer"]

#: The run directory's subdirectory that holds the event files.
SUBDIR = "tensorboard"
#: ``0`` writes no event files even where ``tensorboard`` is installed; ``1`` writes them
#: even where it is not.
ENV = "DETFLOW_TENSORBOARD"

_OFF = ("0", "false", "no", "off")
_ON = ("1", "true", "yes", "on")


class ScalarWriter:
    """Writes metrics as TensorBoard scalars against batches trained.

    Made by :func:`open_writer`. Each :meth:`write` is flushed to the operating system at
    once, so a killed job loses no reported scalar.
    """

    def __init__(self, handle: IO[bytes], path: Path) -> None:
        self._handle = handle
        self._path = path

    @property
    def path(self) -> str:
        """The event file this writer appends to."""
        return str(self._path)

    def write(
        self, kind: str, metrics: Mapping[str, Any], batches: int, wall_time: float | None = None
    ) -> None:
        """One report: each finite numeric metric as scalar ``<kind>/<name>`` at ``batches``."""
        values = {
            f"{kind}/{name}": float(value)
            for name, value in metrics.items()
            if isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        }
        if not values:
            return
        summary = b"".join(_message(1, _scalar(tag, value)) for tag, value in values.items())
        now = time.time() if wall_time is None else wall_time
        self._record(_event(now, step=batches, field=5, payload=summary))
        self.flush()

    def flush(self) -> None:
        """Hand what is written to the operating system."""
        self._handle.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._handle.close()

    def _record(self, data: bytes) -> None:
        length = struct.pack("<Q", len(data))
        self._handle.write(length)
        self._handle.write(struct.pack("<I", _masked_crc32c(length)))
        self._handle.write(data)
        self._handle.write(struct.pack("<I", _masked_crc32c(data)))


def open_writer(run_dir: Path, *, start_batches: int = 0) -> ScalarWriter | None:
    """A :class:`ScalarWriter` into ``run_dir/tensorboard``, or ``None`` without tensorboard.

    ``start_batches`` is where a resumed run continues (its checkpoint): TensorBoard then drops
    the events a previous attempt wrote past it (they are trained again), as ``metrics.jsonl``
    does.

    Examples
    --------
    >>> import tempfile
    >>> writer = open_writer(Path(tempfile.mkdtemp()))
    >>> if writer is not None:  # only where tensorboard is installed
    ...     writer.write("validation", {"validation_loss": 0.25}, batches=32)
    ...     writer.close()
    """
    setting = os.environ.get(ENV, "").strip().lower()
    if setting in _OFF:
        return None
    if setting not in _ON and importlib.util.find_spec("tensorboard") is None:
        return None
    log_dir = run_dir / SUBDIR
    log_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f"events.out.tfevents.{int(now):010d}.{socket.gethostname()}.{os.getpid()}.0"
    path = log_dir / name
    suffix = 0
    while path.exists():  # the same second, host and pid: a second writer in one process
        suffix += 1
        path = log_dir / f"{name[:-2]}.{suffix}"
    writer = ScalarWriter(open(path, "xb"), path)  # noqa: SIM115 - closed by close()
    writer._record(_event(now, step=0, field=3, payload=b"brain.Event:2"))
    if start_batches > 0:  # SessionLog(status=START): TensorBoard purges steps after it
        writer._record(_event(now, step=start_batches + 1, field=7, payload=b"\x08\x01"))
    writer.flush()
    return writer


# -- the protobuf messages (tensorboard/compat/proto/event.proto, summary.proto) ------------
def _event(wall_time: float, *, step: int, field: int, payload: bytes) -> bytes:
    """``Event{wall_time=1, step=2, <field>: payload}``; field 3 is ``file_version``
    (a string), 5 ``summary`` and 7 ``session_log`` (messages)."""
    head = b"\x09" + struct.pack("<d", wall_time)
    if step:
        head += b"\x10" + _varint(step)
    return head + _message(field, payload)


def _scalar(tag: str, value: float) -> bytes:
    """``Summary.Value{tag=1, simple_value=2}``."""
    return _message(1, tag.encode()) + b"\x15" + struct.pack("<f", value)


def _message(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): a string, bytes or an embedded message."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# -- TFRecord checksums: CRC-32C (Castagnoli), masked -----------------------------------------
def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C of ``data``, rotated right by 15 bits plus a constant."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
