"""One training step with no host sync: the non-finite skip happens on the device.

A step whose loss or gradient norm is not finite must leave the weights and the
optimizer's state as they were. Deciding that on the host (`bool(isfinite(...))`)
stalls the GPU every step, so instead the decision stays a device tensor: it is
handed to fused Adam as its `found_inf` (which skips the update in the kernel,
the way a grad scaler's overflow check does), masks the step's metric sums, and
feeds on-device counters of skipped and consecutive bad steps that the loop reads
once per epoch (its cadence point).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices


def fused_supported(device: torch.device) -> bool:
    """Whether this torch has a fused Adam kernel for `device` (CUDA, and CPU in recent torch)."""
    return device.type in _get_fused_kernels_supported_devices()


def make_adam(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Adam:
    """Fused Adam where the device has it: one kernel per step, and it takes the on-device skip flag."""
    if not fused_supported(device):
        raise RuntimeError(f"this torch has no fused Adam for {device.type} devices; the sync-free step needs one")
    return torch.optim.Adam(params, lr=lr, fused=True)


def load_adam_state(optimizer: torch.optim.Adam, state: dict[str, Any]) -> None:
    """Load a saved Adam state into a fused Adam, also one saved by an unfused Adam (older checkpoints):
    keep the fused setting, and put each step count where the fused kernel wants it (the parameter's device)."""
    optimizer.load_state_dict(state)
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
        for p in group["params"]:
            s = optimizer.state.get(p, {})
            if "step" in s:
                s["step"] = torch.as_tensor(s["step"], dtype=torch.float32).to(p.device)


class TrainStep:
    """Forward, backward, clipping and the optimizer step for one batch, with the skip on the device.

    `loss_of(model, batch, epoch)` returns (loss, metric sums); autocast is the caller's (`autocast`).
    """

    def __init__(self, loss_of: Callable[[torch.nn.Module, Any, int], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                 model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 grad_clip: float, autocast: Callable[[], Any], device: torch.device) -> None:
        self.loss_of, self.model, self.optimizer, self.scaler = loss_of, model, optimizer, scaler
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.max_norm = grad_clip or math.inf
        self.autocast = autocast
        self.device = device
        self.skipped = torch.zeros((), dtype=torch.int64, device=device)
        self.consecutive = torch.zeros((), dtype=torch.int64, device=device)
        self.worst = torch.zeros((), dtype=torch.int64, device=device)

    def __call__(self, batch: Any, epoch: int) -> dict[str, torch.Tensor]:
        """Train on `batch`; return its metric sums, zeroed when the step was skipped."""
        with self.autocast():
            loss, stats = self.loss_of(self.model, batch, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_norm)
        ok = torch.isfinite(norm) & torch.isfinite(loss.detach())
        self.optimizer.found_inf = (~ok).float()
        try:
            with self.optimizer_threads():
                self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        self.scaler.update()
        bad = (~ok).long()
        self.skipped += bad
        self.consecutive.mul_(bad).add_(bad)
        torch.maximum(self.worst, self.consecutive, out=self.worst)
        return {name: torch.where(ok, pair.detach().double(), 0.0) for name, pair in stats.items()}

    @contextmanager
    def optimizer_threads(self) -> Iterator[None]:
        """One intra-op thread for a CPU optimizer step: fused Adam runs a parallel region per parameter
        tensor, each too small to share, and on a busy machine each one waits for a descheduled thread
        (docs/PERFORMANCE.md: the small preset's Adam step, 2 threads against 1 on a loaded 2-core machine)."""
        if self.device.type != "cpu":
            yield
            return
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def read_counters(self) -> tuple[int, int]:
        """Skipped steps and the longest run of consecutive bad steps since the last read (host sync:
        call at a cadence point). The current run carries over into the next read."""
        skipped, worst = (int(v) for v in torch.stack([self.skipped, self.worst]).tolist())
        self.skipped.zero_()
        self.worst.copy_(self.consecutive)
        return skipped, worst


class TimedBatches:
    """Iterates `batches`, adding up the host time spent waiting for each next batch (the data wait)."""

    def __init__(self, batches: Iterable[Any]) -> None:
        self.batches, self.wait_s = batches, 0.0

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.batches)
        while True:
            started = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.wait_s += time.perf_counter() - started
                return
            self.wait_s += time.perf_counter() - started
            yield batch
