"""The user's own loop (``run.batches`` ...): the same lengths, periods, counters, lines,
checkpoints, resume and stops as ``fit``, with the loop in charge; and what it explains
when the loop leaves something undone."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import detflow
from detflow import ConfigError, Run, Trial, TrialError
from detflow._core.artifacts import RunEnd, TrialResult
from tests.support import read_metrics


def make_run(tmp_path: Path, max_length: Any, gbs: int = 4, a: int = 1, **extra: Any) -> Run:
    cfg: dict[str, Any] = {
        "hyperparameters": {"global_batch_size": gbs},
        "searcher": {"max_length": max_length},
        "optimizations": {"aggregation_frequency": a},
        **extra,
    }
    return detflow.init(cfg, run_dir=tmp_path)


def numbered(records: int, gbs: int) -> list[list[int]]:
    """An epoch of batches of record numbers (the last one partial)."""
    return [list(range(i, min(i + gbs, records))) for i in range(0, records, gbs)]


def loop(
    run: Run,
    data: Any,
    *,
    validate: bool = True,
    checkpoint: bool = True,
    on_batch: Callable[[Run, int], None] | None = None,
    **batches_kw: Any,
) -> tuple[dict[str, Any], detflow.FitResult]:
    """The README's loop; its state is the records seen, in order."""
    state: dict[str, Any] = run.restore() or {"seen": []}
    for batch in run.batches(data, **batches_kw):
        state["seen"].extend(batch[0] if isinstance(batch, tuple) else batch)
        run.report_training({"loss": 1.0 / len(state["seen"])})
        if on_batch is not None:
            on_batch(run, len(state["seen"]))
        if validate and run.should_validate:
            run.report_validation({"loss": float(len(state["seen"]))})
        if checkpoint and run.should_checkpoint:
            run.checkpoint(state)
    return state, run.finish()


def kinds_at(run_dir: Path) -> list[tuple[str, int, int, int]]:
    return [(r["kind"], r["batches"], r["records"], r["epochs"]) for r in read_metrics(run_dir)]


def test_the_loop_trains_exactly_the_target_with_validations_on_the_period(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path, "10 batches", min_validation_period="4 batches")
    state, result = loop(run, numbered(100, 4))
    assert (result.status, result.counters.batches, result.counters.records) == (
        RunEnd.COMPLETED,
        10,
        40,
    )
    assert state["seen"] == list(range(40))
    validations = [r["batches"] for r in read_metrics(tmp_path) if r["kind"] == "validation"]
    assert validations == [4, 8, 10]
    saved = TrialResult.read(tmp_path)
    assert saved is not None and (saved.batches, saved.metric) == (10, 40.0)
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest["name"] == f"{10:010d}"


def test_fit_and_the_loop_write_the_same_reports_and_counters(tmp_path: Path) -> None:
    """One machinery: a Trial and the same problem in a loop report at the same counts."""

    class Numbers(Trial):
        def __init__(self) -> None:
            self.seen: list[int] = []

        def training_data(self, epoch: int) -> list[list[int]]:
            return numbered(30, 4)

        def train_batch(self, batch: Any) -> Mapping[str, Any]:
            self.seen.extend(batch)
            return {"loss": 1.0 / len(self.seen)}

        def evaluate(self) -> Mapping[str, Any]:
            return {"loss": float(len(self.seen))}

        def state_dict(self) -> dict[str, Any]:
            return {"seen": self.seen}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            self.seen = state["seen"]

    periods = {
        "min_validation_period": "3 batches",
        "min_checkpoint_period": "5 batches",
        "scheduling_unit": 2,
    }
    fitted = make_run(tmp_path / "fit", "3 epochs", **periods)
    fit_result = fitted.fit(Numbers())
    looped = make_run(tmp_path / "loop", "3 epochs", **periods)
    _, loop_result = loop(looped, numbered(30, 4))
    assert kinds_at(tmp_path / "loop") == kinds_at(tmp_path / "fit")
    assert [r["metrics"] for r in read_metrics(tmp_path / "loop")] == [
        r["metrics"] for r in read_metrics(tmp_path / "fit")
    ]
    assert loop_result.counters == fit_result.counters
    assert (loop_result.counters.batches, loop_result.counters.records) == (24, 90)
    assert loop_result.counters.epochs == 3


@pytest.mark.parametrize(
    ("data", "extra", "batches", "records", "epochs"),
    [
        # a sized re-iterable: epochs from len(data), the partial last batch counted exactly
        (numbered(10, 4), {}, 6, 20, 2),
        # (inputs, targets): records are the inputs' first dimension
        ([(b, [0] * len(b)) for b in numbered(10, 4)], {}, 6, 20, 2),
        # an iterable that cannot tell its length: records_per_epoch sets the epoch
        (lambda epoch: iter(numbered(10, 4)), {"records_per_epoch": 10}, 6, 20, 2),
    ],
)
def test_records_and_epochs_count_what_the_data_holds(
    tmp_path: Path, data: Any, extra: dict[str, Any], batches: int, records: int, epochs: int
) -> None:
    run = make_run(tmp_path, "2 epochs", **extra)
    state, result = loop(run, data)
    assert (result.counters.batches, result.counters.records, result.counters.epochs) == (
        batches,
        records,
        epochs,
    )
    assert state["seen"] == list(range(10)) * 2


def test_a_function_of_the_epoch_gives_each_epoch_its_batches(tmp_path: Path) -> None:
    asked: list[int] = []

    def data(epoch: int) -> list[list[int]]:
        asked.append(epoch)
        return [[epoch * 100 + i] for i in range(3)]

    run = make_run(tmp_path, "7 batches", gbs=1)
    state, _ = loop(run, data)
    assert state["seen"] == [0, 1, 2, 100, 101, 102, 200]
    assert asked[-3:] == [0, 1, 2]


def test_batch_size_counts_records_the_users_way(tmp_path: Path) -> None:
    run = make_run(tmp_path, "3 batches", gbs=2)
    _, result = loop(run, [{"x": [1, 2]}] * 5, batch_size=lambda batch: 2, validate=True)
    assert result.counters.records == 6


def test_data_that_runs_out_or_cannot_be_counted_is_a_clear_error(tmp_path: Path) -> None:
    once = (batch for batch in numbered(8, 4))  # a generator: one epoch only
    with pytest.raises(TrialError, match=r"no batches in epoch 1: give run.batches\(\) data"):
        loop(make_run(tmp_path / "a", "3 batches", records_per_epoch=8), once)
    with pytest.raises(TrialError, match=r"records of a batch of type int .* batch_size=\.\.\."):
        loop(make_run(tmp_path / "b", "3 batches"), [1, 2, 3])


def test_epochs_without_a_known_length_fail_before_the_first_batch(tmp_path: Path) -> None:
    run = make_run(tmp_path, "2 epochs")
    with pytest.raises(ConfigError, match="records_per_epoch"):
        run.batches(lambda epoch: iter(numbered(10, 4)))


def test_lines_say_where_and_the_run_ends_with_one_summary_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(tmp_path, "2 epochs", min_validation_period="1 epochs")
    with caplog.at_level(logging.INFO, logger="detflow"):
        loop(run, numbered(12, 4))
    trained = [m for m in caplog.messages if m.startswith("trained:")]
    validated = [m for m in caplog.messages if m.startswith("validated")]
    assert trained[-1].startswith("trained: 12 records in ")
    assert trained[-1].endswith("at epoch 2, batch 3/3; loss=0.05139")
    assert validated[0].endswith("at epoch 1, batch 3/3; validation_loss=12")
    assert caplog.messages[-1] == (
        f"completed 6 batches (2 epochs): validation_loss 24 (best 12); "
        f"run directory {tmp_path.resolve()}"
    )


def _stopping_at(count: int) -> Callable[[Run, int], None]:
    def on_batch(run: Run, seen: int) -> None:
        if seen == count:
            run.request_stop()

    return on_batch


def test_a_requested_stop_checkpoints_at_the_next_step_and_resume_matches(
    tmp_path: Path,
) -> None:
    data = numbered(1000, 1)
    run = make_run(tmp_path / "a", "12 batches", gbs=1, a=3)
    state, result = loop(run, data, on_batch=_stopping_at(5))
    assert (result.status, result.counters.batches) == (RunEnd.STOPPED, 6)
    assert TrialResult.read(tmp_path / "a").status is RunEnd.STOPPED  # type: ignore[union-attr]
    resumed = make_run(tmp_path / "a", "12 batches", gbs=1, a=3, resume=True)
    assert resumed.restore() == {"seen": list(range(6))}
    state, result = loop(resumed, data)
    assert (result.status, result.counters.batches) == (RunEnd.COMPLETED, 12)
    straight, _ = loop(make_run(tmp_path / "b", "12 batches", gbs=1, a=3), data)
    assert state == straight
    validations = [k for k in kinds_at(tmp_path / "a") if k[0] == "validation"]
    assert validations == [k for k in kinds_at(tmp_path / "b") if k[0] == "validation"]


def test_a_stop_waits_for_the_checkpoint_the_loop_did_not_save(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop skips the checkpoint at the first chance to stop: the run does not stop
    unsaved, it says so and stops at the next step where the loop checkpoints."""
    run = make_run(tmp_path, "20 batches", gbs=1, a=2)
    state: dict[str, Any] = {"seen": []}
    asked: list[int] = []
    with caplog.at_level(logging.INFO, logger="detflow"):
        for batch in run.batches(numbered(100, 1)):
            state["seen"].extend(batch)
            run.report_training({"loss": 1.0})
            if len(state["seen"]) == 3:
                run.request_stop()
            if run.should_checkpoint:
                asked.append(len(state["seen"]))
                if len(state["seen"]) > 4:
                    run.checkpoint(state)
        result = run.finish()
    assert asked == [4, 6]
    assert (result.status, result.counters.batches) == (RunEnd.STOPPED, 6)
    assert any("did not call run.checkpoint(state)" in m for m in caplog.messages)


def test_finish_explains_a_target_reached_without_validation_or_checkpoint(
    tmp_path: Path,
) -> None:
    run = make_run(tmp_path, "3 batches")
    with pytest.raises(TrialError, match=r"without run.report_validation\(metrics\) and"):
        loop(run, numbered(100, 4), validate=False, checkpoint=False)
    assert TrialResult.read(tmp_path) is None


def test_the_final_validation_and_checkpoint_may_come_after_the_loop(tmp_path: Path) -> None:
    run = make_run(tmp_path, "3 batches", min_validation_period="100 batches")
    seen = 0
    for batch in run.batches(numbered(100, 4)):
        seen += len(batch)
        run.report_training({"loss": 1.0})
    assert run.should_validate and run.should_checkpoint
    run.report_validation({"loss": 0.5})
    run.checkpoint({"seen": seen})
    assert not run.should_validate and not run.should_checkpoint
    assert run.finish().counters.batches == 3
    assert [r["kind"] for r in read_metrics(tmp_path)] == ["train", "validation"]


def test_finish_explains_a_loop_left_before_its_end(tmp_path: Path) -> None:
    run = make_run(tmp_path, "10 batches")
    for i, _ in enumerate(run.batches(numbered(100, 4))):
        run.report_training({"loss": 1.0})
        if i == 2:
            break
    with pytest.raises(TrialError, match=r"^the loop ended at batch 3 of 10: iterate"):
        run.finish()


def test_resume_without_restore_is_refused_in_one_line(tmp_path: Path) -> None:
    loop(make_run(tmp_path, "4 batches"), numbered(100, 4))
    again = make_run(tmp_path, "8 batches", resume=True)
    with pytest.raises(TrialError, match=r"checkpoint at batch 4 .* call state = run.restore\(\)"):
        again.batches(numbered(100, 4))


def test_an_existing_checkpoint_is_never_overwritten_without_resume(tmp_path: Path) -> None:
    loop(make_run(tmp_path, "4 batches"), numbered(100, 4))
    with pytest.raises(ConfigError, match=r"^resume = False is not valid"):
        make_run(tmp_path, "8 batches").restore()


class Shuffled:
    """Like a shuffling DataLoader: each epoch's order drawn from the global RNG."""

    def __init__(self, records: int) -> None:
        self.records = records

    def __len__(self) -> int:
        return self.records

    def __iter__(self) -> Iterator[list[int]]:
        order = list(range(self.records))
        random.shuffle(order)
        return iter([[i] for i in order])


def test_a_resume_inside_an_epoch_of_shuffled_data_sees_the_same_batches(
    tmp_path: Path,
) -> None:
    """Stopped in the middle of the second epoch: the RNG of that epoch's start is saved, so
    the resumed run draws the same order, skips what was trained and goes on as if never
    stopped; the loop's own draws from the RNG continue where they were, too."""

    def train(run_dir: Path, *, stop_at: int | None = None, resume: bool = False) -> Any:
        run = make_run(
            run_dir,
            "3 epochs",
            gbs=1,
            resume=resume,
            min_checkpoint_period="4 batches",
            min_validation_period="1 epochs",
        )
        state = run.restore() or {"seen": [], "draws": []}
        for batch in run.batches(Shuffled(10)):
            state["seen"].extend(batch)
            state["draws"].append(random.random())  # dropout, say
            run.report_training({"loss": 1.0})
            if len(state["seen"]) == stop_at:
                run.request_stop()
            if run.should_validate:
                run.report_validation({"loss": state["draws"][-1]})
            if run.should_checkpoint:
                run.checkpoint(state)
        return state, run.finish()

    straight, _ = train(tmp_path / "b")
    _, stopped = train(tmp_path / "a", stop_at=13)
    # asked for during batch 13, whose body was already told what is due: stops at the next
    assert (stopped.status, stopped.counters.batches) == (RunEnd.STOPPED, 14)
    random.seed(12345)  # a new process's RNG would be anything
    resumed, result = train(tmp_path / "a", resume=True)
    assert result.counters.batches == 30
    assert resumed == straight
    assert sorted(straight["seen"][10:20]) == list(range(10))  # each epoch: every record once
    assert straight["seen"][10:20] != straight["seen"][20:30]  # in an order of its own
    validations = [r for r in read_metrics(tmp_path / "a") if r["kind"] == "validation"]
    assert validations[-1]["metrics"] == result.validation


def test_a_metric_the_loop_does_not_report_stops_the_run_at_the_first_validation(
    tmp_path: Path,
) -> None:
    run = make_run(
        tmp_path,
        "50 batches",
        searcher={"max_length": "50 batches", "metric": "validation_acc"},
        min_validation_period="5 batches",
    )
    with pytest.raises(ConfigError) as caught:
        loop(run, numbered(1000, 4))
    assert str(caught.value) == (
        "searcher.metric = 'validation_acc' is not valid: expected one of the metrics the "
        "trial reports: validation_loss"
    )
    result = TrialResult.read(tmp_path)
    assert result is not None and (result.status, result.batches) == (RunEnd.REFUSED, 5)
    assert result.refused is not None and str(result.refused.error()) == str(caught.value)


def test_a_loss_that_is_not_finite_fails_at_once_naming_the_batch(tmp_path: Path) -> None:
    run = make_run(tmp_path, "10 batches")
    with pytest.raises(TrialError, match=r"^loss is nan at batch 3$"):
        for i, _ in enumerate(run.batches(numbered(100, 4))):
            run.report_training({"loss": math.nan if i == 2 else 1.0})


def test_the_loops_calls_outside_a_loop_say_where_they_belong(tmp_path: Path) -> None:
    run = make_run(tmp_path, "2 batches")
    assert not run.should_validate and not run.should_checkpoint
    for call in (
        lambda: run.report_training({"loss": 1.0}),
        lambda: run.report_validation({"loss": 1.0}),
        lambda: run.checkpoint({}),
        run.finish,
    ):
        with pytest.raises(TrialError, match=r"belongs to a loop over run.batches\(data\)"):
            call()


def test_a_checkpoint_inside_an_optimizer_step_is_refused(tmp_path: Path) -> None:
    run = make_run(tmp_path, "6 batches", a=3)
    batches = run.batches(numbered(100, 4))
    next(batches)
    with pytest.raises(TrialError, match="inside an optimizer step"):
        run.checkpoint({})


class TwoSameRanks:
    """A collective of two ranks that see the same numbers (as slots of one trial do)."""

    rank, world_size = 0, 2

    def __init__(self) -> None:
        self.calls: list[str] = []

    def any(self, flag: bool) -> bool:
        self.calls.append("any")
        return flag

    def sum(self, values: Sequence[float]) -> list[float]:
        self.calls.append("sum")
        return [2 * v for v in values]


def test_on_two_slots_the_loop_counts_over_every_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # as the launcher sets it for each slot
    run = make_run(tmp_path / "one", "4 batches", gbs=8, resources={"slots_per_trial": 2})
    with pytest.raises(ConfigError, match="init_distributed"):
        run.batches(numbered(100, 4))
    run.collective = TwoSameRanks()
    _, result = loop(run, numbered(100, 4), on_batch=lambda r, s: None)
    assert (result.counters.batches, result.counters.records) == (4, 32)  # 4 per slot a batch
    assert run.collective.calls.count("any") == 4  # the stop is agreed on at every step
    validation = [r for r in read_metrics(tmp_path / "one") if r["kind"] == "validation"]
    assert validation[-1]["metrics"] == {"validation_loss": 16.0}  # the mean over the ranks


def trial_with_metrics(names: Iterable[str]) -> Trial:
    class Named(Trial):
        def training_data(self, epoch: int) -> list[list[int]]:
            return numbered(100, 4)

        def train_batch(self, batch: Any) -> Mapping[str, Any]:
            return {"loss": 1.0}

        def validation_data(self) -> list[list[int]]:
            return [[0]]

        def evaluate_batch(self, batch: Any) -> Mapping[str, Any]:
            return dict.fromkeys(names, 0.5)

        def state_dict(self) -> dict[str, Any]:
            return {}

        def load_state_dict(self, state: dict[str, Any]) -> None:
            pass

    return Named()


def test_fit_stops_at_the_first_validation_when_the_metric_is_not_reported(
    tmp_path: Path,
) -> None:
    run = make_run(
        tmp_path,
        "50 batches",
        searcher={"max_length": "50 batches", "metric": "validation_acc"},
        min_validation_period="5 batches",
    )
    with pytest.raises(ConfigError, match=r"validation_accuracy, validation_loss$"):
        run.fit(trial_with_metrics(["loss", "accuracy"]))
    assert [r["batches"] for r in read_metrics(tmp_path)] == [5, 5]
    assert TrialResult.read(tmp_path).status is RunEnd.REFUSED  # type: ignore[union-attr]
