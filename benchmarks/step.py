"""Training steps/s of the VAE task: this checkout vs another one (e.g. the commit before a change), side by side.

Each round runs a fresh process per checkout, alternating which goes first;
each process imports asciiray from its checkout (PYTHONPATH), encodes the
same pieces of the embedded corpus and times the same steps: the VAE task's
own `step` (all losses and metric sums), backward, gradient clipping and Adam,
after a few warm-up steps, on one in-memory batch sequence (no Ray, no data
pipeline); then the loss terms alone (forward and backward from fixed decoder
logits). Both run with the allocator settings CPU training workers get.
Prints samples/s per round, by the wall clock and per CPU second, the medians
and their ratios.

    git archive <commit> | tar -x -C /tmp/asciiray-before
    .venv/bin/python benchmarks/step.py --baseline /tmp/asciiray-before
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def child(args: argparse.Namespace) -> None:
    """Time the steps with the asciiray that PYTHONPATH names; print a JSON line."""
    import numpy as np
    import torch

    import asciiray
    from asciiray import charset, corpus
    from asciiray.charset import NUM_CHARS
    from asciiray.embedded import DEFAULT_CORPUS
    from asciiray.losses import compute_losses
    from asciiray.models import VAE, get_preset
    from asciiray.train.loop import autocast_for
    from asciiray.train.vae import TrainConfig, VAETask

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    cfg = TrainConfig(preset=args.preset, batch_size=args.batch_size, precision=args.precision,
                      image_recon_loss_coeff=args.image_recon_loss_coeff, roll_std=0.0,
                      char_weights_scaling=args.char_weights_scaling, ce_label_smoothing=args.ce_label_smoothing)
    grid = get_preset(args.preset).grid
    table = corpus.read_table(DEFAULT_CORPUS, columns=["text", "height", "width"])
    texts = [t for t, h, w in zip(table["text"].to_pylist(), table["height"].to_pylist(), table["width"].to_pylist())
             if h <= grid and w <= grid][:args.batch_size * (args.warmup + args.steps)]
    codes = torch.from_numpy(np.stack([charset.encode(t, grid) for t in texts]))
    freq = [float(x) for x in corpus.char_frequencies(table)]
    task = VAETask({**dataclasses.asdict(cfg), "char_freq": freq}, device)
    model = VAE(get_preset(args.preset)).to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    batches = codes.split(args.batch_size)

    def train_step(batch: torch.Tensor) -> None:
        with autocast_for(cfg.precision, device):
            loss, _ = task.step(model, batch, 0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()

    # The loss terms alone (all of them, forward and backward), from fixed decoder logits: the code that changed.
    logits = torch.randn(args.batch_size, NUM_CHARS, grid, grid).contiguous(memory_format=torch.channels_last)
    logits.requires_grad_()
    mu, logvar = torch.zeros(args.batch_size, 8, requires_grad=True), torch.zeros(args.batch_size, 8)

    def loss_step(batch: torch.Tensor) -> None:
        terms = compute_losses((torch.log_softmax(logits, 1), mu, logvar), batch, weight=task.weight,
                               label_smoothing=cfg.ce_label_smoothing, renderer=task.renderer, tau=0.7,
                               kl_coeff=cfg.kl_coeff, image_recon_loss_coeff=cfg.image_recon_loss_coeff)
        logits.grad = None
        terms["loss"].backward()

    result = {"asciiray": asciiray.__file__}
    for name, fn in (("step", train_step), ("losses", loss_step)):
        for i, batch in enumerate(batches):
            if i == args.warmup:
                wall, cpu = time.perf_counter(), time.process_time()
            fn(batch)
        samples = args.steps * args.batch_size
        result[name] = {"wall": samples / (time.perf_counter() - wall), "cpu": samples / (time.process_time() - cpu)}
    print(json.dumps(result))


def run_child(tree: Path, argv: list[str], threads: int) -> dict:
    from asciiray.runtime import cpu_allocator_env

    env = {**os.environ, **cpu_allocator_env(), "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the run in {tree} failed:\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(result["asciiray"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the run for {tree} imported {result['asciiray']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="the other checkout (a directory holding asciiray/)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--preset", default="small")
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="32", choices=("32", "bf16"))
    parser.add_argument("--image-recon-loss-coeff", type=float, default=0.5)
    parser.add_argument("--char-weights-scaling", type=float, default=0.0)
    parser.add_argument("--ce-label-smoothing", type=float, default=0.0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.baseline is None or not (args.baseline / "asciiray").is_dir():
        parser.error("--baseline must name a checkout holding asciiray/ (see the example above)")
    passed = {k: v for k, v in vars(args).items() if k not in ("baseline", "rounds", "child")}
    argv = [x for k, v in passed.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    trees = {"baseline": args.baseline, "this": HERE}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    print(f"preset {args.preset}, batch {args.batch_size}, precision {args.precision}, {args.threads} threads, "
          f"image loss {args.image_recon_loss_coeff}, {args.warmup} warm-up + {args.steps} timed steps; "
          f"samples/s by the wall clock and per CPU second (the process's CPU time: steadier on a busy machine)")
    rows = [(part, clock) for part in ("step", "losses") for clock in ("wall", "cpu")]
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            runs[name].append(run_child(trees[name], argv, args.threads))
        print(f"round {r + 1}: " + "; ".join(
            f"{part} {clock} " + ", ".join(f"{name} {runs[name][-1][part][clock]:.1f}" for name in trees)
            for part, clock in rows))
    print(f"medians of {args.rounds} rounds (baseline {args.baseline}, this {HERE}):")
    for part, clock in rows:
        median = {name: statistics.median(run[part][clock] for run in runs[name]) for name in trees}
        print(f"  {part:6} {clock:4}: baseline {median['baseline']:8.1f}  this {median['this']:8.1f}  "
              f"ratio {median['this'] / median['baseline']:.3f}")


if __name__ == "__main__":
    main()
