"""The VAE training step on a CPU: this checkout vs its losses and step code at an earlier commit, interleaved.

One process, one model architecture, the same batches. The baseline is this
checkout's code with `asciiray/render.py`, `asciiray/losses.py` and
`asciiray/train/vae.py` taken from `--baseline REV` (read with `git show`), so
the comparison isolates what changed there: the loss terms, the Gumbel tail,
the renderer's gather and the metric sums. The two sides take turns step by
step (each its own model copy and Adam, first one side, then the other, the
order swapped every step), so a busy machine slows both alike. Each step is
the VAE task's own `step` (all losses and metric sums), backward, gradient
clipping and Adam; a second part times the loss terms alone (forward and
backward from fixed decoder logits). Prints samples/s by the wall clock and
per CPU second of this process, the ratios, and whether the two sides (same
batches, same random seed per step) trained bit-identical weights.

    .venv/bin/python benchmarks/step.py --baseline 1d32d58
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

import asciiray.train.renderer  # noqa: F401  (imported now: it needs this checkout's losses, not the baseline's)
from asciiray import charset, corpus
from asciiray.charset import NUM_CHARS
from asciiray.embedded import DEFAULT_CORPUS
from asciiray.models import VAE, get_preset
from asciiray.train.loop import autocast_for
from asciiray.train.vae import TrainConfig, VAETask

ROOT = Path(__file__).resolve().parent.parent
SWAPPED = ("asciiray.render", "asciiray.losses", "asciiray.train.vae")


def load_at(rev: str) -> dict[str, types.ModuleType]:
    """The SWAPPED modules as they were at `rev`, each importing the others' old versions."""
    saved = {name: sys.modules[name] for name in SWAPPED}
    old: dict[str, types.ModuleType] = {}
    try:
        for name in SWAPPED:
            path = name.replace(".", "/") + ".py"
            source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True,
                                    text=True, check=True).stdout
            module = types.ModuleType(name)
            module.__file__ = f"{rev}:{path}"
            sys.modules[name] = old[name] = module
            exec(compile(source, module.__file__, "exec"), module.__dict__)
    finally:
        sys.modules.update(saved)
    return old


@contextlib.contextmanager
def installed(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """`modules` in sys.modules for the duration (the task's step imports its losses when called)."""
    saved = {name: sys.modules[name] for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        sys.modules.update(saved)


def timed(fn: Callable[[], None]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision of the baseline losses/render/vae code")
    parser.add_argument("--preset", default="small")
    parser.add_argument("-b", "--batch-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="32", choices=("32", "bf16"))
    parser.add_argument("--image-recon-loss-coeff", type=float, default=0.5)
    parser.add_argument("--char-weights-scaling", type=float, default=0.0)
    parser.add_argument("--ce-label-smoothing", type=float, default=0.0)
    args = parser.parse_args()

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
    batches = torch.from_numpy(charset.encode_many(texts, grid)).split(args.batch_size)
    settings = {**dataclasses.asdict(cfg), "char_freq": [float(x) for x in corpus.char_frequencies(table)]}

    old = load_at(args.baseline)
    sides = {"baseline": old, "this": {name: sys.modules[name] for name in SWAPPED}}
    model = VAE(get_preset(args.preset)).to(device).train()
    runs = {}
    for name, modules in sides.items():
        with installed(modules):
            task = modules["asciiray.train.vae"].VAETask(settings, device)
            task.renderer = modules["asciiray.render"].make_renderer(cfg.renderer, cfg.font_res, cfg.font_zoom)
            replica = copy.deepcopy(model)
            runs[name] = (modules, task, replica, torch.optim.Adam(replica.parameters(), lr=cfg.learning_rate))
    assert VAETask is sides["this"]["asciiray.train.vae"].VAETask

    def train_step(name: str, batch: torch.Tensor) -> Callable[[], None]:
        modules, task, replica, optimizer = runs[name]

        def run() -> None:
            with installed(modules), autocast_for(cfg.precision, device):
                loss, _ = task.step(replica, batch, 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(replica.parameters(), cfg.grad_clip)
            optimizer.step()
        return run

    logits = torch.randn(args.batch_size, NUM_CHARS, grid, grid).contiguous(memory_format=torch.channels_last)
    logits.requires_grad_()
    mu, logvar = torch.zeros(args.batch_size, 8, requires_grad=True), torch.zeros(args.batch_size, 8)

    def loss_step(name: str, batch: torch.Tensor) -> Callable[[], None]:
        modules, task, _, _ = runs[name]

        def run() -> None:
            losses = modules["asciiray.losses"]
            logp = torch.log_softmax(logits.permute(0, 2, 3, 1), -1).permute(0, 3, 1, 2)
            terms = losses.compute_losses((logp, mu, logvar), batch, weight=task.weight,
                                          label_smoothing=cfg.ce_label_smoothing, renderer=task.renderer, tau=0.7,
                                          kl_coeff=cfg.kl_coeff, image_recon_loss_coeff=cfg.image_recon_loss_coeff)
            logits.grad = None
            terms["loss"].backward()
        return run

    print(f"preset {args.preset}, batch {args.batch_size}, precision {args.precision}, {args.threads} threads, "
          f"image loss {args.image_recon_loss_coeff}, {args.warmup} warm-up + {args.steps} timed steps per side; "
          f"baseline: {', '.join(SWAPPED)} at {args.baseline}")
    for part, make in (("training step", train_step), ("loss terms", loss_step)):
        spent = {name: np.zeros(2) for name in sides}
        for i, batch in enumerate(batches):
            order = list(sides) if i % 2 == 0 else list(reversed(sides))
            for name in order:
                torch.manual_seed(i)  # the same noise (reparameterisation, Gumbel) on both sides
                seconds = timed(make(name, batch))
                if i >= args.warmup:
                    spent[name] += seconds
        samples = args.steps * args.batch_size
        rates = {name: samples / s for name, s in spent.items()}
        for k, clock in enumerate(("wall clock", "per CPU second")):
            print(f"{part:13} {clock:14}: baseline {rates['baseline'][k]:7.1f} samples/s, "
                  f"this {rates['this'][k]:7.1f} samples/s, ratio {rates['this'][k] / rates['baseline'][k]:.3f}")
    same = all(torch.equal(a, b) for a, b in zip(runs["baseline"][2].state_dict().values(),
                                                  runs["this"][2].state_dict().values()))
    print(f"after {len(batches)} training steps on the same batches and noise, the two models' weights are "
          f"{'bit for bit the same' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
