"""The training step with `--compile`, `--pad-head` and `--precision bf16` vs without, side by side in one
process.

Plain loops (gpu_check.Bench: the loop's own TrainStep on grids held in
memory), each with its own model and Adam: eager with the 95-channel head,
`--compile` (torch.compile's inductor backend, compiled during the warm-up
steps), the 96-channel head, and (when --precision is 32) the eager step under
bf16 autocast. After --warmup steps each, they take turns
for --rounds rounds of --steps steps, so a busy machine slows all alike; prints
the median samples/s of each and its ratio to eager.

With --recipe (repeatable, learning_curve.py's recipe specs) it compares the
recipes' steps instead, each on the preset and options it names: the cost per
sample that each recipe's ink_f1 is bought with.

    .venv/bin/python benchmarks/step_options.py --preset small -b 64              # CPU
    .venv/bin/python benchmarks/step_options.py --preset seed -b 256 --precision bf16   # a GPU
    .venv/bin/python benchmarks/step_options.py --recipe default --recipe map --recipe 'wide:model.decoder_channels=[32,32,32]'
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch

from asciiray.embedded import DEFAULT_CORPUS
from asciiray.train.vae_task import VAETask
from gpu_check import Bench, vae_setup  # this directory's
from learning_curve import parse_recipe, recipe_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--precision", default="32", choices=("32", "bf16"))
    parser.add_argument("--max-pieces", type=int, default=2000)
    parser.add_argument("--image-recon-loss-coeff", type=float, default=0.0)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--recipe", action="append", default=[],
                        help="compare these recipes (learning_curve.py's NAME or NAME:key=value,...) instead")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as runs:
        values = dict(preset=args.preset, corpus=args.corpus, batch_size=args.batch_size, max_pieces=args.max_pieces,
                      precision=args.precision, storage_path=runs, image_recon_loss_coeff=args.image_recon_loss_coeff)
        benches = recipe_benches(args, values, device) if args.recipe else option_benches(args, values, device)
    rates: dict[str, list[float]] = {name: [] for name in benches}
    for bench in benches.values():
        bench.rate(args.warmup, 0)
    for i in range(args.rounds):
        names = list(benches) if i % 2 == 0 else list(reversed(benches))
        for name in names:
            rates[name].append(benches[name].rate(0, args.steps) * args.batch_size)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    what = f"recipes {', '.join(args.recipe)}" if args.recipe else f"preset {args.preset}"
    print(f"{where}; {what}, batch {args.batch_size}, precision {args.precision}, image loss "
          f"{args.image_recon_loss_coeff}; {args.warmup} warm-up steps, {args.rounds} rounds of {args.steps} steps")
    base = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:26s} median {median:8.1f} samples/s  ratio {median / base:.3f}  "
              f"(rounds: {', '.join(f'{v:.1f}' for v in values)})")


def option_benches(args: argparse.Namespace, values: dict, device: torch.device) -> dict[str, Bench]:
    """The step of `values` eager, compiled, with a 96-channel head and (from fp32) under bf16 autocast."""
    _, job, grids = vae_setup(values, args.precision)
    padded = vae_setup({**values, "pad_head": True}, args.precision)[1]
    benches = {"eager, 95-channel head": Bench(VAETask(job, device), grids, args.batch_size, args.precision, device),
               "--compile": Bench(VAETask(job, device), grids, args.batch_size, args.precision, device, "inductor"),
               "--pad-head (96 channels)": Bench(VAETask(padded, device), grids, args.batch_size, args.precision,
                                                 device)}
    if args.precision == "32":
        benches["--precision bf16"] = Bench(VAETask(job, device), grids, args.batch_size, "bf16", device)
    return benches


def recipe_benches(args: argparse.Namespace, values: dict, device: torch.device) -> dict[str, Bench]:
    """Each recipe's step (learning_curve.recipe_setup)."""
    benches = {}
    for spec in args.recipe:
        name, options = parse_recipe(spec)
        _, job, grids, model_config = recipe_setup(values, options, args.precision)
        task = VAETask(job, device)
        task.model_config = model_config
        benches[name] = Bench(task, grids, args.batch_size, args.precision, device)
    return benches


if __name__ == "__main__":
    main()
