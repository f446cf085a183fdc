"""The loop's step and time cadences (asciiray.train.cadence): validation, checkpoints, per-step scalars."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch

from asciiray.errors import UserError
from asciiray.train.cadence import Cadence
from asciiray.train.report import StepWindow, progress_line
from tests.conftest import (
    batches,
    history,
    make_step,
    no_host_sync,
    train_config,
    vae_task,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_default_cadence_is_the_epoch_cadence():
    cadence = Cadence(n_epochs=5)
    assert [cadence.checkpoint_due(e) for e in range(5)] == [True] * 5
    assert all(cadence.validates_at_epoch_end(epoch, False, step) for epoch, step in ((0, 3), (1, 6)))
    assert not any(cadence.validates_after(s) or cadence.logs_after(s) for s in range(1, 50))
    every2 = Cadence(n_epochs=5, checkpoint_every=2)
    assert [every2.checkpoint_due(e) for e in range(5)] == [False, True, False, True, True]


def test_checkpoints_follow_the_clock_and_the_last_epoch_always_checkpoints():
    clock = Clock()
    cadence = Cadence(n_epochs=6, checkpoint_every_minutes=2.0, clock=clock)
    due = []
    for epoch in range(6):
        clock.now += 50  # each epoch lasts 50 s
        due.append(cadence.checkpoint_due(epoch))
        if due[-1]:
            cadence.checkpointed()
    # 100 s, 150 s (due: >= 120 s since the start), then 50, 100, 150 s (due), then the last epoch.
    assert due == [False, False, True, False, False, True]


def test_step_cadences_and_epoch_end_validation():
    cadence = Cadence(n_epochs=3, val_every_steps=4, log_every_steps=3)
    assert [s for s in range(1, 13) if cadence.validates_after(s)] == [4, 8, 12]
    assert [s for s in range(1, 13) if cadence.logs_after(s)] == [3, 6, 9, 12]
    assert not cadence.validates_at_epoch_end(1, False, 7), "no checkpoint: the latest validation stands"
    assert cadence.validates_at_epoch_end(1, True, 7), "a checkpoint is ranked by figures of its own weights"
    cadence.validated(8)
    assert not cadence.validates_at_epoch_end(1, True, 8), "its last step was just validated"


def test_validation_every_n_epochs_skips_the_right_epochs_and_checkpoints_follow_it():
    cadence = Cadence(n_epochs=7, validation_every=3)
    assert [e + 1 for e in range(7) if cadence.validates_at_epoch_end(e, False, 0)] == [3, 6, 7]
    assert [e + 1 for e in range(7) if cadence.checkpoint_due(e)] == [3, 6, 7]
    both = Cadence(n_epochs=7, validation_every=2, checkpoint_every=3)
    assert [e + 1 for e in range(7) if both.checkpoint_due(e)] == [6, 7], "a checkpoint needs a validation"


@pytest.mark.parametrize("values, message", [
    ({"checkpoint_every_minutes": 0}, "positive number of minutes"),
    ({"checkpoint_every_minutes": 5, "checkpoint_every": 2}, "give one of them"),
    ({"val_every_steps": 0}, "at least 1"),
    ({"log_every_steps": -1}, "at least 1"),
    ({"validation_every": 0}, "--validation-every 0 must be at least 1"),
    ({"validation_every": 2, "val_every_steps": 5}, "--validation-every and --val-every-steps"),
    ({"init_std": 0.0}, "--init-std 0.0 must be a positive"),
])
def test_bad_cadence_options_are_one_line_errors(tmp_path, values, message):
    with pytest.raises(UserError, match=message):
        train_config(tmp_path, "unused", **values)


def test_step_window_sums_without_a_host_sync_and_reads_at_its_point(tmp_path):
    task = vae_task(tmp_path)
    step = make_step(task)
    window = StepWindow(2)
    data = batches(2)
    with no_host_sync():
        for codes in data:
            window.add(step(codes, 0), len(codes))
    assert window.samples == 16
    values = window.read(torch.device("cpu"), 0.01)
    assert values["train_step/lr"] == 0.01 and values["train_step/samples_per_s"] > 0
    assert 0 < values["train_step/loss"] < 20 and 0 <= values["train_step/char_acc"] <= 1
    assert window.samples == 0 and not window.sums.values, "a read starts a new window"
    assert not StepWindow(None).enabled


def test_progress_line_before_any_validation_and_after_a_step_validation():
    m = {"epoch": 1, "train/loss": 2.5, "samples_per_s": 10.0, "skipped_steps": 0}
    assert "train: loss 2.5000  |  val: none yet" in progress_line(m, "epoch 1/3", ("loss", "ce"))
    line = progress_line({**m, "val/loss": 2.0, "val_step": 6}, "epoch 1/3", ("loss",))
    assert "val: loss 2.0000 (step 6)" in line
    assert "val: loss 2.0000 (epoch 3)" in progress_line({**m, "epoch": 4, "val/loss": 2.0, "val_epoch": 3},
                                                          "epoch 4/6", ("loss",))
    assert "val: loss 2.0000  |" in progress_line({**m, "epoch": 3, "val/loss": 2.0, "val_epoch": 3}, "epoch 3/6",
                                                 ("loss",))


def scalars(tensorboard: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of every event file under `tensorboard` (TFRecord framing, tensorboardX's protos)."""
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, dict[int, float]] = {}
    for path in tensorboard.glob("events.out.tfevents*"):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event.FromString(data[at + 12:at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


@pytest.mark.integration
@pytest.mark.usefixtures("ray_session")
def test_a_run_on_step_and_time_cadences(tiny_corpus, tmp_path):
    from asciiray.train import vae

    cfg = train_config(tmp_path, tiny_corpus, n_epochs=3, val_every_steps=4, log_every_steps=1,
                       checkpoint_every_minutes=60.0)
    vae.train(cfg)
    run = tmp_path / "runs" / "t"
    assert len([d for d in run.glob("checkpoint_*") if d.is_dir()]) == 1, "only the last epoch checkpointed"
    hist = history(str(run))
    steps = [h["step"] for h in hist]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and steps[-1] >= 12
    # Each epoch carries its latest validation: the step cadence's, or the last epoch's own (its checkpoint).
    assert [h["val_step"] for h in hist[:-1]] == [s - s % 4 for s in steps[:-1]]
    assert hist[-1]["val_step"] == steps[-1] and 0 <= hist[-1]["val/ink_f1"] <= 1
    tags = scalars(run / "tensorboard")
    assert sorted(tags["train_step/loss"]) == list(range(1, steps[-1] + 1))
    assert sorted(tags["val_step/loss"]) == list(range(4, steps[-1] + 1, 4))
    assert sorted(tags["val/loss"]) == [1, 2, 3]


@pytest.mark.integration
@pytest.mark.usefixtures("ray_session")
def test_a_run_validating_every_second_epoch_with_the_prototype_init(tiny_corpus, tmp_path):
    from asciiray.models import VAE
    from asciiray.train import vae

    cfg = train_config(tmp_path, tiny_corpus, n_epochs=3, validation_every=2, init_std=0.02)
    vae.train(cfg)
    run = tmp_path / "runs" / "t"
    epochs = sorted(json.loads(m.read_text())["epoch"] for m in run.glob("checkpoint_*/meta.json"))
    assert epochs == [2, 3], "epochs 2 and 3 (the last) checkpoint; epoch 1 does not"
    hist = history(str(run))
    assert "val/ink_f1" not in hist[0] and [h["val_epoch"] for h in hist[1:]] == [2, 3]
    assert sorted(scalars(run / "tensorboard")["val/loss"]) == [2, 3]
    assert VAE.from_checkpoint(str(run)).cfg.init_std == 0.02
