"""The fused head loss alone (asciiray.train.head_loss), forward and backward: this checkout's against another's.

Both versions run in one process on the same features, head conv, codes and
class weights (channels-last features, as the decoder gives them), taking turns
round by round so that machine noise hits both alike; prints each one's median
time and their ratio for each number of features. The whole step's figure is
cpu_roofline.py --baseline; this one isolates the tail, whose passes over the
logits are most of a `small` step's forward.

    git worktree add /tmp/old 93c0411
    .venv/bin/python benchmarks/head_tail.py --baseline /tmp/old --features 8 16 32
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from pathlib import Path
from types import ModuleType

import torch

from asciiray.train import head_loss


def load(path: Path) -> ModuleType:
    """The head_loss module of another checkout, under a name of its own."""
    spec = importlib.util.spec_from_file_location("baseline_head_loss", path / "asciiray" / "train" / "head_loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout whose head_loss to time")
    parser.add_argument("--features", type=int, nargs="+", default=[8, 16, 32], help="the head conv's inputs")
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--grid", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--reps", type=int, default=10, help="timed calls per version and round (median)")
    args = parser.parse_args()

    versions = {"baseline": load(args.baseline.resolve()), "this checkout": head_loss}
    print(f"CPU, {torch.get_num_threads()} threads; batch {args.batch_size}, {args.grid} x {args.grid} grid, "
          f"{args.rounds} rounds of {args.reps} calls")
    for features in args.features:
        g = torch.Generator().manual_seed(0)
        head = torch.nn.Conv2d(features, 95, 1)
        x = torch.randn(args.batch_size, features, args.grid, args.grid, generator=g).contiguous(
            memory_format=torch.channels_last).requires_grad_()
        codes = torch.randint(0, 95, (args.batch_size, args.grid, args.grid), generator=g)
        weight = torch.rand(95, generator=g) + 0.2

        def seconds(module: ModuleType, reps: int) -> float:
            times = []
            for _ in range(reps):
                started = time.perf_counter()
                loss, _ = module.head_cross_entropy(x, head, codes, 95, weight)
                loss.backward()
                times.append(time.perf_counter() - started)
            return statistics.median(times)

        for module in versions.values():
            seconds(module, 3)
        times: dict[str, list[float]] = {name: [] for name in versions}
        for r in range(args.rounds):
            for name, module in (versions.items() if r % 2 == 0 else reversed(versions.items())):
                times[name].append(seconds(module, args.reps))
        old, new = (statistics.median(t) for t in times.values())
        rounds = ", ".join(f"{a / b:.2f}" for a, b in zip(*times.values()))
        print(f"{features} features: baseline {old * 1e3:.2f} ms, this checkout {new * 1e3:.2f} ms; "
              f"baseline / this {old / new:.3f} (rounds: {rounds})")


if __name__ == "__main__":
    main()
