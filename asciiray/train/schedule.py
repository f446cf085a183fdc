"""The learning-rate schedule: the rate of a step, from the step alone.

A pure function of the step counter, which checkpoints already carry, so a
resumed run continues the schedule exactly without a scheduler state of its own.
"""

from __future__ import annotations

import math
from typing import Any

SCHEDULES = ("constant", "cosine")


def learning_rate(base: float, step: int, total: int, kind: str, warmup: float) -> float:
    """The rate of optimizer step `step` (0-based) of `total`.

    constant: `base` throughout. cosine: a linear warm-up over the first `warmup`
    share of the steps, then a cosine decay from `base` to 0 at step `total`.
    """
    if kind == "constant":
        return base
    if kind != "cosine":
        raise ValueError(f"learning-rate schedule {kind!r} is unknown: use one of {', '.join(SCHEDULES)}")
    total = max(1, total)
    ramp = warmup * total
    if step < ramp:
        return base * (step + 1) / ramp
    done = min(1.0, (step - ramp) / max(1.0, total - ramp))
    return base * 0.5 * (1.0 + math.cos(math.pi * done))


def set_learning_rate(optimizer: Any, optim: Any, step: int, total: int) -> None:
    """Give every parameter group of `optimizer` the rate of step `step` of `total` under the run's optimizer
    section (`learning_rate`, `lr_schedule`, `lr_warmup`)."""
    rate = learning_rate(optim.learning_rate, step, total, optim.lr_schedule, optim.lr_warmup)
    for group in optimizer.param_groups:
        group["lr"] = rate
