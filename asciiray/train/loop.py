"""The training loop every model family shares, run inside each Ray Train worker.

A `Task` says what a model is, where its batches come from, how a batch
becomes a loss and which metrics it reports; this module does the rest once:
devices and DDP, precision, Adam, gradient clipping, skipped non-finite steps,
validation, and checkpoints reported to Ray Train together with the metrics of
their epoch (so a restarted worker group resumes exactly there). How those
metrics reach the console and TensorBoard is asciiray.train.report's. The
worker gets the driver's `Job`, config dataclass and all.

`run` reads as the loop itself: a `Worker` is prepared, then each epoch's
steps run (`Worker.train_epoch`) and its end follows (`Worker.end_epoch`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from asciiray import checkpoint, storage
from asciiray.metrics import Sums
from asciiray.train import checkpoint as train_checkpoint
from asciiray.train import schedule
from asciiray.train.budget import Budget, rank0_values
from asciiray.train.cadence import Cadence
from asciiray.train.job import STOP_FILE, Job, per_worker_batch
from asciiray.train.report import EpochProgress, EventLog, StepWindow, progress_line, reduced, route_logs
from asciiray.train.step import TimedBatches, TrainStep, load_adam_state, make_adam
from asciiray.train.swa import WeightAverage

log = logging.getLogger(__name__)


# Rows of a worker's shuffle buffer: 16 MiB of 64x64 grids.
SHUFFLE_ROWS = 4096


class Task:
    """One model family's part of a run. Subclasses fill in the model, the losses and their metrics."""

    # Metric names (without the train/ or val/ prefix) the progress line shows, in this order.
    shown_metrics: tuple[str, ...] = ("loss",)

    # Whether this worker's shards fit in memory (a subclass decides from the run's plan): they are then read
    # from Ray Data once and kept on the device (shard_codes).
    keeps_shards = False

    def __init__(self, job: Job, device: torch.device) -> None:
        self.job, self.cfg, self.device = job, job.cfg, device
        self.kept: dict[str, torch.Tensor] = {}
        self.reading: dict[str, Future] = {}
        self.order: torch.Generator | None = None

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def shard_codes(self, split: str) -> Iterator[torch.Tensor]:
        """Code grid batches of this worker's shard of `split`, on the device. Training batches are
        drawn from a shuffle buffer of SHUFFLE_ROWS rows (the whole shard of a small corpus), so each
        epoch sees the pieces in an order of its own. A kept shard is shuffled whole, here: each epoch
        of Ray Data's iterator costs its start-up and the buffer's fill, seconds an epoch on a CPU."""
        import ray.train

        ctx = ray.train.get_context()
        size = per_worker_batch(self.cfg, ctx.get_world_size())
        shard = ray.train.get_dataset_shard(split)
        if self.keeps_shards:
            yield from self._kept_batches(split, shard, size, ctx.get_world_rank())
            return
        buffer = max(SHUFFLE_ROWS, 4 * size) if split == "train" else None
        for batch in shard.iter_torch_batches(batch_size=size, device=self.device, local_shuffle_buffer_size=buffer,
                                              **feed_options(split == "train", self.device)):
            yield batch["codes"]

    def read_kept_shards(self) -> None:
        """Start reading the kept shards in background threads: Ray Data's start-up then overlaps the
        model's set-up instead of the first epoch's steps."""
        if not self.keeps_shards:
            return
        import ray.train

        pool = ThreadPoolExecutor(2, thread_name_prefix="kept-shards")
        for split in ("train", "val"):
            self.reading[split] = pool.submit(self._read_shard, ray.train.get_dataset_shard(split))
        pool.shutdown(wait=False)

    def _read_shard(self, shard: Any) -> torch.Tensor:
        """The shard's codes, joined by numpy: a torch op with intra-op threads run from this thread would start
        a second OpenMP team beside the training thread's, and with more such threads than cores OpenMP stops
        spinning between parallel regions, which slowed every later step of the run by several percent."""
        blocks = [b["codes"] for b in shard.iter_batches(batch_size=None, batch_format="numpy")]
        codes = np.concatenate(blocks) if blocks else np.zeros((0, 0, 0), dtype=np.uint8)
        return torch.from_numpy(codes).to(self.device)

    def _kept_batches(self, split: str, shard: Any, size: int, rank: int) -> Iterator[torch.Tensor]:
        """Batches of the kept shard: training ones in a new order each epoch (a generator of its own, so
        the model's random stream is the same as with Ray Data's shuffle), with feed_options' drop_last."""
        if split not in self.kept:
            reading = self.reading.pop(split, None)
            self.kept[split] = reading.result() if reading else self._read_shard(shard)
        if self.order is None:
            self.order = torch.Generator().manual_seed(self.cfg.optim.seed + rank)
        codes = self.kept[split]
        training = split == "train"
        if training:
            codes = codes[torch.randperm(len(codes), generator=self.order).to(self.device)]
        drop_last = feed_options(training, self.device)["drop_last"]
        for start in range(0, len(codes) - size + 1 if drop_last else len(codes), size):
            yield codes[start:start + size]

    def batches(self, split: str, epoch: int) -> Iterable[Any]:
        """Batches of this worker's shard of `split` ('train' or 'val'), on the device."""
        raise NotImplementedError

    def step(self, model: torch.nn.Module, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss to minimise and metric sums (name -> [sum, count]) for one batch."""
        raise NotImplementedError

    def epoch_values(self, epoch: int) -> dict[str, float]:
        """Scalars of the schedule (e.g. the Gumbel tau) to log with the epoch."""
        return {}

    def show(self, model: torch.nn.Module, writer: Any, epoch: int) -> str | None:
        """Log a sample of the model's output; return it as text for the console, if any."""
        return None

    def meta(self) -> dict[str, Any]:
        """What a checkpoint's meta.json says about the model, beyond the loop's epoch, step and metrics."""
        raise NotImplementedError

    def initial_weights(self, model: torch.nn.Module) -> None:
        """Load the weights a new run starts from (e.g. --init-from); by default keep the model's own init."""

    def compiled(self, model: torch.nn.Module, backend: str = "inductor") -> torch.nn.Module:
        """The model to train with under --compile (as a whole, DDP included); a task may compile its loss
        code here too. Backend "eager" or "aot_eager" only captures graphs: quick checks of the code paths."""
        return torch.compile(model, backend=backend)


def feed_options(training: bool, device: torch.device) -> dict[str, Any]:
    """How Ray Data feeds a worker's batches, so that the step waits for the host as little as it can.

    Every run prefetches a few batches ahead of the step; a GPU run also pins the host batches for an
    asynchronous copy and drops each epoch's short last training batch (a batch of its own shape would
    cost a CUDA graph / kernel autotune of its own). A CPU run, where a new shape costs nothing, keeps it
    and trains on every piece each epoch."""
    gpu = device.type == "cuda"
    return {"prefetch_batches": 4, "pin_memory": gpu, "drop_last": gpu and training}


def autocast_for(precision: str, device: torch.device) -> Any:
    """The autocast context of --precision (none at 32 bits): the step's and validation's forward passes."""
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def run(task_cls: type[Task], job: Job) -> None:
    """Body of the Ray Train `train_func`: train `task_cls` as the job says."""
    route_logs()
    worker = Worker(task_cls, job)
    try:
        for epoch in worker.budget.epochs(worker.first_epoch):
            epoch_run = worker.train_epoch(epoch)
            if epoch_run.consecutive_bad > job.cfg.optim.max_nonfinite_steps:
                report_stop(job.run_uri, epoch, worker.rank,
                            f"{epoch_run.consecutive_bad} consecutive steps had a non-finite loss or gradient")
                return
            worker.end_epoch(epoch, epoch_run)
    finally:
        worker.events.close()


@dataclass
class EpochRun:
    """What an epoch's steps leave for its end: this worker's metric sums, samples, time and step counters."""

    sums: Sums
    samples: int
    elapsed: float
    wait_s: float
    skipped: int
    consecutive_bad: int


class Worker:
    """One worker's part of a run: built ready to train (prepare), then an epoch at a time
    (train_epoch, its steps and their cadence points; end_epoch: weight averaging, validation,
    the metrics, the epoch line and the report with its checkpoint)."""

    def __init__(self, task_cls: type[Task], job: Job) -> None:
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        self.job, self.cfg, self.precision = job, job.cfg, job.precision
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        torch.set_num_threads(self.cfg.resources.threads
                              or max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
        torch.manual_seed(self.cfg.optim.seed + self.rank)
        self.task = task_cls(job, self.device)
        self.task.read_kept_shards()
        self.prepare()

    def prepare(self) -> None:
        """The model (resumed, or from the task's initial weights), DDP, the optimizer, SWA and the cadence."""
        import ray.train.torch

        cfg, device = self.cfg, self.device
        model = self.task.build_model()
        meta, state = self.restore(model)
        model = ray.train.torch.prepare_model(model)
        self.bare = model.module if hasattr(model, "module") else model
        if cfg.resources.compile:  # checkpoints, SWA and samples keep using `bare`, the eager module
            model = self.task.compiled(model)
        self.model = model
        self.optimizer = make_adam([p for p in model.parameters() if p.requires_grad], cfg.optim.learning_rate,
                                   device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "16")
        if state:
            load_adam_state(self.optimizer, state["optimizer"])
            self.scaler.load_state_dict(state["scaler"])
        # Stochastic weight averaging of the last epochs (None unless --swa-start).
        self.swa = WeightAverage.of_run(cfg.optim.swa_start, cfg.optim.swa_lr, self.bare, self.optimizer)
        if self.swa and state:
            self.swa.load_state_dict(state["swa"], self.bare)

        self.events = EventLog(self.job.run_uri, enabled=self.rank == 0)
        self.first_epoch, self.step, self.history = meta["epoch"], meta["step"], meta["history"]
        self.train_step = TrainStep(self.task.step, model, self.optimizer, self.scaler, cfg.optim.grad_clip,
                                    lambda: autocast_for(self.precision, device), device)
        # Ray's equal split gives each worker train // world pieces; the last batch may be short.
        self.steps_per_epoch = max(1, -(-(self.job.plan.train // self.world) // per_worker_batch(cfg, self.world)))
        self.budget = Budget.of_run(cfg.optim, meta, self.steps_per_epoch, rank0_values(device))
        self.cadence = Cadence(cfg.optim.n_epochs, cfg.checkpoint.checkpoint_every,
                               cfg.checkpoint.checkpoint_every_minutes, cfg.log.val_every_steps,
                               cfg.log.log_every_steps, cfg.log.validation_every)
        self.latest_val: dict[str, float] = {}  # the latest validation's figures, which an epoch's metrics carry

    def restore(self, model: torch.nn.Module) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Load the checkpoint Ray Train offers (or the run's latest) into `model`: its meta and training
        state; a new run gets the task's initial weights, epoch 0 and no state."""
        import ray.train

        meta: dict[str, Any] = {"epoch": 0, "step": 0, "history": []}
        state = None
        offered = ray.train.get_checkpoint()
        with train_checkpoint.resumed(self.job.run_uri, offered and train_checkpoint.uri_of(offered),
                                      announce=self.rank == 0) as d:
            if d:
                checkpoint.load_weights(d, model)
                state = train_checkpoint.load_training_state(d)
                meta = checkpoint.load_meta(d)
                if self.rank == 0:
                    log.info("resuming from the checkpoint of epoch %d on %d worker(s)", meta["epoch"], self.world)
            else:
                self.task.initial_weights(model)
        return meta, state

    def train_epoch(self, epoch: int) -> EpochRun:
        """The epoch's steps, until its batches run out or the budget cuts it short."""
        started = time.perf_counter()
        if self.swa:
            self.swa.begin_epoch(epoch)
        self.model.train()
        sums, samples, first_step = Sums(), 0, self.step
        window = StepWindow(self.cadence.log_every_steps)
        progress = EpochProgress(self.cfg.log.progress_every_s, self.budget.epoch_label(epoch + 1),
                                 self.budget.epoch_steps(self.step, self.steps_per_epoch), self.rank == 0)
        batches = TimedBatches(self.task.batches("train", epoch))
        for batch in batches:
            stats = self.train_batch(batch, epoch)
            sums.add(stats)
            window.add(stats, len(batch))
            self.step += 1
            samples += len(batch)
            progress.tick(self.step - first_step, samples)
            if self.after_step(epoch, window):
                break
        elapsed = time.perf_counter() - started
        # The epoch end is the cadence point where the step's on-device counters are read,
        # so a run of non-finite steps stops the run here rather than mid-epoch.
        skipped, consecutive_bad = self.train_step.read_counters()
        return EpochRun(sums, samples, elapsed, batches.wait_s, skipped, consecutive_bad)

    def train_batch(self, batch: Any, epoch: int) -> dict[str, torch.Tensor]:
        """One optimizer step at the schedule's learning rate; the batch's metric sums."""
        if not (self.swa and epoch >= self.swa.start):  # SWA epochs follow SWALR's rate instead
            schedule.set_learning_rate(self.optimizer, self.cfg.optim, self.step, self.budget.schedule_steps)
        return self.train_step(batch, epoch)

    def after_step(self, epoch: int, window: StepWindow) -> bool:
        """The step cadence points, each reading device values (a host sync) on every rank alike: per-step
        scalars and validation. True when the budget ends the run at this step (the epoch becomes its last)."""
        if self.cadence.logs_after(self.step):
            self.events.scalars(window.read(self.device, self.optimizer.param_groups[0]["lr"]), self.step)
        if self.cadence.validates_after(self.step):
            self.latest_val = {**self.validate(self.model, epoch), "val_step": self.step}
            self.cadence.validated(self.step)
            self.events.scalars({k.replace("val/", "val_step/"): v for k, v in self.latest_val.items()
                                 if k.startswith("val/")}, self.step)
            self.model.train()
        if self.budget.stops_after(self.step):
            self.cadence.ends_run()
            return True
        return False

    def end_epoch(self, epoch: int, epoch_run: EpochRun) -> None:
        """Average the weights, validate when due, then log the epoch and report it (with a checkpoint when due)."""
        # What validation, the sample and the checkpoint use: the averaged model in SWA epochs.
        kept = self.swa.end_epoch(epoch, self.bare, self.task.batches("train", epoch)) if self.swa else self.bare
        # Rank 0's clock decides a timed checkpoint for every rank (the third total).
        due = self.rank == 0 and self.cadence.checkpoint_due(epoch)
        totals = torch.tensor([epoch_run.samples, epoch_run.skipped, due], dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(totals)
        keep = totals[2].item() > 0
        started = time.perf_counter()
        if self.cadence.validates_at_epoch_end(epoch, keep, self.step) or (keep and kept is not self.bare):
            self.validate_epoch(epoch, kept)
        metrics = {"epoch": epoch + 1, "step": self.step, "workers": self.world,
                   "val_s": time.perf_counter() - started,
                   **reduced(epoch_run.sums, "train", self.device), **self.latest_val,
                   "lr": self.optimizer.param_groups[0]["lr"],
                   "samples_per_s": totals[0].item() / epoch_run.elapsed, "skipped_steps": int(totals[1].item()),
                   "data_wait": epoch_run.wait_s / epoch_run.elapsed, "threads": torch.get_num_threads(),
                   **self.task.epoch_values(epoch)}
        self.history.append(metrics)
        if self.rank == 0:
            self.log_epoch(epoch, metrics, kept, keep)
        self.report(epoch, metrics, kept if keep else None)

    def validate_epoch(self, epoch: int, kept: torch.nn.Module) -> None:
        """The epoch end's validation, of the averaged weights in SWA epochs; the figures name where it ran."""
        self.latest_val = self.validate(self.model if kept is self.bare else kept, epoch)
        if self.cadence.val_every_steps:
            self.latest_val["val_step"] = self.step
        if self.cadence.validation_every > 1:
            self.latest_val["val_epoch"] = epoch + 1
        self.cadence.validated(self.step)

    def validate(self, model: torch.nn.Module, epoch: int) -> dict[str, float]:
        """The validation metrics (val/...) of `model` over every worker's validation shard; leaves it in eval
        mode."""
        model.eval()
        sums = Sums()
        with torch.no_grad():
            for batch in self.task.batches("val", epoch):
                with autocast_for(self.precision, self.device):
                    _, stats = self.task.step(model, batch, epoch)
                sums.add(stats)
        return reduced(sums, "val", self.device)

    def log_epoch(self, epoch: int, metrics: dict[str, Any], kept: torch.nn.Module, keep: bool) -> None:
        """Rank 0's TensorBoard scalars, sample and console line of the epoch."""
        text = None
        self.events.scalars({k: v for k, v in metrics.items() if k not in ("epoch", "step")}, epoch + 1)
        if (epoch + 1) % self.cfg.log.print_every == 0 or self.cadence.last_epoch(epoch):
            text = self.task.show(kept, self.events.writer, epoch + 1)
        if keep:  # an S3 run re-uploads its event files: at the checkpoint cadence
            self.events.sync()
        log.info("%s", progress_line(metrics, self.budget.where(epoch + 1, self.step), self.task.shown_metrics))
        if text:
            log.info("%s", text)

    def report(self, epoch: int, metrics: dict[str, Any], kept: torch.nn.Module | None) -> None:
        """Report the epoch's metrics to Ray Train, with a checkpoint of `kept` (saved by rank 0) unless None."""
        import ray.train

        if kept is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="asciiray-ckpt-") as tmp:
            ckpt = None
            if self.rank == 0:
                train_checkpoint.save(tmp, kept, {**self.task.meta(), "epoch": epoch + 1, "step": self.step,
                                                  "train_s": self.budget.spent_s(),
                                                  "history": self.history, "metrics": metrics},
                                      {"optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                                       **({"swa": self.swa.state_dict(self.bare)} if self.swa else {})})
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt,
                             checkpoint_upload_fn=train_checkpoint.uploader(self.job.run_uri))
        self.cadence.checkpointed()


def report_stop(run_uri: str, epoch: int, rank: int, reason: str) -> None:
    """End the run without a new checkpoint, so the last good one stays the latest.

    The reason goes into the run's storage, where the driver (or a Tune trial) reads it.
    """
    import ray.train

    if rank == 0:
        log.error("stopping at epoch %d: %s; the last good checkpoint is kept", epoch + 1, reason)
        storage.write_bytes(storage.join(run_uri, STOP_FILE),
                            json.dumps({"epoch": epoch + 1, "reason": reason}).encode())
    ray.train.report({"epoch": epoch + 1, "stopped": reason})
