"""One-shot GPU check of training speed: prints one table.

On one GPU: `seed` preset, bf16, batch 256. Rows: samples/s of a plain loop fed
from memory and of `asciiray train` (Ray Train + Ray Data, 1 worker); the data
wait share of the Ray path; peak GPU memory; host syncs per step
(torch.cuda.set_sync_debug_mode); the top kernels of a short torch.profiler
trace; renderer training steps/s; the plain loop again with `--compile` and
with a 96-channel head (`--pad-head`), as ratios to the first. With --smoke,
`--compile` uses torch.compile's "eager" backend (graph capture only: inductor
takes minutes to compile on a CPU), so its figure means nothing there. The plain loop runs the loop's own step
(asciiray.train.step.TrainStep: same non-finite skip, same metric sums) and is
timed over --steps steps after --warmup steps. The Ray path's figure is its
mean samples/s over the epochs after the first (an epoch-based figure: see
docs/PERFORMANCE.md).

    .venv/bin/python benchmarks/gpu_check.py            # on a GPU machine, a few minutes
    .venv/bin/python benchmarks/gpu_check.py --smoke    # the same code paths on CPU, tiny preset, < 1 minute
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from typing import Any

import torch

from asciiray import charset, config, data
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.train.job import Job
from asciiray.train.loop import autocast_for
from asciiray.train.options import RendererTrainConfig, TrainConfig
from asciiray.train.renderer import RendererTask
from asciiray.train.step import TrainStep, make_adam
from asciiray.train.vae import train
from asciiray.train.vae_task import VAETask


class Bench:
    """A task's model trained by the loop's step on grids held in memory (compiled with `compile_backend`)."""

    def __init__(self, task: Any, grids: torch.Tensor, batch: int, precision: str, device: torch.device,
                 compile_backend: str | None = None) -> None:
        torch.manual_seed(0)
        self.device, self.batch, self.grids = device, batch, grids.to(device)
        model = task.build_model().to(device).train()
        params = list(model.parameters())
        if compile_backend:
            model = task.compiled(model, compile_backend)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "16")
        self.step = TrainStep(task.step, model, make_adam(params, 1e-4, device), scaler,
                              task.cfg.optim.grad_clip, lambda: autocast_for(precision, device), device)
        self.i = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            index = torch.randint(0, len(self.grids), (self.batch,), device=self.device)
            self.step(self.grids[index], 0)
            self.i += 1

    def rate(self, warmup: int, steps: int) -> float:
        """Steps/s over `steps` steps after `warmup` steps."""
        self.run(warmup)
        sync(self.device)
        started = time.perf_counter()
        self.run(steps)
        sync(self.device)
        return steps / (time.perf_counter() - started)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def host_syncs_per_step(bench: Bench, steps: int) -> str:
    if bench.device.type != "cuda":
        return "n/a on CPU (CUDA sync debug mode)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            bench.run(steps)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return f"{sum('synchroniz' in str(w.message) for w in caught) / steps:.2f}"


def top_kernels(bench: Bench, steps: int, n: int = 5) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    cuda = bench.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        bench.run(steps)
        sync(bench.device)
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:n]
    return [f"{e.key[:60]} {getattr(e, key) / 1000 / steps:.2f} ms/step" for e in rows]


def ray_path(cfg: TrainConfig, callbacks: tuple[Any, ...] = ()) -> tuple[float, float, list[dict[str, Any]]]:
    """Mean samples/s and data-wait share of `asciiray train` over the epochs after the first, and every
    epoch's metrics."""
    from asciiray import checkpoint

    result = train(cfg, callbacks=callbacks)
    with result.checkpoint.as_directory() as d:
        history = checkpoint.load_meta(d)["history"]
    later = history[1:]
    return (sum(h["samples_per_s"] for h in later) / len(later), sum(h["data_wait"] for h in later) / len(later),
            history)


def vae_setup(values: dict[str, Any], precision: str) -> tuple[TrainConfig, Job, torch.Tensor]:
    """The run config of `values`, its Job (no run directory) and the uint8 grids of its training pieces."""
    cfg = config.build(TrainConfig, values)
    uri, max_pieces = data.source(cfg.data.corpus, cfg.data.max_pieces)
    cfg = config.replace(cfg, corpus=uri, max_pieces=max_pieces)
    grid = _grid(cfg.model.preset)
    plan = data.plan(uri, grid, cfg.data.validation_prop, max_pieces)
    texts = data.fitting_pieces(uri, grid, cfg.data.validation_prop, max_pieces, training=True)["text"]
    grids = torch.from_numpy(charset.encode_many(texts.to_pylist(), grid))
    return cfg, Job(kind="vae", cfg=cfg, run_uri="", precision=precision, plan=plan), grids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny preset, a few steps: checks the code paths")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    gpu = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        torch.backends.cudnn.benchmark = True
    preset, batch, precision = ("seed", 256, "bf16") if gpu else ("tiny", 16, "32")
    steps, warmup, epochs, pieces = (args.steps, args.warmup, 3, 20000) if not args.smoke else (4, 2, 2, 96)

    def row(key: str, value: str) -> None:
        """One row of the table, printed as soon as it is measured (a cut-short run keeps its rows)."""
        print(f"{key:<46}  {value}", flush=True)

    row("device", torch.cuda.get_device_name() if gpu else "CPU (smoke: code paths only, figures mean nothing)")
    row("setup", f"preset {preset}, {precision}, batch {batch}, {steps} timed steps after {warmup}")
    with tempfile.TemporaryDirectory() as runs:
        values = dict(preset=preset, corpus=args.corpus, batch_size=batch, precision=precision, n_epochs=epochs,
                      max_pieces=pieces, storage_path=runs, run_name="gpu-check", roll_std=0.0,
                      checkpoint_every=epochs, print_every=epochs, threads=None if gpu else 1,
                      **({} if gpu else {"font_res": 2, "use_gpu": False}))
        cfg, job, grids = vae_setup(values, precision)
        plan = job.plan

        if gpu:
            torch.cuda.reset_peak_memory_stats()
        vae = Bench(VAETask(job, device), grids, batch, precision, device)
        plain = vae.rate(warmup, steps) * batch
        row("plain loop (loop's TrainStep, from memory)", f"{plain:.0f} samples/s")
        row("peak GPU memory (plain loop)", f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if gpu
            else "n/a on CPU")
        row("host syncs per step", host_syncs_per_step(vae, max(2, steps // 10)))
        for i, kernel in enumerate(top_kernels(vae, 3 if args.smoke else 5)):
            row(f"top kernel {i + 1}", kernel)
        for other in ("small", "small-map") if gpu else ():
            other_job = vae_setup({**values, "preset": other, "batch_size": 64}, precision)[1]
            rate = Bench(VAETask(other_job, device), grids, 64, precision, device).rate(warmup, steps) * 64
            row(f"plain loop, preset {other}, batch 64", f"{rate:.0f} samples/s")
        try:
            ray_rate, wait, _ = ray_path(cfg)
            row("asciiray train, Ray 1 worker (epochs 2+)", f"{ray_rate:.0f} samples/s")
            row("Ray / plain", f"{ray_rate / plain:.3f}")
            row("Ray path data wait share", f"{wait:.1%}")
        except Exception as exc:  # the plain-loop rows still stand; the table says why this one is missing
            ray_rate = None
            row("asciiray train, Ray 1 worker", f"failed: {type(exc).__name__}: {exc}"[:200])
        n_gpus = torch.cuda.device_count() if gpu else 1
        if n_gpus > 1 and ray_rate:  # the same global batch over every GPU: efficiency = N-worker / (N x 1-worker)
            many_rate = ray_path(config.replace(cfg, num_workers=str(n_gpus), run_name="gpu-check-all"))[0]
            row("multi-GPU scaling, 1 -> all GPUs",
                f"{many_rate / (n_gpus * ray_rate):.2f} efficiency ({n_gpus} workers: {many_rate:.0f} samples/s)")
        else:
            row("multi-GPU scaling, 1 -> all GPUs", "fewer than 2 GPUs here: not measured")
        padded_job = vae_setup({**values, "pad_head": True}, precision)[1]
        padded = Bench(VAETask(padded_job, device), grids, batch, precision, device).rate(warmup, steps) * batch
        row("plain loop, 96-channel head (--pad-head)", f"{padded:.0f} samples/s, {padded / plain:.3f}x")
        rcfg = config.build(RendererTrainConfig, {"preset": "default" if gpu else "tiny", "batch_size": batch,
                                                  "storage_path": runs, "use_gpu": gpu})
        renderer = Bench(RendererTask(Job(kind="renderer", cfg=rcfg, run_uri="", precision=precision, plan=plan),
                                      device), grids, batch, precision, device)
        row("renderer training steps/s", f"{renderer.rate(warmup, steps):.1f}")
        compiled = Bench(VAETask(job, device), grids, batch, precision, device,
                         compile_backend="eager" if args.smoke else "inductor").rate(warmup, steps) * batch
        row("plain loop, --compile" + (" (smoke: eager backend)" if args.smoke else ""),
            f"{compiled:.0f} samples/s, {compiled / plain:.3f}x")


def _grid(preset: str) -> int:
    from asciiray.models import get_preset

    return get_preset(preset).grid


if __name__ == "__main__":
    main()
