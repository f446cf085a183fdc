"""Does the default recipe collapse on real art? Train it on benchmarks/data/realart and score validation.

Real multi-line pictures (cows, logos, trains, boxes, photos turned to
characters: see benchmarks/data/realart/README.md) are where a VAE tends to
reconstruct whole pieces as blank space. This trains the default recipe (the
run config's defaults, plus any `key=value` config keys given) in one process
on one thread, as `recipe_probe.py` does, for the default budget (--steps, or
else the config's budget: 700 steps unless it says otherwise), then prints val
ink_f1, near_collapse and space_collapse and draws validation inputs beside
their reconstructions. The check holds when near_collapse <= 0.05.

    .venv/bin/python benchmarks/collapse_check.py --png docs/quality/realart.png   # the default recipe
    .venv/bin/python benchmarks/collapse_check.py preset=small where_coeff=10
    .venv/bin/python benchmarks/collapse_check.py --smoke                        # the same code, seconds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from asciiray import pictures
from asciiray.metrics import score
from recipe_probe import train, value  # this directory's

REALART = Path(__file__).parent / "data" / "realart"
FIGURES = ("ink_f1", "ink_precision", "ink_recall", "ink_ratio", "near_collapse", "space_collapse")
NEAR_COLLAPSE_MAX = 0.05


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("options", nargs="*", help="config keys laid over the defaults, e.g. kl_coeff=1e-4")
    parser.add_argument("--corpus", default=str(REALART), help="a corpus, or a folder of .txt files")
    parser.add_argument("--steps", type=int, help="the budget in steps (default: the run's default budget)")
    parser.add_argument("--png", type=Path, help="write validation inputs beside their reconstructions here")
    parser.add_argument("--pairs", type=int, default=8, help="pairs in the PNG")
    parser.add_argument("--smoke", action="store_true", help="a few steps on a few pieces: checks the code paths")
    args = parser.parse_args()
    options = {"corpus": args.corpus, **{k: value(v) for k, v in (o.split("=", 1) for o in args.options)}}
    steps = args.steps
    if args.smoke:
        options.update(max_pieces=60, batch_size=8)
        steps = 3
    run = train(options, steps=steps, points=0)
    with torch.no_grad():
        figures = score(run.model, run.val.split(256))
        recons = run.model(run.val[:args.pairs])[0].argmax(1)
    print(json.dumps({"corpus": args.corpus, "options": args.options, "steps": run.steps,
                      "epochs": round(run.epochs, 2), "train_pieces": len(run.grids), "val_pieces": len(run.val),
                      **{f"val_{k}": round(figures[k], 3) for k in FIGURES},
                      "holds": figures["near_collapse"] <= NEAR_COLLAPSE_MAX}))
    if args.png:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        pictures.save_picture(str(args.png), pictures.pairs_picture(run.val[:args.pairs].numpy(), recons.numpy()))


if __name__ == "__main__":
    main()
