"""What a training worker reports: metrics summed over workers, console lines and TensorBoard events.

The loop (asciiray.train.loop) decides when; this module decides how a figure
reaches the person running it: rank 0's progress and epoch lines, the
TensorBoard event files next to the run's checkpoints, and the per-step
scalars of --log-every-steps.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any

import torch
import torch.distributed as dist

from asciiray import storage
from asciiray.metrics import Sums

log = logging.getLogger(__name__)


def reduced(sums: Sums, prefix: str, device: torch.device) -> dict[str, float]:
    """The ratios of `sums` over every worker (sum, then divide), named prefix/metric; NaN where nothing counted."""
    names = sorted(sums.values)
    flat = torch.stack([sums.values[n] for n in names]).to(device) if names else torch.zeros(0, 2, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(flat)
    return {f"{prefix}/{n}": s / c if c > 0 else float("nan") for n, (s, c) in zip(names, flat.tolist())}


def route_logs() -> None:
    """Our epoch lines go to the console through a handler of our own, as bare messages; the root
    logger's handlers (Ray's) get a filter for Ray Train's per-report INFO lines."""
    ours = logging.getLogger("asciiray")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
        ours.propagate = False
    ours.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_ray_train)


def _quiet_ray_train(record: logging.LogRecord) -> bool:
    """Ray Train 2.60 logs every report at INFO from a logger named by its file path, which its own
    LoggingConfig level misses; keep its warnings and errors only."""
    return record.levelno >= logging.WARNING or "/ray/train/" not in record.pathname.replace("\\", "/")


class EpochProgress:
    """Rank 0's progress inside a long epoch, at a steady rate: steps done, samples/s, time left."""

    def __init__(self, every_s: float, label: str, steps: int, enabled: bool) -> None:
        self.every_s, self.label, self.steps, self.enabled = every_s, label, steps, enabled
        self.started = self.last = time.perf_counter()

    def tick(self, done: int, samples: int) -> None:
        """Called after each step with the epoch's steps and samples so far (host-side counts: no sync)."""
        now = time.perf_counter()
        if not self.enabled or now - self.last < self.every_s:
            return
        self.last = now
        elapsed = now - self.started
        left = elapsed / done * max(0, self.steps - done)
        log.info("epoch %s  step %d/%d  %.0f samples/s  about %s left in the epoch", self.label, done, self.steps,
                 samples / elapsed, _duration(left))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def progress_line(m: dict[str, Any], where: str, shown: tuple[str, ...]) -> str:
    """One line per epoch: where the run stands (Budget.where), the task's declared metrics, train then
    validation, and the throughput."""
    keys = [k for k in shown if f"val/{k}" in m] or [k for k in shown if f"train/{k}" in m]
    train = " ".join(f"{k} {m[f'train/{k}']:.4f}" for k in keys if f"train/{k}" in m)
    val = " ".join(f"{k} {m[f'val/{k}']:.4f}" for k in keys if f"val/{k}" in m) or "none yet"
    if "val_step" in m:  # --val-every-steps: the latest validation, at its step
        val += f" (step {m['val_step']})"
    elif m.get("val_epoch", m["epoch"]) != m["epoch"]:  # --validation-every: the latest validation's epoch
        val += f" (epoch {m['val_epoch']})"
    return (f"{where}  train: {train}  |  val: {val}  |  "
            f"{m['samples_per_s']:.0f} samples/s, data wait {m.get('data_wait', 0.0):.0%}"
            + (f", {m['skipped_steps']} skipped" if m["skipped_steps"] else ""))


class EventLog:
    """TensorBoard events from rank 0, written next to the run's checkpoints (local or S3).

    An S3 run writes its events to a local directory and mirrors them at the checkpoint cadence
    (`sync`). tensorboardX can write `s3://` itself, but its writer re-uploads the whole file from its
    flush thread every flush_secs, through a boto3 client of its own (S3_ENDPOINT before AWS_ENDPOINT_URL)
    without `storage`'s retries, so an S3 outage would fail in that thread, unseen by the run; through
    `storage` the run's S3 traffic has one endpoint, one retry policy and the checkpoints' cadence.
    """

    def __init__(self, run_uri: str, enabled: bool) -> None:
        self.writer = None
        if not enabled:
            return
        from tensorboardX import SummaryWriter

        self.target = storage.join(run_uri, "tensorboard")
        self.local = (storage.resolve(self.target) if not storage.is_s3(run_uri)
                      else tempfile.mkdtemp(prefix="asciiray-tb-"))
        self.writer = SummaryWriter(logdir=self.local, flush_secs=30)

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Log the finite values; a NaN ratio counted nothing (e.g. ink precision of all-space output) and is
        left out of the curve rather than drawn as a gap with a tensorboardX warning."""
        if self.writer:
            for name, value in values.items():
                if math.isfinite(value):
                    self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        """Close the writer; an S3 run's local directory goes (its events were mirrored at each sync)."""
        if not self.writer:
            return
        self.writer.close()
        self.writer = None
        if storage.is_s3(self.target):
            shutil.rmtree(self.local, ignore_errors=True)

    def sync(self) -> None:
        """Flush, and mirror the event files to S3 when the run lives there."""
        if not self.writer:
            return
        self.writer.flush()
        if storage.is_s3(self.target):
            for name in os.listdir(self.local):
                with open(os.path.join(self.local, name), "rb") as f:
                    storage.write_bytes(storage.join(self.target, name), f.read())


class StepWindow:
    """Metric sums of the steps since the last per-step scalars (--log-every-steps); off when `every` is None."""

    def __init__(self, every: int | None) -> None:
        self.enabled = bool(every)
        self.sums, self.samples, self.started = Sums(), 0, time.perf_counter()

    def add(self, stats: dict[str, torch.Tensor], samples: int) -> None:
        if self.enabled:
            self.sums.add(stats)
            self.samples += samples

    def read(self, device: torch.device, lr: float) -> dict[str, float]:
        """train_step/<metric> over every worker, the rate and this worker's samples/s; then start anew."""
        now = time.perf_counter()
        values = {**reduced(self.sums, "train_step", device), "train_step/lr": lr,
                  "train_step/samples_per_s": self.samples / max(now - self.started, 1e-9)}
        self.sums, self.samples, self.started = Sums(), 0, now
        return values
