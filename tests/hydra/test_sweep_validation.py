"""Before a sweep starts: every value of the search space is validated, not only the planned
random draws (a model-proposed trial, ``sampler: tpe`` or bohb, may take any of them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import DictConfig

import conf
from detflow._hydra.sweeper import _make_searcher, _plan, run_sweep
from tests.support import REPO, isolated_hydra


@pytest.fixture
def loader() -> Iterator[Any]:
    """The example's config loader (``conf.register()`` done), isolated from other tests."""
    with isolated_hydra():
        conf.register()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            yield GlobalHydra.instance().config_loader()


class _NoLaunches:
    """A launcher the test fails on if the sweep gets as far as launching."""

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sweep launched a trial")


def _master_config(loader: Any, arguments: list[str], tmp_path: Path) -> DictConfig:
    config: DictConfig = loader.load_configuration(
        "config", [*arguments, f"hydra.sweep.dir={tmp_path / 'sweep'}"], RunMode.MULTIRUN
    )
    return config


@pytest.mark.parametrize("name", ["random", "bohb"])
def test_a_bad_choice_value_no_planned_point_has_fails_the_sweep_at_once(
    name: str,
    loader: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    arguments = [
        "+experiment=quadratic",
        f"searcher.name={name}",
        "searcher.max_trials=1",
        "optimizations.aggregation_frequency=choice(0,1,2)",
    ]
    config = _master_config(loader, arguments, tmp_path)
    (planned,) = _make_searcher(_plan(config, arguments)).planned_hparams()
    assert planned["optimizations.aggregation_frequency"] != 0  # the plan never draws it
    with pytest.raises(SystemExit) as exited:
        run_sweep(config, _NoLaunches(), arguments)  # type: ignore[arg-type]
    assert exited.value.code != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("Error: optimizations.aggregation_frequency = 0 ")
    assert "a value of a choice of the search space" in line and "trial" not in line
    assert not (tmp_path / "sweep").exists()
