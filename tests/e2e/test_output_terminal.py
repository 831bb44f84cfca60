"""What a person sees in a terminal: the progress bar and the log share it (no line holds
both, the bar current when a line is printed, only the log left after it), and a run's
last line names how it ended, its metric and its run directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.terminal import screen_lines
from tests.support import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = re.compile(r"(\d+)/(\d+) batches")
RECORD = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,]+\]\[[\w.]+\]\[[A-Z]+\] - ")
WHERE = re.compile(r" at epoch (\d+), batch (\d+)/(\d+)")

COMMANDS = {
    "fit": [str(REPO / "train.py")],
    "loop": ["-m", "trials.quadratic_loop"],
}


def in_a_terminal(command: list[str], cwd: Path) -> str:
    """``command``'s output as ``script`` records it from a pseudo-terminal 120 wide."""
    if shutil.which("script") is None:
        pytest.fail("`script` (util-linux) is needed to run a command in a pseudo-terminal")
    shell = f"stty cols 120 rows 40; exec {shlex.join(command)}"
    done = subprocess.run(
        ["script", "-qec", shell, "/dev/null"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"},
        capture_output=True,
        timeout=180,
        check=False,
    )
    output = done.stdout.decode()
    assert done.returncode == 0, output
    return output


@pytest.mark.parametrize("style", sorted(COMMANDS))
def test_the_bar_and_the_log_share_the_terminal(tmp_path: Path, style: str) -> None:
    run_dir = tmp_path / "run"
    raw = in_a_terminal(
        [
            sys.executable,
            *COMMANDS[style],
            "+experiment=quadratic",
            "+hyperparameters.seconds_per_batch=0.01",  # 128 batches: the bar is drawn a while
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    plain = ANSI.sub("", raw)
    assert BAR.search(plain), "no progress bar was drawn"
    lines = screen_lines(raw)
    leftovers = [line for line in lines if not RECORD.match(line) or BAR.search(line)]
    assert leftovers == []  # nothing but log records; no record shares a line with the bar
    # the bar drawn below each record shows at least the batches the record says
    records = list(re.finditer(r"\[detflow\]\[INFO\] - [^\r\n]*", plain))
    checked = 0
    for record, after in zip(records, [*records[1:], None], strict=True):
        where = WHERE.search(record.group())
        drawn = BAR.search(plain, record.end(), after.start() if after else len(plain))
        if where and drawn:
            epoch, batch, per_epoch = map(int, where.groups())
            assert int(drawn.group(1)) >= (epoch - 1) * per_epoch + batch, record.group()
            checked += 1
    assert checked >= 8  # every trained: / validated: line but the last ones, after the bar
    result = json.loads((run_dir / "result.json").read_text())
    assert lines[-1].endswith(
        f"completed 128 batches (4 epochs): validation_loss {result['metric']:.4g} "
        f"(best {result['best_metric']:.4g}); run directory {run_dir.resolve()}"
    )
    trained = [line for line in lines if "trained: " in line]
    assert len(trained) == 5 and all(WHERE.search(line) for line in trained)
    assert trained[0].endswith(" at epoch 1, batch 32/32" + trained[0].split("32/32")[1])
