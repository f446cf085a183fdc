"""Time one frame of `asciiray explore` per preset: decode one latent and crop it to text, on the CPU.

The explorer decodes one grid per frame, so this is the frame rate a preset can
keep up on this machine (untrained weights cost the same as trained ones). Prints
the median over --frames frames for each preset, in the same run.

    .venv/bin/python benchmarks/explore_frame.py --frames 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from asciiray import charset
from asciiray.inference import TrainedVAE
from asciiray.models import PRESETS, VAE, get_preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}")
    for name in PRESETS:
        vae = TrainedVAE(VAE(get_preset(name)).eval(), {}, name)
        z = vae.prior(args.frames + 5, seed=0)
        times = []
        for i, row in enumerate(z):
            started = time.perf_counter()
            charset.decode(vae.decode(row[None]).codes[0])
            if i >= 5:
                times.append(time.perf_counter() - started)
        median = statistics.median(times)
        print(f"{name:>6}: {median * 1000:7.1f} ms a frame (median of {args.frames}), up to {1 / median:5.1f} frames/s")


if __name__ == "__main__":
    main()
