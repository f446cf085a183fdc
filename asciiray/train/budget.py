"""How long a run trains: epochs (-n), steps (--max-steps), minutes of training (--time-budget), or all three.

A run ends at whichever of its budgets runs out first, after the step where it
does, so the epoch it ends in is cut short; that epoch is then the run's last
(validated, checkpointed). Steps count globally and the minutes add up across
resumes (checkpoints carry `step` and `train_s`), so a resumed run trains
toward the same budget.

Every rank of a DDP run must end after the same step. A step or epoch budget
is the same count everywhere; a time budget is read from rank 0's clock at
check steps that rank 0 also chooses (at most CHECK_EVERY_S apart, closer as
the end nears), and its answer is shared with every rank. Those checks also
re-estimate how many steps the minutes hold, which the learning-rate schedule
spans when a time budget is the run's only one.

Torch-free at import: the driver uses `reached` before any worker starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

# The longest gap between two checks of a time budget, in seconds of training.
CHECK_EVERY_S = 10.0

Share = Callable[[tuple[float, ...]], tuple[float, ...]]


def reached(optim: Any, meta: dict[str, Any]) -> str | None:
    """Which budget of the options `optim` a checkpoint's `meta` has used up, as words for a message; else None."""
    if optim.max_steps is not None and meta.get("step", 0) >= optim.max_steps:
        return f"{optim.max_steps} steps (--max-steps)"
    if optim.n_epochs is not None and meta.get("epoch", 0) >= optim.n_epochs:
        return f"{optim.n_epochs} epochs (-n)"
    if optim.time_budget is not None and meta.get("train_s", 0.0) >= optim.time_budget * 60:
        return f"{optim.time_budget:g} minutes (--time-budget)"
    return None


class Budget:
    """The loop's budget: which epochs to run, after which step to stop, and the schedule's length in steps."""

    def __init__(self, steps_per_epoch: int, n_epochs: int | None = None, max_steps: int | None = None,
                 minutes: float | None = None, epoch: int = 0, step: int = 0, spent_s: float = 0.0,
                 share: Share = lambda values: values, clock: Callable[[], float] = time.monotonic) -> None:
        if n_epochs is None and max_steps is None and minutes is None:
            raise ValueError("a run needs a budget: epochs, steps or minutes")
        self.n_epochs, self.max_steps, self.minutes = n_epochs, max_steps, minutes
        self.share, self.clock = share, clock
        self.spent_before, self.started = spent_s, clock()
        # The steps the epoch budget allows, counted from where this (re)start begins.
        epoch_cap = None if n_epochs is None else step + max(0, n_epochs - epoch) * steps_per_epoch
        caps = [c for c in (max_steps, epoch_cap) if c is not None]
        self.cap = min(caps) if caps else None
        self.next_check = step + 1
        self.estimate = self.cap or step + steps_per_epoch
        if minutes is not None and step and spent_s:
            self.estimate = self._steps_in_time(step, step / spent_s, spent_s)
        meta = {"epoch": epoch, "step": step, "train_s": spent_s}
        self.ended = reached(self, meta) is not None

    @property
    def time_budget(self) -> float | None:
        """The minutes, under the option's name (`reached` reads a Budget as it reads the options)."""
        return self.minutes

    @classmethod
    def of_run(cls, optim: Any, meta: dict[str, Any], steps_per_epoch: int, share: Share) -> Budget:
        """The budget of a run's options `optim`, (re)starting from a checkpoint's `meta` (zeros: a new run)."""
        return cls(steps_per_epoch, optim.n_epochs, optim.max_steps, optim.time_budget, meta["epoch"], meta["step"],
                   meta.get("train_s", 0.0), share)

    def spent_s(self) -> float:
        """Seconds of training of the run so far, earlier (re)starts included (this rank's clock)."""
        return self.spent_before + self.clock() - self.started

    def epochs(self, start: int) -> Iterator[int]:
        """The (0-based) epochs to run from `start`, until the budget ends the run."""
        epoch = start
        while not self.ended and (self.n_epochs is None or epoch < self.n_epochs):
            yield epoch
            epoch += 1

    def stops_after(self, step: int) -> bool:
        """Whether the run ends after global step `step` (counted from 1); the same answer on every rank."""
        if self.max_steps is not None and step >= self.max_steps:
            self.ended = True
        elif self.minutes is not None and step >= self.next_check:
            stop, next_check, estimate = self.share(self._time_check(step))
            self.next_check, self.estimate = int(next_check), int(estimate)
            self.ended = bool(stop)
        return self.ended

    def _time_check(self, step: int) -> tuple[float, float, float]:
        """(stop, next check step, estimated steps of the run) by this rank's clock; rank 0's count."""
        spent = self.spent_s()
        left = self.minutes * 60 - spent
        if left <= 0:
            return 1.0, step, step
        rate = step / max(spent, 1e-9)  # steps per second of the whole run, start-up and validation included
        ahead = left * rate
        gap = max(1, int(min(ahead, rate * CHECK_EVERY_S)))
        return 0.0, step + gap, self._steps_in_time(step, rate, spent)

    def _steps_in_time(self, step: int, rate: float, spent: float) -> int:
        """The run's steps if, `spent` seconds in, it goes on at `rate` steps/s until its minutes are spent
        (within any other cap)."""
        total = step + math.ceil(max(0.0, self.minutes * 60 - spent) * rate)
        return max(step + 1, min(total, self.cap) if self.cap is not None else total)

    @property
    def schedule_steps(self) -> int:
        """The run's length in steps, which the learning-rate schedule spans: the step or epoch budget's, or
        with only minutes the latest estimate of the steps they hold."""
        return self.estimate if self.minutes is not None else self.cap

    def epoch_steps(self, step: int, steps_per_epoch: int) -> int:
        """Steps the epoch starting after global step `step` is expected to take (fewer where the budget ends it)."""
        return max(1, min(steps_per_epoch, self.schedule_steps - step))

    def epoch_label(self, number: int) -> str:
        """An epoch's number (from 1) as progress lines show it: 3/10 under an epoch budget, else 3."""
        return f"{number}/{self.n_epochs}" if self.n_epochs is not None else str(number)

    def where(self, number: int, step: int) -> str:
        """Where the run stands after epoch `number` (from 1), at global step `step`, against its budgets."""
        parts = [f"epoch {self.epoch_label(number)}"]
        if self.max_steps is not None:
            parts.append(f"step {step}/{self.max_steps}")
        if self.minutes is not None:
            parts.append(f"{self.spent_s() / 60:.1f}/{self.minutes:g} min")
        return ", ".join(parts)


def rank0_values(device: Any) -> Share:
    """Rank 0's values on every rank (a broadcast), so that every rank takes rank 0's time decisions;
    the values themselves when the run has one worker."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return lambda values: values

    def share(values: tuple[float, ...]) -> tuple[float, ...]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.broadcast(tensor, src=0)
        return tuple(tensor.tolist())

    return share
