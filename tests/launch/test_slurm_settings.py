"""``hydra.launcher.*`` of ``detflow_slurm``: the sbatch options detflow writes itself are
refused in ``additional_parameters`` (with the option to use instead), names are sbatch's,
and numbers stay within what Slurm takes. No Slurm needed: the settings and the script
submitit would write are checked directly."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from submitit.slurm.slurm import _make_sbatch_string

from detflow._core.errors import ConfigError
from detflow._launch.slurm import settings_from
from detflow._launch.slurm_settings import MAX_TIME_MINUTES, OWNED_OPTIONS, SlurmSettings

WHERE = "hydra.launcher.additional_parameters"


def _refused(values: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        settings_from(values)
    message = str(info.value)
    assert "\n" not in message and " is not valid: expected " in message, message
    return message


@pytest.mark.parametrize("option", sorted(OWNED_OPTIONS))
@pytest.mark.parametrize("spelling", ["dash", "underscore", "leading dashes"])
def test_an_option_detflow_writes_is_refused_with_the_one_to_use(
    option: str, spelling: str
) -> None:
    key = {"dash": option, "underscore": option.replace("-", "_"), "leading dashes": f"--{option}"}
    message = _refused({"additional_parameters": {key[spelling]: "x"}})
    assert message.startswith(f"{WHERE} = {key[spelling]!r} is not valid"), message
    assert f"--{option} is detflow's, use {OWNED_OPTIONS[option]} instead" in message, message
    if spelling == "leading dashes":
        assert "without leading dashes" in message


@pytest.mark.parametrize(
    ("key", "reads"),
    [
        ("arr", "--arr abbreviates --array"),
        ("sig", "--sig abbreviates --signal"),
        ("out", "--out abbreviates --output"),
        ("job", "--job abbreviates --job-name"),
        ("no_req", "--no-req abbreviates --no-requeue"),
        ("req", "--req abbreviates --requeue"),
        ("o", "--o abbreviates --output or --open-mode"),
    ],
)
def test_a_prefix_sbatch_reads_as_such_an_option_is_refused(key: str, reads: str) -> None:
    assert reads in _refused({"additional_parameters": {key: "x"}})


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("--mail-type", "without leading dashes: mail-type, not --mail-type"),
        ("-J", "lower case"),
        ("Mail_Type", "lower case"),
        ("mail type", "lower case"),
        ("1x", "lower case"),
        ("--", "lower case"),
    ],
)
def test_option_names_are_sbatch_long_options_as_written(key: str, expected: str) -> None:
    assert expected in _refused({"additional_parameters": {key: "x"}})


OTHERS = {
    "mail_type": "ALL",
    "mail-user": "me@example.com",
    "gres": "gpu:2",
    "time_min": 30,
    "x11": True,
    "comment": "a b",
    "exclusive": True,
    "mem_per_gpu": "8G",
    "cpus-per-gpu": 4,
    "nodelist": "node1",
    "dependency": "afterok:12",
    "hold": True,
}


def test_other_options_pass_and_each_option_is_written_once() -> None:
    settings = settings_from({"additional_parameters": dict(OTHERS), "partition": "debug"})
    params = settings.parameters(2)
    script = _make_sbatch_string(
        command="python -m x", folder="/tmp/s/%j", job_name="train", map_count=2, **params
    )
    names = re.findall(r"^#SBATCH --([a-z0-9-]+)", script, flags=re.M)
    assert [n for n, count in Counter(names).items() if count > 1] == []
    for key in OTHERS:
        assert key.replace("_", "-") in names
    assert {"array", "signal", "output", "error", "open-mode", "job-name"} <= set(names)


def test_wckey_is_a_launcher_option() -> None:
    params = settings_from({"wckey": "project-x"}).parameters(1)
    script = _make_sbatch_string(command="x", folder="/tmp/s/%j", **params)
    assert script.count("#SBATCH --wckey=") == 1 and "#SBATCH --wckey=project-x" in script
    assert "--wckey=submitit" in _make_sbatch_string(
        command="x", folder="/tmp/s/%j", **SlurmSettings().parameters(1)
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"time": 2**70}, f"at most {MAX_TIME_MINUTES} (365 days)"),
        ({"time": MAX_TIME_MINUTES + 1}, f"at most {MAX_TIME_MINUTES}"),
        ({"time": 0}, "a positive integer of minutes"),
        ({"signal_delay_s": 65536}, "at most 65535"),
        ({"nodes": 2**31}, "at most 2147483647"),
        ({"cpus_per_task": 2**63}, "at most 2147483647"),
        ({"max_requeues": 2**40}, "at most 2147483647"),
        ({"array_parallelism": 2**70}, "at most 2147483647"),
    ],
)
def test_numbers_stay_within_what_slurm_takes(values: dict[str, Any], expected: str) -> None:
    message = _refused(values)
    assert message.startswith(f"hydra.launcher.{next(iter(values))} = "), message
    assert expected in message, message


def test_the_largest_numbers_slurm_takes_pass() -> None:
    settings = SlurmSettings(time=MAX_TIME_MINUTES, signal_delay_s=65535)
    assert settings.parameters(1)["time"] == MAX_TIME_MINUTES
