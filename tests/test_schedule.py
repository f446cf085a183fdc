"""The learning-rate schedule: constant, or a warm-up then a cosine decay to zero, as a function of the step."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from asciiray.train.schedule import learning_rate, set_learning_rate


def test_constant_is_the_base_rate():
    assert {learning_rate(2e-3, s, 100, "constant", 0.1) for s in range(100)} == {2e-3}


def test_cosine_warms_up_peaks_and_decays_to_zero():
    rates = [learning_rate(1.0, s, 100, "cosine", 0.1) for s in range(101)]
    assert rates[0] == pytest.approx(0.1)
    assert rates[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(rates[:9], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert rates[100] == 0.0


def test_cosine_without_warmup_starts_at_the_base_rate():
    assert learning_rate(3e-3, 0, 50, "cosine", 0.0) == pytest.approx(3e-3)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="cosine"):
        learning_rate(1e-3, 0, 10, "linear", 0.0)


def test_set_learning_rate_gives_every_group_the_step_rate():
    params = [torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)]
    optimizer = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=1.0)
    optim = SimpleNamespace(learning_rate=1.0, lr_schedule="cosine", lr_warmup=0.1)
    set_learning_rate(optimizer, optim, 40, 100)
    assert [g["lr"] for g in optimizer.param_groups] == [learning_rate(1.0, 40, 100, "cosine", 0.1)] * 2
