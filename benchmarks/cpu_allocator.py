"""CPU training samples/s under glibc's default allocator settings vs the ones CPU training workers get.

Runs the plain PyTorch loop of train_throughput.py in fresh processes (glibc
reads these variables at start), alternating the settings round after round so
that machine noise hits every variant alike, and prints each variant's median
and its ratio to the default. Extra arguments go to train_throughput.py.
The loop runs in the main thread, where MALLOC_ARENA_MAX changes nothing; Ray
Train runs the training function in another thread, whose allocations it sends
to the main arena (train_throughput.py shows that).

    .venv/bin/python benchmarks/cpu_allocator.py --rounds 3 -- --preset small -b 64 -n 3 --max-pieces 1000
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

from asciiray.runtime import CPU_ALLOCATOR_ENV

VARIANTS = {
    "glibc defaults": {},
    "mmap 32 MiB, trim 4 GiB": {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296"},
    "the same, top pad 256 MiB": {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "4294967296",
                                  "MALLOC_TOP_PAD_": "268435456"},
    "mmap and trim 4 GiB (asciiray's, less MALLOC_ARENA_MAX)": {
        k: v for k, v in CPU_ALLOCATOR_ENV.items() if k != "MALLOC_ARENA_MAX"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="-- then train_throughput.py arguments")
    args = parser.parse_args()
    rest = [a for a in args.rest if a != "--"]
    script = Path(__file__).with_name("train_throughput.py")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        for name, extra in VARIANTS.items():
            out = subprocess.run([sys.executable, str(script), "--plain-only", *rest], env={**base_env, **extra},
                                 check=True, capture_output=True, text=True).stdout
            rates[name].append(float(re.search(r"plain PyTorch loop: ([\d.]+)", out).group(1)))
            print(f"round {r + 1}: {name}: {rates[name][-1]:.1f} samples/s", flush=True)
    reference = statistics.median(rates["glibc defaults"])
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:30s} median {median:7.1f} samples/s   ratio {median / reference:.2f}")


if __name__ == "__main__":
    main()
