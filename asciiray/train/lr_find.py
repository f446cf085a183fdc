"""A learning-rate range test (`asciiray lr-find`, `--learning-rate auto`), in one process.

The model takes Adam steps of the task's own loss on training batches while
the learning rate grows exponentially from `min_lr` to `max_lr`; the test
stops early once the smoothed loss diverges (or turns non-finite). The
suggested rate is where the smoothed loss falls fastest against log(lr),
before its minimum: large enough to learn quickly, below the rates that blow
the loss up.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from asciiray import storage
from asciiray.errors import UserError

# Smoothing of the per-step loss (exponential moving average, bias-corrected).
SMOOTHING = 0.9
# The test stops once the smoothed loss exceeds this multiple of its lowest value.
DIVERGED = 4.0
# Steps left out at both ends of the slope search: the average is still settling at the start.
EDGE = 3


@dataclass
class RangeTest:
    """The rates tried, their losses (raw and smoothed) and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    min_lr: float
    max_lr: float
    diverged: bool


def check_range(min_lr: float, max_lr: float, steps: int) -> None:
    """One-line errors for a range the test cannot ramp over."""
    if not min_lr > 0 or not max_lr > 0:
        raise UserError(f"--min-lr {min_lr} and --max-lr {max_lr} must be positive learning rates, e.g. 1e-6 and 1")
    if not min_lr < max_lr:
        raise UserError(f"--min-lr {min_lr} must be below --max-lr {max_lr}")
    if steps < 2 * EDGE + 2:
        raise UserError(f"--steps {steps} is too few for a range test: use at least {2 * EDGE + 2}, e.g. 200")


def range_test(loss_of: Callable[[torch.nn.Module, object], torch.Tensor], model: torch.nn.Module,
               batches: Iterator[object], min_lr: float, max_lr: float,
               steps: int, grad_clip: float = 0.0) -> RangeTest:
    """Ramp the learning rate over `steps` Adam steps of `loss_of(model, batch)`; see the module docstring."""
    check_range(min_lr, max_lr, steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=min_lr)
    factor = (max_lr / min_lr) ** (1 / (steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    average, diverged = 0.0, False
    model.train()
    for i in range(steps):
        lr = min_lr * factor ** i
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_of(model, next(batches))
        value = loss.item()
        if not math.isfinite(value):
            diverged = True
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
        optimizer.step()
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        lrs.append(lr)
        losses.append(value)
        smoothed.append(average / (1 - SMOOTHING ** (i + 1)))
        if smoothed[-1] > DIVERGED * min(smoothed):
            diverged = True
            break
    if len(lrs) < 2 * EDGE + 2:
        raise UserError(f"the loss diverged after {len(lrs)} steps of the range test: lower --min-lr "
                        f"{min_lr:g} (or check the loss coefficients)")
    return RangeTest(lrs, losses, smoothed, suggest(lrs, smoothed), min_lr, max_lr, diverged)


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The rate in the middle of the steepest fall of the smoothed loss against log(lr), before its minimum.

    The fall is measured over a window of a tenth of the steps, so the noise of single batches at the
    low rates, where the loss barely moves, cannot pass for a descent.
    """
    losses, logs = np.asarray(smoothed), np.log(np.asarray(lrs))
    end = max(2 * EDGE + 2, int(np.argmin(losses[EDGE:])) + EDGE + 1)
    window = max(2, len(lrs) // 10)
    starts = np.arange(EDGE, max(EDGE + 1, end - window))
    stops = np.minimum(starts + window, end - 1)
    slopes = (losses[stops] - losses[starts]) / (logs[stops] - logs[starts])
    best = int(np.argmin(slopes))
    return float(lrs[(starts[best] + stops[best]) // 2])


def save_plot(result: RangeTest, path: str) -> None:
    """The loss against the learning rate (log scale), with the suggestion marked, as a PNG (local or s3://)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    ax.plot(result.lrs, result.losses, color="0.75", linewidth=1, label="loss per step")
    ax.plot(result.lrs, result.smoothed, color="C0", linewidth=2, label="smoothed")
    ax.axvline(result.suggestion, color="C3", linestyle="--", label=f"suggested {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlim(result.min_lr, result.max_lr)
    top = np.percentile(result.losses, 95)
    ax.set_ylim(min(result.losses) * 0.95, max(top, max(result.smoothed[:EDGE + 1])) * 1.05)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("learning-rate range test" + (" (stopped: the loss diverged)" if result.diverged else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue())
