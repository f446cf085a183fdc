"""Neural renderer quality: PSNR on held-out one-hot, soft and random grids after a fixed training budget.

Trains a renderer preset for a fixed number of steps and/or minutes, with a
plain PyTorch loop around `RendererTask`'s own inputs and loss (the same
perturbations, target, Adam, learning rate and gradient clipping as
`asciiray train-renderer`, without Ray, so the budget is exact), then scores
the held-out pieces of the corpus the way validation does:

- one-hot: the held-out grids themselves;
- soft: the held-out grids with every cell perturbed like a decoder's softmax;
- random: random grids of random ink density (one-hot).

Each line gives the mean per-image PSNR (what `val/psnr_*` reports) and the
PSNR of the pooled per-pixel MSE, against the discrete render of the argmax.
For scale it also prints blank paper (an all-zero image) and the continuous
renderer (probability-weighted glyphs) on the same grids; on one-hot grids
the continuous renderer is exact, on soft grids it is the baseline to beat.

    .venv/bin/python benchmarks/renderer_quality.py --minutes 8 --crop 32 --threads 2
    .venv/bin/python benchmarks/renderer_quality.py --steps 3000 -b 64            # on a GPU
    .venv/bin/python benchmarks/renderer_quality.py --checkpoint runs/renderer-...  # score a trained one
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from asciiray import charset, config, corpus
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.models import NeuralRenderer, count_parameters
from asciiray.render import render_probs
from asciiray.train.job import Job
from asciiray.train.renderer import EVAL_SETS, RendererTask, image_errors, target_image
from asciiray.train.options import RendererTrainConfig


def split_grids(uri: str, grid: int, validation_prop: float, eval_pieces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) uint8 grids of the pieces that fit; the held-out ones are the first by id."""
    table = corpus.read_table(uri, columns=["id", "text", "height", "width"])
    fits = [h <= grid and w <= grid for h, w in zip(table["height"].to_pylist(), table["width"].to_pylist())]
    ids = [i for i, f in zip(table["id"].to_pylist(), fits) if f]
    texts = [t for t, f in zip(table["text"].to_pylist(), fits) if f]
    held = corpus.validation_mask(ids, validation_prop)
    train = charset.encode_many([t for t, v in zip(texts, held) if not v], grid)
    val = charset.encode_many([t for t, v in zip(texts, held) if v][:eval_pieces], grid)
    return torch.from_numpy(train), torch.from_numpy(val)


def train(task: RendererTask, grids: torch.Tensor, steps: int, seconds: float) -> tuple[torch.nn.Module, int, float]:
    """The renderer after `steps` steps or `seconds` of training, whichever ends first (0: no limit)."""
    cfg = task.cfg
    model = task.build_model().to(task.device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.learning_rate)
    started = last = time.perf_counter()
    step, recent = 0, []
    while (not steps or step < steps) and (not seconds or time.perf_counter() - started < seconds):
        index = torch.randint(0, len(grids), (cfg.data.batch_size,))
        probs = task.train_inputs(grids[index].to(task.device))
        mse, psnr = image_errors(model(probs), target_image(probs, task.atlas, cfg.task.target))
        optimizer.zero_grad(set_to_none=True)
        mse.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip or math.inf)
        optimizer.step()
        step += 1
        recent.append(psnr.mean().item())
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            print(f"  {last - started:6.0f}s  step {step:6d}  train PSNR {np.mean(recent[-50:]):.2f} dB", flush=True)
    return model.eval(), step, time.perf_counter() - started


@torch.no_grad()
def evaluate(task: RendererTask, model: torch.nn.Module, grids: torch.Tensor, batch: int) -> dict[str, list[float]]:
    """Per-image MSE and PSNR of every scorer on every held-out view, from a fixed seed."""
    generator = torch.Generator(task.device)
    generator.manual_seed(1234)
    rows: dict[str, list[torch.Tensor]] = {}

    def add(key: str, image: torch.Tensor, target: torch.Tensor) -> None:
        mse, psnr = image_errors(image, target)
        rows.setdefault(f"{key}/mse", []).append(mse.cpu())
        rows.setdefault(f"{key}/psnr", []).append(psnr.cpu())

    for start in range(0, len(grids), batch):
        views = task.eval_inputs(grids[start:start + batch].to(task.device), generator)
        for name, probs in views.items():
            target = target_image(probs, task.atlas, task.cfg.task.target)
            add(f"neural/{name}", model(probs), target)
            add(f"continuous/{name}", render_probs(probs, task.atlas), target)
            add(f"blank/{name}", torch.zeros_like(target), target)
    return {k: torch.cat(v).tolist() for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--font-res", type=int, default=0, help="0: the preset's")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=0, help="training steps (0: no step limit)")
    parser.add_argument("--minutes", type=float, default=8.0, help="training time budget (0: no time limit)")
    parser.add_argument("-b", "--batch-size", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32, help="train on crop x crop windows (0: whole grids)")
    parser.add_argument("--learning-rate", type=float, default=RendererTrainConfig().optim.learning_rate)
    parser.add_argument("--eval-pieces", type=int, default=256, help="held-out pieces to score")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="score this trained renderer instead of training one")
    args = parser.parse_args()
    if not (args.steps or args.minutes or args.checkpoint):
        parser.error("give a budget: --steps and/or --minutes")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    values = dict(preset=args.preset, font_res=args.font_res or None, batch_size=args.batch_size,
                  crop=args.crop or None, learning_rate=args.learning_rate, corpus=args.corpus, seed=args.seed)
    if args.checkpoint:
        model = NeuralRenderer.from_checkpoint(args.checkpoint, device)
        values.update(font_res=model.cfg.font_res, font_zoom=model.cfg.font_zoom)
    cfg = config.build(RendererTrainConfig, values)
    task = RendererTask(Job(kind="renderer", cfg=cfg, run_uri="", precision="32", plan=None), device)
    shape = model.cfg if args.checkpoint else task.model_config
    grid = shape.grid
    train_grids, held_out = split_grids(args.corpus, grid, cfg.data.validation_prop, args.eval_pieces)
    where = f"{torch.cuda.get_device_name()}" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"renderer {args.checkpoint or args.preset}: {shape}")
    if args.checkpoint:
        budget = "trained elsewhere"
    else:
        print(f"training on {len(train_grids)} corpus grids ({where}), batch {args.batch_size}, crop {args.crop}, "
              f"lr {args.learning_rate}, budget {args.steps or 'any'} steps / {args.minutes or 'any'} minutes")
        model, steps, seconds = train(task, train_grids, args.steps, args.minutes * 60)
        budget = f"{steps} steps in {seconds / 60:.1f} min ({steps * args.batch_size / seconds:.1f} grids/s)"
    print(f"{count_parameters(model):,} parameters; {budget}")
    scores = evaluate(task, model, held_out, batch=32)
    print(f"\nheld-out scores on {len(held_out)} pieces of {args.corpus} ({grid}x{grid} grids, "
          f"{shape.font_res} px per cell), target: {cfg.task.target} render of the argmax")
    print(f"{'grids':8s} {'scorer':11s} {'mean PSNR':>10s} {'pooled PSNR':>12s} {'MSE':>10s}")
    for name in EVAL_SETS:
        for scorer in ("neural", "continuous", "blank"):
            mse = float(np.mean(scores[f"{scorer}/{name}/mse"]))
            psnr = float(np.mean(scores[f"{scorer}/{name}/psnr"]))
            pooled = -10 * math.log10(max(mse, 1e-10))
            print(f"{name:8s} {scorer:11s} {psnr:9.2f}  {pooled:11.2f}  {mse:10.2e}")


if __name__ == "__main__":
    main()
