"""Budgets in epochs, steps and minutes (asciiray.train.budget): the arithmetic, the options, and real runs that a
budget ends mid-epoch and --resume continues."""

from __future__ import annotations

import json

import pytest

from asciiray import config
from asciiray.cli import main
from asciiray.errors import UserError
from asciiray.train.budget import CHECK_EVERY_S, Budget, reached
from asciiray.train.cadence import Cadence
from asciiray.train.options import DEFAULT_MAX_STEPS, RendererTrainConfig, TrainConfig
from tests.conftest import history, train_config


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run_epochs(budget: Budget, start_epoch: int, step: int, steps_per_epoch: int, clock: Clock | None = None,
               step_s: float = 0.0) -> list[tuple[int, int]]:
    """(epoch, last step) of each epoch the loop runs, stepping as it does; each step lasts step_s on `clock`."""
    ends = []
    for epoch in budget.epochs(start_epoch):
        for _ in range(steps_per_epoch):
            if clock:
                clock.now += step_s
            step += 1
            if budget.stops_after(step):
                break
        ends.append((epoch, step))
    return ends


def test_default_budget_is_a_number_of_steps():
    assert DEFAULT_MAX_STEPS == 700
    cfg = config.build(TrainConfig, {})
    assert cfg.optim.n_epochs is None and cfg.budgeted().optim.max_steps == DEFAULT_MAX_STEPS
    for given in ({"n_epochs": 3}, {"max_steps": 7}, {"time_budget": 1.5}):
        assert config.build(TrainConfig, given).budgeted().optim == config.build(TrainConfig, given).optim, \
            "any budget given replaces the default"
    assert config.build(RendererTrainConfig, {}).budgeted().optim.n_epochs == 4


def test_step_budget_cuts_its_epoch_and_the_schedule_spans_it():
    budget = Budget(steps_per_epoch=7, max_steps=10)
    assert budget.schedule_steps == 10 and budget.epoch_steps(7, 7) == 3
    assert run_epochs(budget, 0, 0, 7) == [(0, 7), (1, 10)], "epoch 2 ends after step 10"
    resumed = Budget(steps_per_epoch=7, max_steps=16, epoch=2, step=10)
    assert run_epochs(resumed, 2, 10, 7) == [(2, 16)] and resumed.schedule_steps == 16
    assert run_epochs(Budget(steps_per_epoch=7, max_steps=14), 0, 0, 7) == [(0, 7), (1, 14)], "at an epoch end"
    assert Budget(steps_per_epoch=7, max_steps=10, epoch=2, step=10).ended, "resumed at its budget: nothing to run"


def test_epochs_and_steps_whichever_comes_first():
    assert run_epochs(Budget(steps_per_epoch=7, n_epochs=3, max_steps=100), 0, 0, 7) == [(0, 7), (1, 14), (2, 21)]
    assert Budget(steps_per_epoch=7, n_epochs=3, max_steps=100).schedule_steps == 21
    both = Budget(steps_per_epoch=7, n_epochs=3, max_steps=9)
    assert both.schedule_steps == 9 and run_epochs(both, 0, 0, 7) == [(0, 7), (1, 9)]
    # A run resumed at epoch 2 of 4 with another epoch length (e.g. another worker count): 2 epochs of 5 left.
    assert Budget(steps_per_epoch=5, n_epochs=4, epoch=2, step=14).schedule_steps == 24


def test_time_budget_stops_by_the_clock_and_estimates_the_schedule():
    clock = Clock()
    budget = Budget(steps_per_epoch=50, minutes=1.0, clock=clock)
    assert budget.schedule_steps == 50, "one epoch until a rate is measured"
    ends = run_epochs(budget, 0, 0, 50, clock, step_s=0.5)  # 2 steps/s: the minute holds 120 steps
    assert ends == [(0, 50), (1, 100), (2, 120)] and budget.ended
    assert 60.0 <= budget.spent_s() <= 60.5
    assert budget.schedule_steps == 120

    clock = Clock()
    checks = []
    budget = Budget(steps_per_epoch=10_000, minutes=10.0, clock=clock, share=lambda v: checks.append(v) or v)
    run_epochs(budget, 0, 0, 10_000, clock, step_s=0.1)
    assert budget.spent_s() == pytest.approx(600.0) and budget.schedule_steps == 6000
    gaps = [b[1] - a[1] for a, b in zip(checks, checks[1:])]
    assert max(gaps) <= CHECK_EVERY_S / 0.1 and len(checks) < 100, "checks every few seconds, not every step"


def test_time_budget_counts_the_minutes_of_earlier_starts_and_caps_the_estimate():
    clock = Clock()
    # 40 s spent over 80 steps before: at that rate the 1-minute budget holds 40 more steps.
    budget = Budget(steps_per_epoch=30, minutes=1.0, epoch=2, step=80, spent_s=40.0, clock=clock)
    assert budget.schedule_steps == 120
    assert run_epochs(budget, 2, 80, 30, clock, step_s=0.5) == [(2, 110), (3, 120)]
    capped = Budget(steps_per_epoch=30, minutes=1.0, max_steps=100, epoch=2, step=80, spent_s=40.0, clock=Clock())
    assert capped.schedule_steps == 100
    assert Budget(steps_per_epoch=30, minutes=1.0, step=80, spent_s=60.0).ended


def test_every_rank_takes_rank_zeros_time_decision():
    """A rank whose own clock says go on stops where rank 0's says stop (the shared values win)."""
    clock = Clock()
    stop_now = Budget(steps_per_epoch=10, minutes=5.0, clock=clock, share=lambda v: (1.0, 1.0, 1.0))
    assert stop_now.stops_after(1) and list(stop_now.epochs(1)) == []


def test_reached_names_the_spent_budget():
    optim = config.build(TrainConfig, {"n_epochs": 5, "max_steps": 30, "time_budget": 2.0}).optim
    assert reached(optim, {"epoch": 3, "step": 20, "train_s": 60.0}) is None
    assert reached(optim, {"epoch": 3, "step": 30, "train_s": 60.0}) == "30 steps (--max-steps)"
    assert reached(optim, {"epoch": 5, "step": 20, "train_s": 60.0}) == "5 epochs (-n)"
    assert reached(optim, {"epoch": 3, "step": 20, "train_s": 120.0}) == "2 minutes (--time-budget)"


def test_progress_labels_show_the_budget():
    assert Budget(steps_per_epoch=7, n_epochs=10).where(3, 21) == "epoch 3/10"
    assert Budget(steps_per_epoch=7, max_steps=430).where(3, 21) == "epoch 3, step 21/430"
    clock = Clock()
    timed = Budget(steps_per_epoch=7, minutes=5.0, clock=clock)
    clock.now += 90
    assert timed.where(2, 14) == "epoch 2, 1.5/5 min" and timed.epoch_label(2) == "2"


def test_a_cut_epoch_is_the_last_one_the_cadence_validates_and_checkpoints():
    cadence = Cadence(n_epochs=None, checkpoint_every=3, validation_every=2)
    assert not cadence.checkpoint_due(0) and not cadence.validates_at_epoch_end(0, False, 7)
    cadence.ends_run()
    assert cadence.last_epoch(0) and cadence.checkpoint_due(0) and cadence.validates_at_epoch_end(0, False, 7)
    steps = Cadence(n_epochs=None, val_every_steps=4)
    steps.ends_run()
    assert steps.checkpoint_due(4) and steps.validates_at_epoch_end(4, True, 10)


@pytest.mark.parametrize("values, message", [
    ({"max_steps": 0}, "--max-steps 0 must be at least 1"),
    ({"max_steps": -5}, "--max-steps -5 must be at least 1"),
    ({"time_budget": 0}, "--time-budget 0 must be a positive number of minutes"),
    ({"time_budget": -1.5}, "--time-budget -1.5 must be a positive number of minutes"),
    ({"n_epochs": 0}, "--n-epochs 0 must be at least 1"),
    ({"n_epochs": None, "swa_start": 2}, "--swa-start counts epochs: give -n/--n-epochs"),
])
def test_bad_budgets_are_one_line_errors(tmp_path, values, message):
    with pytest.raises(UserError, match=message):
        train_config(tmp_path, "unused", **values)


def test_bad_budget_flag_fails_before_ray(tmp_path, capsys):
    assert main(["train", "--max-steps", "0", "--storage-path", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--max-steps 0 must be at least 1" in err and "\n" not in err
    assert not list(tmp_path.iterdir())


@pytest.mark.integration
@pytest.mark.usefixtures("ray_session")
def test_step_budget_ends_mid_epoch_and_resume_trains_to_a_larger_one_then_to_a_time_budget(tiny_corpus, tmp_path,
                                                                                             capsys):
    from asciiray import checkpoint
    from asciiray.train.checkpoint import load_training_state

    run = tmp_path / "runs" / "b"
    argv = ["train", "--preset", "tiny", "--corpus", tiny_corpus, "-b", "32", "--font-res", "2",
            "--storage-path", str(tmp_path / "runs"), "--run-name", "b", "--cpus-per-worker", "0.5",
            "--threads", "1"]

    def latest() -> dict:
        with checkpoint.opened(str(run)) as d:
            return {**checkpoint.load_meta(d), "adam_steps": {int(s["step"]) for s in
                                                              load_training_state(d)["optimizer"]["state"].values()}}

    assert main([*argv, "--max-steps", "10"]) == 0
    assert "done: 2 epochs, 10 steps," in capsys.readouterr().out
    meta = latest()
    per_epoch = meta["history"][0]["step"]
    assert per_epoch < 10 < 2 * per_epoch, "epoch 2 was cut short"
    assert meta["step"] == 10 and meta["adam_steps"] == {10} and meta["train_s"] > 0
    assert [h["step"] for h in meta["history"]] == [per_epoch, 10] and 0 <= meta["history"][-1]["val/ink_f1"] <= 1

    assert main([*argv, "--resume", "--max-steps", "16"]) == 0
    assert "done: 3 epochs, 16 steps," in capsys.readouterr().out
    resumed = latest()
    assert resumed["step"] == 16 and resumed["adam_steps"] == {16}, "the optimizer continued to the new budget"
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3] and "val/ink_f1" in resumed["history"][-1]
    assert resumed["train_s"] > meta["train_s"], "training time adds up across resumes"

    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has trained its budget of 16 steps (--max-steps)" in err and "\n" not in err

    # A few tenths of a second more than the run has trained: the time budget ends it, on two workers (whose
    # ranks stop together, at rank 0's check), long before its step budget.
    minutes = resumed["train_s"] / 60 + 0.01
    assert main([*argv, "--resume", "--max-steps", "1000", "--time-budget", f"{minutes:.6f}",
                 "--num-workers", "2"]) == 0
    timed = latest()
    assert 16 < timed["step"] < 1000 and timed["train_s"] >= minutes * 60
    assert f"{timed['step']} steps," in capsys.readouterr().out and "val/ink_f1" in timed["history"][-1]
    stored = json.loads((run / "asciiray-run.json").read_text())["config"]["optim"]
    assert (stored["max_steps"], stored["n_epochs"]) == (1000, None)
    assert history(str(run))[-1]["step"] == timed["step"]
