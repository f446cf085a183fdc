"""Training samples/s: `asciiray train` (Ray Train + Ray Data) vs a plain PyTorch loop, side by side.

Both paths train the same preset on the same pieces with the same batch size,
precision, threads and step: the plain loop is the loop's own `TrainStep`
(same non-finite skip, same metric sums) on grids held in memory
(gpu_check.Bench), timed over the steps of all epochs but the first after the
first epoch's steps as warm-up; the Ray path's figure is its mean samples/s of
the epochs after the first (the training part of each epoch). The plain loop
runs before and after each Ray run and the two are averaged, so machine noise
hits both sides alike: a shared machine's speed drifts by several per cent
within minutes. With --rounds R the Ray run is repeated R times, each between
two plain loops (plain, Ray, plain, Ray, ..., plain); prints both figures and
the ratio of each round, and the median ratio.

On a CPU both sides run with the allocator settings CPU training workers get
(asciiray.runtime.CPU_ALLOCATOR_ENV): the script restarts itself with them, so
the ratio compares the pipelines, not the allocators.

With --ray-idle SECONDS it also counts the CPU time the local Ray's processes
(the driver's descendants: GCS, raylet, dashboard, the idle Train and Data
actors and workers) take over that many seconds after the last Ray run, before
the last plain loop: what the Ray processes that stay up cost the loop beside
them.

    .venv/bin/python benchmarks/train_throughput.py --preset small -b 64 -n 4
    .venv/bin/python benchmarks/train_throughput.py --preset small -b 64 -n 3 --max-pieces 6000 --rounds 3
    .venv/bin/python benchmarks/train_throughput.py --preset seed -b 256 -n 3 --precision bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import torch
from ray.train.v2.api.callback import UserCallback

from asciiray import config
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.runtime import CPU_ALLOCATOR_ENV, cpu_allocator_env
from asciiray.train.runner import resolve_precision
from asciiray.train.vae_task import VAETask
from gpu_check import Bench, ray_path, vae_setup  # this directory's


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("-n", "--n-epochs", type=int, default=4, help="at least 2: the first is warm-up")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--max-pieces", type=int, default=2000)
    parser.add_argument("--image-recon-loss-coeff", type=float, default=0.0,
                        help="the rendered-image term's weight (0, the run's default: no render work in the step)")
    parser.add_argument("--plain-only", action="store_true",
                        help="time the plain loop alone, as this process's allocator has it (no re-exec)")
    parser.add_argument("--ray-idle", type=float, default=0.0, metavar="SECONDS",
                        help="count the local Ray's CPU time over this many seconds after the last Ray run")
    parser.add_argument("--rounds", type=int, default=1, help="Ray runs, each between two plain loops")
    args = parser.parse_args()
    if args.n_epochs < 2:
        parser.error("--n-epochs must be at least 2: the first epoch is the warm-up")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    logging.basicConfig(level=logging.WARNING)

    use_gpu = torch.cuda.is_available()
    if not use_gpu and not args.plain_only and any(k not in os.environ for k in CPU_ALLOCATOR_ENV):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **cpu_allocator_env()})
    device = torch.device("cuda" if use_gpu else "cpu")
    threads = torch.get_num_threads()
    precision = resolve_precision(args.precision, use_gpu)
    with tempfile.TemporaryDirectory() as runs:
        values = dict(preset=args.preset, corpus=args.corpus, batch_size=args.batch_size, n_epochs=args.n_epochs,
                      precision=precision, max_pieces=args.max_pieces, storage_path=runs, run_name="bench",
                      threads=threads, image_recon_loss_coeff=args.image_recon_loss_coeff, roll_std=0.0,
                      checkpoint_every=args.n_epochs, print_every=args.n_epochs, use_gpu=use_gpu)
        cfg, job, grids = vae_setup(values, precision)
        per_epoch = -(-len(grids) // args.batch_size)

        def plain() -> float:
            bench = Bench(VAETask(job, device), grids, args.batch_size, precision, device)
            return bench.rate(per_epoch, per_epoch * (args.n_epochs - 1)) * args.batch_size

        before = plain()
        if args.plain_only:
            print(f"plain PyTorch loop: {before:.1f} samples/s")
            return
        print(f"device: {torch.cuda.get_device_name() if use_gpu else 'CPU'} ({threads} threads), preset "
              f"{args.preset}, batch {args.batch_size}, precision {precision}, {len(grids)} pieces/epoch, "
              f"{args.n_epochs} epochs", flush=True)
        ratios = []
        for r in range(1, args.rounds + 1):
            reports = os.path.join(runs, f"reports-{r}.txt")
            ours, wait, history = ray_path(config.replace(cfg, run_name=f"bench-{r}"), (ReportTimes(reports),))
            with open(reports) as f:
                reported = [float(line) for line in f]
            idle = ray_cpu_seconds(args.ray_idle) if args.ray_idle and r == args.rounds else None
            after = plain()
            mean = (before + after) / 2
            ratios.append(ours / mean)
            print(f"round {r}: plain loop (the loop's TrainStep, from memory) {mean:.1f} samples/s (before "
                  f"{before:.1f}, after {after:.1f}); asciiray train (Ray Train, 1 worker) {ours:.1f} samples/s, "
                  f"data wait {wait:.1%}; ratio {ours / mean:.3f}")
            print_epochs(history, reported, len(grids))
            if idle is not None:
                print(f"local Ray after the run: {idle:.2f} CPU s in {args.ray_idle:g} s "
                      f"({idle / args.ray_idle:.1%} of one core)")
            before = after
    print(f"worker torch threads: {history[0]['threads']} (CPUs reserved per worker: {cfg.resources.cpus_per_worker:g})")
    print(f"ratio: {statistics.median(ratios):.3f}" + (f" (median of {args.rounds} rounds: "
          f"{', '.join(f'{x:.3f}' for x in ratios)})" if args.rounds > 1 else ""))


def print_epochs(history: list[dict[str, Any]], reported: list[float], pieces: int) -> None:
    """What each epoch after the first spent besides its steps and validation, and the first's data wait."""
    for i, (h, gap) in enumerate(zip(history[1:], (b - a for a, b in zip(reported, reported[1:]))), start=2):
        steps_s = pieces / h["samples_per_s"] * (1 - h["data_wait"])
        besides = gap - steps_s - h["val_s"]
        print(f"  epoch {i}: {gap:.2f} s report to report, {steps_s:.2f} s in steps, {h['val_s']:.2f} s "
              f"validating: {besides:.2f} s besides (data wait {h['data_wait']:.1%}, sample, checkpoint, report)")
    print(f"  epoch 1: data wait {history[0]['data_wait']:.1%}")


def ray_cpu_seconds(seconds: float) -> float:
    """CPU seconds this process's descendants (the local Ray's processes) use over the next `seconds`."""
    import psutil

    def used(p: psutil.Process) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:  # ended meanwhile
            return 0.0

    processes = psutil.Process().children(recursive=True)
    start = {p.pid: used(p) for p in processes}
    time.sleep(seconds)
    return sum(max(0.0, used(p) - start[p.pid]) for p in processes)


class ReportTimes(UserCallback):
    """Appends the controller's clock at each report to a file (the controller is another process)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:
        with open(self.path, "a") as f:
            f.write(f"{time.time()}\n")


if __name__ == "__main__":
    main()
