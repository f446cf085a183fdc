"""The training loop every model family shares, run inside each Ray Train worker.

A `Task` says what a model is, where its batches come from, how a batch
becomes a loss and which metrics it reports; this module does the rest once:
devices and DDP, precision, Adam, gradient clipping, skipped non-finite steps,
metric reduction across workers, TensorBoard, and checkpoints reported to Ray
Train together with the metrics of their epoch (so a restarted worker group
resumes exactly there). The worker gets the driver's `Job`, config dataclass
and all.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist

from asciiray import checkpoint, storage
from asciiray.train import checkpoint as train_checkpoint
from asciiray.train import schedule
from asciiray.train.budget import Budget, rank0_values
from asciiray.train.cadence import Cadence
from asciiray.train.job import STOP_FILE, Job, per_worker_batch
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

    def _kept_batches(self, split: str, shard: Any, size: int, rank: int) -> Iterator[torch.Tensor]:
        """Batches of the kept shard: training ones in a new order each epoch (a generator of its own, so
        the model's random stream is the same as with Ray Data's shuffle), with feed_options' drop_last."""
        if split not in self.kept:
            blocks = [b["codes"] for b in shard.iter_torch_batches(batch_size=None, device=self.device)]
            self.kept[split] = torch.cat(blocks) if blocks else torch.zeros(0, dtype=torch.uint8, device=self.device)
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
    """How Ray Data feeds a worker's batches (issue 13). Every run prefetches a few batches ahead of the
    step; a GPU run also pins the host batches for an asynchronous copy and drops each epoch's short last
    training batch (a batch of its own shape would cost a CUDA graph / kernel autotune of its own).
    CPU runs keep the last batch, so what they compute is unchanged."""
    gpu = device.type == "cuda"
    return {"prefetch_batches": 4, "pin_memory": gpu, "drop_last": gpu and training}


class Sums:
    """Metric numerators and denominators, summed over batches and then over workers."""

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for name, pair in stats.items():
            pair = pair.detach().double()
            self.values[name] = self.values[name] + pair if name in self.values else pair

    def reduce(self, prefix: str, device: torch.device) -> dict[str, float]:
        names = sorted(self.values)
        flat = torch.stack([self.values[n] for n in names]).to(device) if names else torch.zeros(0, 2, device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(flat)
        return {f"{prefix}/{n}": s / c if c > 0 else float("nan") for n, (s, c) in zip(names, flat.tolist())}


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


def autocast_for(precision: str, device: torch.device):
    if precision == "32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class EventLog:
    """TensorBoard events from rank 0, written next to the run's checkpoints (local or S3)."""

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

    def sync(self) -> None:
        """Flush, and mirror the event files to S3 when the run lives there."""
        if not self.writer:
            return
        self.writer.flush()
        if storage.is_s3(self.target):
            for name in os.listdir(self.local):
                with open(os.path.join(self.local, name), "rb") as f:
                    storage.write_bytes(storage.join(self.target, name), f.read())


def run(task_cls: type[Task], job: Job) -> None:
    """Body of the Ray Train `train_func`: train `task_cls` as the job says."""
    import ray.train
    import ray.train.torch

    # Our epoch lines go to the console through a handler of our own, as bare messages; the root
    # logger's handlers (Ray's) get a filter for Ray Train's per-report INFO lines.
    ours = logging.getLogger("asciiray")
    if not ours.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ours.addHandler(handler)
        ours.propagate = False
    ours.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_ray_train)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    cfg = job.cfg
    torch.set_num_threads(cfg.resources.threads or max(1, (os.cpu_count() or 1) // ctx.get_local_world_size()))
    torch.manual_seed(cfg.optim.seed + rank)
    precision = job.precision

    task = task_cls(job, device)
    model = task.build_model()
    meta: dict[str, Any] = {"epoch": 0, "step": 0, "history": []}
    state = None
    offered = ray.train.get_checkpoint()
    with train_checkpoint.resumed(job.run_uri, offered and train_checkpoint.uri_of(offered), announce=rank == 0) as d:
        if d:
            checkpoint.load_weights(d, model)
            state = train_checkpoint.load_training_state(d)
            meta = checkpoint.load_meta(d)
            if rank == 0:
                log.info("resuming from the checkpoint of epoch %d on %d worker(s)", meta["epoch"], world)
        else:
            task.initial_weights(model)
    model = ray.train.torch.prepare_model(model)
    bare = model.module if hasattr(model, "module") else model
    if cfg.resources.compile:  # checkpoints, SWA and samples keep using `bare`, the eager module
        model = task.compiled(model)
    optimizer = make_adam([p for p in model.parameters() if p.requires_grad], cfg.optim.learning_rate, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
    if state:
        load_adam_state(optimizer, state["optimizer"])
        scaler.load_state_dict(state["scaler"])
    # Issue 14: stochastic weight averaging (None unless --swa-start).
    swa = WeightAverage.of_run(cfg.optim.swa_start, cfg.optim.swa_lr, bare, optimizer)
    if swa and state:
        swa.load_state_dict(state["swa"], bare)

    events = EventLog(job.run_uri, enabled=rank == 0)
    step, history = meta["step"], meta["history"]
    n_epochs = cfg.optim.n_epochs
    train_step = TrainStep(task.step, model, optimizer, scaler, cfg.optim.grad_clip,
                           lambda: autocast_for(precision, device), device)
    # Ray's equal split gives each worker train // world pieces; the last batch may be short.
    steps_per_epoch = max(1, -(-(job.plan.train // world) // per_worker_batch(cfg, world)))
    budget = Budget.of_run(cfg.optim, meta, steps_per_epoch, rank0_values(device))
    cadence = Cadence(n_epochs, cfg.checkpoint.checkpoint_every, cfg.checkpoint.checkpoint_every_minutes,
                      cfg.log.val_every_steps, cfg.log.log_every_steps, cfg.log.validation_every)
    latest_val: dict[str, float] = {}  # the latest validation's figures, which an epoch's metrics carry
    for epoch in budget.epochs(meta["epoch"]):
        started = time.perf_counter()
        if swa:
            swa.begin_epoch(epoch)
        model.train()
        train_sums, samples, first_step = Sums(), 0, step
        window = StepWindow(cadence.log_every_steps)
        progress = EpochProgress(cfg.log.progress_every_s, budget.epoch_label(epoch + 1),
                                 budget.epoch_steps(step, steps_per_epoch), rank == 0)
        batches = TimedBatches(task.batches("train", epoch))
        for batch in batches:
            if not (swa and epoch >= swa.start):  # SWA epochs follow SWALR's rate instead
                for group in optimizer.param_groups:
                    group["lr"] = schedule.learning_rate(cfg.optim.learning_rate, step, budget.schedule_steps,
                                                         cfg.optim.lr_schedule, cfg.optim.lr_warmup)
            stats = train_step(batch, epoch)
            train_sums.add(stats)
            window.add(stats, len(batch))
            step += 1
            samples += len(batch)
            progress.tick(step - first_step, samples)
            # The step cadence points: each reads device values (a host sync) on every rank alike.
            if cadence.logs_after(step):
                scalars = window.read(device, optimizer.param_groups[0]["lr"])
                events.scalars(scalars, step)
            if cadence.validates_after(step):
                latest_val = {**validate(task, model, epoch, precision, device), "val_step": step}
                cadence.validated(step)
                events.scalars({k.replace("val/", "val_step/"): v for k, v in latest_val.items()
                                if k.startswith("val/")}, step)
                model.train()
            if budget.stops_after(step):  # the epoch is cut short here and becomes the run's last
                cadence.ends_run()
                break
        elapsed = time.perf_counter() - started
        # The epoch end is the cadence point where the step's on-device counters are read,
        # so a run of non-finite steps stops the run here rather than mid-epoch.
        skipped, consecutive_bad = train_step.read_counters()
        if consecutive_bad > cfg.optim.max_nonfinite_steps:
            report_stop(job.run_uri, epoch, rank, f"{consecutive_bad} consecutive steps had a non-finite loss or gradient")
            return
        # What validation, the sample and the checkpoint use: the averaged model in SWA epochs.
        kept = swa.end_epoch(epoch, bare, task.batches("train", epoch)) if swa else bare
        # Rank 0's clock decides a timed checkpoint for every rank (the third total).
        totals = torch.tensor([samples, skipped, rank == 0 and cadence.checkpoint_due(epoch)], dtype=torch.float64,
                              device=device)
        if world > 1:
            dist.all_reduce(totals)
        keep = totals[2].item() > 0
        if cadence.validates_at_epoch_end(epoch, keep, step) or (keep and kept is not bare):
            latest_val = validate(task, model if kept is bare else kept, epoch, precision, device)
            if cadence.val_every_steps:
                latest_val["val_step"] = step
            if cadence.validation_every > 1:
                latest_val["val_epoch"] = epoch + 1
            cadence.validated(step)
        metrics = {"epoch": epoch + 1, "step": step, "workers": world, **train_sums.reduce("train", device),
                   **latest_val, "lr": optimizer.param_groups[0]["lr"],
                   "samples_per_s": totals[0].item() / elapsed, "skipped_steps": int(totals[1].item()),
                   "data_wait": batches.wait_s / elapsed, "threads": torch.get_num_threads(),
                   **task.epoch_values(epoch)}
        history.append(metrics)
        text = None
        if rank == 0:
            events.scalars({k: v for k, v in metrics.items() if k not in ("epoch", "step")}, epoch + 1)
            if (epoch + 1) % cfg.log.print_every == 0 or cadence.last_epoch(epoch):
                text = task.show(kept, events.writer, epoch + 1)
            if keep:  # an S3 run re-uploads its event files: at the checkpoint cadence
                events.sync()
            log.info("%s", progress_line(metrics, budget.where(epoch + 1, step), task.shown_metrics))
            if text:
                log.info("%s", text)
        if not keep:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory(prefix="asciiray-ckpt-") as tmp:
            ckpt = None
            if rank == 0:
                train_checkpoint.save(tmp, kept, {**task.meta(), "epoch": epoch + 1, "step": step,
                                                  "train_s": budget.spent_s(),
                                                  "history": history, "metrics": metrics},
                                      {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                                       **({"swa": swa.state_dict(bare)} if swa else {})})
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt, checkpoint_upload_fn=train_checkpoint.uploader(job.run_uri))
        cadence.checkpointed()


def validate(task: Task, model: torch.nn.Module, epoch: int, precision: str, device: torch.device) -> dict[str, float]:
    """The validation metrics (val/...) of `model` over every worker's validation shard; leaves it in eval mode."""
    model.eval()
    sums = Sums()
    with torch.no_grad():
        for batch in task.batches("val", epoch):
            with autocast_for(precision, device):
                _, stats = task.step(model, batch, epoch)
            sums.add(stats)
    return sums.reduce("val", device)


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
        values = {**self.sums.reduce("train_step", device), "train_step/lr": lr,
                  "train_step/samples_per_s": self.samples / max(now - self.started, 1e-9)}
        self.sums, self.samples, self.started = Sums(), 0, now
        return values


def _quiet_ray_train(record: logging.LogRecord) -> bool:
    """Ray Train 2.60 logs every report at INFO from a logger named by its file path, which its own
    LoggingConfig level misses; keep its warnings and errors only."""
    return record.levelno >= logging.WARNING or "/ray/train/" not in record.pathname.replace("\\", "/")


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
