"""Training samples/s: `asciiray train` (Ray Train + Ray Data) vs a plain PyTorch loop, side by side.

Both paths train the same preset on the same corpus with the same batch size,
precision, threads and loss (the VAE task's own `step`); both time only the
training part of each epoch and skip the first (warm-up) epoch. The plain loop
runs before and after the Ray run and the two are averaged, so machine noise
hits both sides alike. Prints both figures and the ratio.

On a CPU both sides run with the allocator settings CPU training workers get
(asciiray.runtime.CPU_ALLOCATOR_ENV): the script restarts itself with them, so
the ratio compares the pipelines, not the allocators.

    .venv/bin/python benchmarks/train_throughput.py --preset small -b 64 -n 4
    .venv/bin/python benchmarks/train_throughput.py --preset seed -b 256 -n 3 --precision bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time

import numpy as np
import torch

from asciiray import charset, corpus, data
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.models import VAE, get_preset
from asciiray.runtime import CPU_ALLOCATOR_ENV, cpu_allocator_env
from asciiray.train.loop import autocast_for, resolve_precision
from asciiray.train.vae import TrainConfig, VAETask, train


def plain_loop(cfg: TrainConfig, codes: np.ndarray, char_freq: list[float], device: torch.device) -> float:
    """Samples/s of a bare loop over an in-memory tensor: no Ray, no DDP, no data pipeline."""
    torch.manual_seed(cfg.seed)
    settings = {**dataclasses.asdict(cfg), "char_freq": char_freq}
    task = VAETask(settings, device)
    model = VAE(get_preset(cfg.preset)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    grids = torch.from_numpy(codes).to(device)
    rates = []
    for epoch in range(cfg.n_epochs):
        order = torch.randperm(len(grids), device=device)
        started, seen = time.perf_counter(), 0
        for i in range(0, len(grids), cfg.batch_size):
            batch = grids[order[i:i + cfg.batch_size]]
            with autocast_for(settings["precision"], device):
                loss, _ = task.step(model, batch, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            seen += len(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - started))
    return float(np.mean(rates[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("-n", "--n-epochs", type=int, default=4)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--max-pieces", type=int, default=2000)
    parser.add_argument("--image-recon-loss-coeff", type=float, default=0.5)
    parser.add_argument("--plain-only", action="store_true",
                        help="time the plain loop alone, as this process's allocator has it (no re-exec)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    use_gpu = torch.cuda.is_available()
    if not use_gpu and not args.plain_only and any(k not in os.environ for k in CPU_ALLOCATOR_ENV):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **cpu_allocator_env()})
    device = torch.device("cuda" if use_gpu else "cpu")
    threads = torch.get_num_threads()
    grid = get_preset(args.preset).grid
    with tempfile.TemporaryDirectory() as runs:
        cfg = TrainConfig(preset=args.preset, corpus=args.corpus, batch_size=args.batch_size,
                          n_epochs=args.n_epochs, precision=resolve_precision(args.precision, use_gpu),
                          max_pieces=args.max_pieces, storage_path=runs, run_name="bench", threads=threads,
                          image_recon_loss_coeff=args.image_recon_loss_coeff, roll_std=0.0,
                          checkpoint_every=args.n_epochs, print_every=args.n_epochs)
        p = data.plan(cfg.corpus, grid, cfg.validation_prop, cfg.max_pieces)
        table = corpus.read_table(cfg.corpus, columns=["id", "text", "height", "width"]).sort_by("id")
        texts = [t for t, h, w in zip(table["text"].to_pylist(), table["height"].to_pylist(),
                                      table["width"].to_pylist()) if h <= grid and w <= grid][:p.train]
        codes = np.stack([charset.encode(t, grid) for t in texts])

        before = plain_loop(cfg, codes, p.char_freq, device)
        if args.plain_only:
            print(f"plain PyTorch loop: {before:.1f} samples/s")
            return
        result = train(cfg)
        after = plain_loop(cfg, codes, p.char_freq, device)
        ray_rates = [h["samples_per_s"] for h in _history(result)[1:]]
    plain = (before + after) / 2
    ours = float(np.mean(ray_rates))
    print(f"device: {torch.cuda.get_device_name() if use_gpu else 'CPU'} ({threads} threads), preset {args.preset}, "
          f"batch {args.batch_size}, precision {cfg.precision}, {len(codes)} pieces/epoch, {args.n_epochs} epochs")
    print(f"plain PyTorch loop: {plain:.1f} samples/s (before {before:.1f}, after {after:.1f})")
    print(f"asciiray train (Ray Train, 1 worker): {ours:.1f} samples/s")
    print(f"ratio: {ours / plain:.3f}")


def _history(result) -> list[dict]:
    from asciiray.train import checkpoint

    with result.checkpoint.as_directory() as d:
        return checkpoint.load_meta(d)["history"]


if __name__ == "__main__":
    main()
