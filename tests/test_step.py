"""The training step (asciiray.train.step): the on-device non-finite skip is exact and sync-free."""

from __future__ import annotations

import math

import pytest
import torch

from asciiray.train.step import TimedBatches
from asciiray.train.vae_task import VAETask
from tests.conftest import batches, make_step, no_host_sync, vae_task


def reference_run(task: VAETask, data: list[torch.Tensor], bad: set[int]) -> dict[str, torch.Tensor]:
    """The plain step the fast one must equal: unfused Adam, the skip decided on the host."""
    torch.manual_seed(0)
    model = task.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i, codes in enumerate(data):
        loss, _ = task.step(model, codes, 0)
        loss = loss * math.nan if i in bad else loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        if torch.isfinite(norm) and torch.isfinite(loss):
            optimizer.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def poisoned(task: VAETask, bad: set[int]):
    """The task's loss, made NaN on the steps in `bad` (counted per call)."""
    calls = iter(range(10 ** 6))

    def loss_of(model, codes, epoch):
        loss, stats = task.step(model, codes, epoch)
        return (loss * math.nan, stats) if next(calls) in bad else (loss, stats)
    return loss_of


def test_sync_free_step_matches_the_host_decided_step(tmp_path):
    task = vae_task(tmp_path, font_res=2)
    data, bad = batches(6), {2, 3}
    expected = reference_run(task, data, bad)
    step = make_step(task, loss_of=poisoned(task, bad))
    sums = [step(codes, 0) for codes in data]
    for name, value in step.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-6, msg=name)
    assert all(pair[1] == 0 for i in bad for pair in sums[i].values())
    assert all(sums[i][name][1] > 0 for i in set(range(6)) - bad for name in ("loss", "char_acc", "ink_recall"))
    assert step.read_counters() == (2, 2)


def test_a_skipped_step_leaves_weights_and_adam_state_untouched(tmp_path):
    task = vae_task(tmp_path)
    step = make_step(task, loss_of=poisoned(task, {1}))
    step(batches(1)[0], 0)
    weights = {k: v.clone() for k, v in step.model.named_parameters()}
    adam = {id(p): {k: v.clone() for k, v in s.items()} for p, s in step.optimizer.state.items()}
    step(batches(1, seed=1)[0], 0)
    for k, v in step.model.named_parameters():   # BatchNorm's running statistics move in any forward
        assert torch.equal(v, weights[k]), k
    for p, s in step.optimizer.state.items():
        for k, v in s.items():
            assert torch.equal(v, adam[id(p)][k]), k


def test_consecutive_bad_steps_are_counted_on_the_device_across_reads(tmp_path):
    task = vae_task(tmp_path)
    step = make_step(task, loss_of=poisoned(task, {0, 2, 3, 4, 5}))
    for codes in batches(4):
        step(codes, 0)
    assert step.read_counters() == (3, 2)   # bad good bad bad
    for codes in batches(3):
        step(codes, 0)
    assert step.read_counters() == (2, 4)   # bad bad good: the run of 2 goes on to 4 across the read


def test_the_step_makes_no_host_sync(tmp_path):
    task = vae_task(tmp_path)
    step = make_step(task, loss_of=poisoned(task, {1}))
    data = batches(4)
    with no_host_sync():
        for codes in data:
            step(codes, 0)
    assert step.read_counters() == (1, 1)


def test_the_sync_guard_catches_a_planted_item(tmp_path):
    task = vae_task(tmp_path)

    def loss_with_item(model, codes, epoch):
        loss, stats = task.step(model, codes, epoch)
        loss.item()
        return loss, stats
    step = make_step(task, loss_of=loss_with_item)
    with no_host_sync(), pytest.raises(AssertionError, match="host sync: Tensor.item"):
        step(batches(1)[0], 0)
    with no_host_sync(), pytest.raises(AssertionError, match="host sync: Tensor.__bool__"):
        bool(torch.ones(()))


def test_timed_batches_count_the_wait_for_each_batch():
    import time

    def slow():
        for i in range(3):
            started = time.perf_counter()
            while time.perf_counter() - started < 0.01:
                pass
            yield i
    timed = TimedBatches(slow())
    assert list(timed) == [0, 1, 2]
    assert timed.wait_s >= 0.03
