"""Where the VAE training step stands against the CPU's limits: a roofline figure and a profile.

Prints, for the loop's own step (gpu_check.Bench: `TrainStep` on grids held in
memory) at the run's threads:

- the step's FLOPs per sample (torch.utils.flop_counter.FlopCounterMode) and the
  bytes per sample its large tensors move (every operator's tensor inputs and
  outputs of at least --large-mib, which cannot stay in a core's cache: a lower
  bound on DRAM traffic);
- the machine's measured fp32 matmul and conv throughput and its memory
  bandwidth (a copy of a 256 MiB tensor), on the same threads;
- the step's achieved FLOP/s and bytes/s, the time each bound allows, which one
  limits the step, and the achieved fraction of it;
- torch.profiler tables of the top operators by self CPU time, forward (loss and
  metrics) and backward (with the optimizer step).

With --baseline PATH it also times the plain loop of the checkout at PATH and of
this one (benchmarks/train_throughput.py --plain-only of each), in fresh processes
that take turns round by round with CPU training workers' allocator settings, and
prints both medians and their ratio.

    .venv/bin/python benchmarks/cpu_roofline.py --preset small -b 64
    .venv/bin/python benchmarks/cpu_roofline.py --preset small -b 64 --baseline /tmp/old6a10 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from asciiray.embedded import DEFAULT_CORPUS
from asciiray.runtime import cpu_allocator_env
from asciiray.train.vae_task import VAETask
from gpu_check import Bench, vae_setup  # this directory's


class LargeTensorBytes(TorchDispatchMode):
    """Bytes of the tensor inputs and outputs of every operator that are at least `large` bytes each."""

    def __init__(self, large: int) -> None:
        super().__init__()
        self.large, self.total = large, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor) and t.numel() * t.element_size() >= self.large:
                self.total += t.numel() * t.element_size()
        return out


def best_rate(work: float, run: Callable[[], Any], repeats: int = 5) -> float:
    """work / the fastest of `repeats` timed calls (the quietest moment of a shared machine)."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return work / min(times)


def machine_peaks() -> dict[str, float]:
    """fp32 matmul and conv FLOP/s and copy bandwidth (bytes read + written per s) on this process's threads."""
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    x, conv = torch.randn(64, 64, 32, 32), torch.nn.Conv2d(64, 64, 3, padding=1)
    x = x.contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    src = torch.ones(64 * 2 ** 20)  # 256 MiB
    dst = torch.empty_like(src)
    with torch.no_grad():
        return {"matmul": best_rate(2 * 2048 ** 3, lambda: a @ b),
                "conv": best_rate(2 * 64 * 64 * 64 * 9 * 32 * 32, lambda: conv(x)),
                "bandwidth": best_rate(2 * src.numel() * 4, lambda: dst.copy_(src))}


def per_sample_counts(bench: Bench, batch: int, large: int) -> tuple[float, float]:
    """FLOPs and large-tensor bytes of one step, per sample (counted on one thread: the fused head's
    pool threads would be invisible to the counting modes)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FlopCounterMode(display=False) as flops:
            bench.run(1)
        with LargeTensorBytes(large) as moved:
            bench.run(1)
    finally:
        torch.set_num_threads(threads)
    return flops.get_total_flops() / batch, moved.total / batch


def profile_tables(bench: Bench, steps: int, rows: int) -> tuple[str, str]:
    """Top operators by self CPU time: the forward (loss and metrics) over `steps` steps, and the backward
    with the Adam step of the last of them."""
    from torch.profiler import ProfilerActivity, profile

    step = bench.step
    with profile(activities=[ProfilerActivity.CPU]) as forward:
        for _ in range(steps):
            loss, _ = step.loss_of(step.model, bench.grids[torch.randint(0, len(bench.grids), (bench.batch,))], 0)
    step.optimizer.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as backward:
        loss.backward()
        step.optimizer.step()
    return tuple(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows) for p in (forward, backward))


def plain_rates(checkouts: dict[str, Path], rounds: int, rest: list[str]) -> dict[str, list[float]]:
    """samples/s of each checkout's plain loop, fresh processes taking turns round by round."""
    rates: dict[str, list[float]] = {name: [] for name in checkouts}
    for r in range(rounds):
        for name, root in (checkouts.items() if r % 2 == 0 else reversed(checkouts.items())):
            env = {**os.environ, **cpu_allocator_env(), "PYTHONPATH": str(root)}
            out = subprocess.run([sys.executable, str(root / "benchmarks" / "train_throughput.py"), "--plain-only",
                                  *rest], env=env, check=True, capture_output=True, text=True, cwd=root).stdout
            rates[name].append(float(re.search(r"plain PyTorch loop: ([\d.]+)", out).group(1)))
            print(f"round {r + 1}: {name}: {rates[name][-1]:.1f} samples/s", flush=True)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--max-pieces", type=int, default=1500)
    parser.add_argument("--image-recon-loss-coeff", type=float, default=0.0, help="0: the default run's loss")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--large-mib", type=float, default=1.0, help="tensors counted as moved to and from DRAM")
    parser.add_argument("--rows", type=int, default=12, help="operators per profile table")
    parser.add_argument("--baseline", type=Path, help="another checkout whose plain loop to time beside this one's")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", "--n-epochs", type=int, default=3, help="epochs of each --baseline plain loop")
    args = parser.parse_args()

    if args.baseline:
        rest = ["--preset", args.preset, "--corpus", args.corpus, "-b", str(args.batch_size), "-n",
                str(args.n_epochs), "--max-pieces", str(args.max_pieces), "--image-recon-loss-coeff",
                str(args.image_recon_loss_coeff)]
        here = Path(__file__).resolve().parents[1]
        rates = plain_rates({f"baseline {args.baseline}": args.baseline.resolve(), f"this checkout {here}": here},
                            args.rounds, rest)
        old, new = rates.values()
        pairs = [b / a for a, b in zip(old, new)]
        print(f"plain loop, median of {args.rounds} rounds: baseline {statistics.median(old):.1f}, this checkout "
              f"{statistics.median(new):.1f} samples/s; ratio of the medians "
              f"{statistics.median(new) / statistics.median(old):.2f}; each round's ratio "
              f"{', '.join(f'{r:.2f}' for r in pairs)}, median {statistics.median(pairs):.2f}")
        return

    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as runs:
        values = dict(preset=args.preset, corpus=args.corpus, batch_size=args.batch_size, max_pieces=args.max_pieces,
                      precision="32", storage_path=runs, image_recon_loss_coeff=args.image_recon_loss_coeff,
                      use_gpu=False)
        _, job, grids = vae_setup(values, "32")
    bench = Bench(VAETask(job, device), grids, args.batch_size, "32", device)
    flops, moved = per_sample_counts(bench, args.batch_size, int(args.large_mib * 2 ** 20))
    peaks = machine_peaks()
    rate = bench.rate(args.warmup, args.steps) * args.batch_size
    peaks = {k: max(v, p) for (k, v), p in zip(peaks.items(), machine_peaks().values())}
    compute_s, memory_s, actual_s = flops / peaks["conv"], moved / peaks["bandwidth"], 1 / rate
    bound = "memory" if memory_s > compute_s else "compute (conv)"
    print(f"CPU, {torch.get_num_threads()} threads; preset {args.preset}, batch {args.batch_size}, fp32, image loss "
          f"{args.image_recon_loss_coeff}; {args.steps} timed steps after {args.warmup}")
    print(f"step: {flops / 1e6:.1f} MFLOP/sample, {moved / 2 ** 20:.2f} MiB/sample in tensors >= {args.large_mib:g} "
          f"MiB ({flops / moved:.2f} FLOP/byte)")
    print(f"machine: matmul {peaks['matmul'] / 1e9:.1f} GFLOP/s, conv {peaks['conv'] / 1e9:.1f} GFLOP/s, "
          f"copy bandwidth {peaks['bandwidth'] / 2 ** 30:.1f} GiB/s (ridge {peaks['conv'] / peaks['bandwidth']:.2f} "
          f"FLOP/byte)")
    print(f"achieved: {rate:.1f} samples/s = {flops * rate / 1e9:.2f} GFLOP/s "
          f"({flops * rate / peaks['conv']:.1%} of conv), {moved * rate / 2 ** 30:.2f} GiB/s "
          f"({moved * rate / peaks['bandwidth']:.1%} of copy)")
    print(f"bound: {bound}; it allows {1 / max(compute_s, memory_s):.0f} samples/s (compute {1 / compute_s:.0f}, "
          f"memory {1 / memory_s:.0f}); achieved fraction of the bound {max(compute_s, memory_s) / actual_s:.1%}")
    forward, backward = profile_tables(bench, 3, args.rows)
    print("\nforward (loss and metrics), 3 steps:\n" + forward)
    print("backward and Adam, the last of them:\n" + backward)


if __name__ == "__main__":
    main()
