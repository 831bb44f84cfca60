"""The progress bar shares its terminal with the log: lines above it, the bar current, and
nothing but the log left once it is gone."""

from __future__ import annotations

import fcntl
import logging
import os
import select
import struct
import sys
import termios
from collections.abc import Iterator
from typing import IO

import pytest

from detflow._harness.progress import Progress, make_progress
from tests.harness.terminal import screen_lines


@pytest.fixture
def terminal() -> Iterator[tuple[IO[str], int]]:
    """A pseudo-terminal 120 columns wide: the stream that writes to it and the descriptor
    that reads what it shows."""
    pytest.importorskip("rich")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    stream = os.fdopen(slave, "w", buffering=1)
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def _shown(master: int) -> str:
    chunks = []
    while select.select([master], [], [], 0.2)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks).decode()


def test_log_lines_go_above_the_bar_which_is_current_and_leaves_nothing_behind(
    terminal: tuple[IO[str], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, master = terminal
    monkeypatch.setattr(sys, "stdout", stream)  # here: pytest sets its own as the test starts
    monkeypatch.setattr(sys, "stderr", stream)
    logger = logging.getLogger("detflow.test_progress")
    handler = logging.StreamHandler(stream)  # as Hydra's console handler: the same terminal
    logger.addHandler(handler)
    logger.propagate = False
    try:
        bar = make_progress(225, 0)
        assert type(bar) is not Progress  # a real bar: this is a terminal
        bar.update(17)
        bar.update(45)
        logger.warning("trained: 1438 records at epoch 1, batch 45/45")
        print("a print of the user's")
        bar.update(90)
        logger.warning("validated: 359 records at epoch 2, batch 45/45")
        bar.close()
        logger.warning("completed 225 batches: the end")
    finally:
        logger.removeHandler(handler)
    raw = _shown(master)
    # each line printed redraws the bar at the count it was last given
    after_first = raw.split("batch 45/45", 1)[1]
    assert "45/225" in after_first.split("validated", 1)[0]
    assert "90/225" in raw.split("validated: 359", 1)[1]
    assert screen_lines(raw) == [
        "trained: 1438 records at epoch 1, batch 45/45",
        "a print of the user's",
        "validated: 359 records at epoch 2, batch 45/45",
        "completed 225 batches: the end",
    ]
    assert handler.stream is stream and sys.stdout is stream  # given back


def test_no_bar_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    bar = make_progress(10, 0)
    bar.update(5)
    bar.close()
    assert type(bar) is Progress
    assert capsys.readouterr().err == ""
