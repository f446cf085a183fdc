"""When the training loop validates, checkpoints and writes per-step scalars.

On a GPU an epoch of a small corpus lasts about a second, so validating,
checkpointing and mirroring TensorBoard to S3 at every epoch end would take
more time than training. The defaults keep the epoch cadence (validate and
checkpoint at every epoch end); the options move these costs to a step or
time cadence:

- `val_every_steps`: validate after every N-th training step, inside epochs
  too. Epoch ends then validate only where they write a checkpoint (so every
  checkpoint is ranked by figures of its own weights); an epoch's metrics
  carry the latest validation.
- `checkpoint_every_minutes`: checkpoint at the first epoch end at least M
  minutes after the last checkpoint (or the start), instead of every
  `checkpoint_every` epochs. Checkpoints stay at epoch ends, so a resumed run
  starts an epoch afresh and resumes exactly.
- `log_every_steps`: per-step scalars every N steps.
- `validation_every` (the prototype's habit; `asciiray train --help` says what the prototype is): validate at every
  N-th epoch end only, and checkpoint only there, so every checkpoint is
  ranked by figures of its own weights.

The last epoch always validates and checkpoints: the last of -n, or the one
a step or time budget cuts short (`ends_run`, asciiray.train.budget). Every
rank must take the same decisions: the step cadences are the same
everywhere, and the loop takes rank 0's answer to `checkpoint_due` (a clock)
for all ranks.
"""

from __future__ import annotations

import time
from typing import Callable


class Cadence:
    """The loop's cadence points, from plain option values (None: off, the epoch cadence)."""

    def __init__(self, n_epochs: int | None, checkpoint_every: int = 1, checkpoint_every_minutes: float | None = None,
                 val_every_steps: int | None = None, log_every_steps: int | None = None,
                 validation_every: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        self.n_epochs, self.checkpoint_every, self.minutes = n_epochs, checkpoint_every, checkpoint_every_minutes
        self.validation_every = validation_every
        self.val_every_steps, self.log_every_steps, self.clock = val_every_steps, log_every_steps, clock
        self.last_checkpoint = clock()
        self.validated_at: int | None = None
        self.ending = False

    def ends_run(self) -> None:
        """The run's budget ends it in this epoch, which becomes its last."""
        self.ending = True

    def last_epoch(self, epoch: int) -> bool:
        """Whether epoch `epoch` (0-based) is the run's last: the last of n_epochs, or the one a budget ends."""
        return self.ending or epoch + 1 == self.n_epochs

    def validates_after(self, step: int) -> bool:
        """Whether to validate after global step `step` (counted from 1), inside an epoch."""
        return bool(self.val_every_steps) and step % self.val_every_steps == 0

    def logs_after(self, step: int) -> bool:
        """Whether to write the per-step scalars after global step `step`."""
        return bool(self.log_every_steps) and step % self.log_every_steps == 0

    def checkpoint_due(self, epoch: int) -> bool:
        """Whether the end of epoch `epoch` (0-based) writes a checkpoint."""
        if self.last_epoch(epoch):
            return True
        if (epoch + 1) % self.validation_every:
            return False
        if self.minutes is None:
            return (epoch + 1) % self.checkpoint_every == 0
        return self.clock() - self.last_checkpoint >= self.minutes * 60

    def checkpointed(self) -> None:
        """A checkpoint was written now: the time cadence counts from here."""
        self.last_checkpoint = self.clock()

    def validates_at_epoch_end(self, epoch: int, checkpointing: bool, step: int) -> bool:
        """Whether epoch `epoch` (0-based), ending at global step `step`, validates: every
        `validation_every`-th epoch and the last; with a step cadence, only where it checkpoints and its last
        step has not just been validated."""
        if self.val_every_steps is None:
            return (epoch + 1) % self.validation_every == 0 or self.last_epoch(epoch)
        return checkpointing and self.validated_at != step

    def validated(self, step: int) -> None:
        self.validated_at = step
