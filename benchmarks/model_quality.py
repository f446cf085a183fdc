"""Model quality of a training recipe: train for a fixed budget, score the final checkpoint, draw it.

Trains with the real `asciiray train` command in a subprocess (any flag this
script does not know goes to it unchanged, e.g. `--kl-coeff 1e-4`), then scores
the run's final checkpoint on the run's validation pieces with z = mu
(`asciiray.train.vae.score_checkpoint`) and writes into --out:

- quality.md: one table row (val char_acc, ink precision / recall / F1,
  ink_ratio, near_collapse, space_collapse) and the command;
- quality.png: input | reconstruction pairs of validation pieces, then prior
  samples, at a display resolution, each cropped to its ink.

    .venv/bin/python benchmarks/model_quality.py                      # the defaults: small, 10 epochs
    .venv/bin/python benchmarks/model_quality.py --preset seed -n 20 --out q/seed -- --kl-coeff 1e-4
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from asciiray import charset, data
from asciiray.render import crop_to_ink, glyph_atlas, render_codes, save_png
from asciiray.train import vae

COLUMNS = ("char_acc", "ink_precision", "ink_recall", "ink_f1", "ink_ratio", "near_collapse", "space_collapse")
# Display pixels per character cell (pictures for people: at least 8).
DISPLAY_RES = 8


def train(out: Path, preset: str, epochs: int | None, corpus: str, extra: list[str]) -> tuple[list[str], float]:
    """Run `asciiray train` into out/runs/quality; its command line and wall seconds."""
    command = ["asciiray", "train", "--storage-path", str(out / "runs"), "--run-name", "quality",
               "--preset", preset, *(["-n", str(epochs)] if epochs else []), *(["--corpus", corpus] if corpus else []),
               *extra]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "asciiray", *command[1:]])
    if done.returncode:
        sys.exit(f"model_quality: `{shlex.join(command)}` failed with exit status {done.returncode}")
    return command, time.perf_counter() - started


def text_row(text: str) -> np.ndarray:
    """A one-line label as a code grid [1, len]."""
    return (np.frombuffer(text.encode("ascii"), dtype=np.uint8) - 32)[None]


def sheet(rows: list[list[np.ndarray]], atlas: torch.Tensor) -> np.ndarray:
    """Rows of code grids rendered left to right with a gap, stacked top to bottom, left-aligned."""
    r = atlas.shape[-1]
    drawn = []
    for row in rows:
        height = max(g.shape[0] for g in row)
        parts = []
        for grid in row:
            image = render_codes(torch.from_numpy(grid.astype(np.uint8))[None], atlas)[0].numpy()
            parts += [np.pad(image, ((0, (height - grid.shape[0]) * r), (0, 0))), np.zeros((height * r, 2 * r))]
        drawn.append(np.concatenate(parts[:-1], axis=1))
    width = max(d.shape[1] for d in drawn)
    gap = np.zeros((r // 2, width))
    lines = [np.pad(d, ((0, 0), (0, width - d.shape[1]))) for d in drawn]
    return np.concatenate([x for line in lines for x in (line, gap)][:-1], axis=0)


def picture(run: str, pairs: int, samples: int, path: Path) -> None:
    """Validation inputs beside their reconstructions, a divider, then prior samples."""
    model, meta = vae.load(run)
    grid, cfg = model.cfg.grid, meta["config"]["data"]
    texts = data.validation_pieces(meta["corpus"], grid, cfg["validation_prop"], pairs, cfg["max_pieces"])
    inputs = np.stack([charset.encode(t, grid) for t in texts])
    recons = vae.reconstruct(model, inputs)
    bar = text_row("|")
    rows = [[text_row("input"), bar, text_row("reconstruction")]]
    for a, b in zip(inputs, recons):
        ca, cb = crop_to_ink([a, b])
        rows.append([ca, np.repeat(bar, ca.shape[0], axis=0), cb])
    drawn = model.sample(samples, generator=torch.Generator().manual_seed(0)).argmax(1).to(torch.uint8).numpy()
    rows.append([text_row("prior samples")])
    rows.append([crop_to_ink([s])[0] for s in drawn])
    save_png(str(path), sheet(rows, glyph_atlas(DISPLAY_RES)))


def table(command: list[str], seconds: float, preset: str, epochs: int, pieces: int,
          scores: dict[str, float]) -> str:
    """The scores as a Markdown table under the command that trained the model."""
    head = ["preset", "epochs", "val pieces", *COLUMNS, "train wall s"]
    cells = [preset, str(epochs), str(pieces), *(f"{scores[c]:.3f}" for c in COLUMNS), f"{seconds:.0f}"]
    return "\n".join([f"`{shlex.join(command)}`", "", "| " + " | ".join(head) + " |",
                      "|" + "|".join("---" for _ in head) + "|", "| " + " | ".join(cells) + " |", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("-n", "--n-epochs", type=int, help="the training budget, in epochs (default: the command's)")
    parser.add_argument("--corpus", default="", help="corpus directory or s3:// prefix (default: the embedded one)")
    parser.add_argument("--out", default="benchmarks/out/model_quality", help="directory for the run and results")
    parser.add_argument("--pairs", type=int, default=6, help="input | reconstruction pairs in the PNG")
    parser.add_argument("--samples", type=int, default=4, help="prior samples in the PNG")
    parser.add_argument("--run", help="score this existing run or checkpoint (local or s3://) instead of training")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    out = Path(args.out)
    if args.run:
        run, command, seconds = args.run, ["(scored only)", args.run], float("nan")
    else:
        run = str(out / "runs" / "quality")
        if Path(run).exists():
            sys.exit(f"model_quality: {out} already holds a run: pass another --out, or --run {run} to score it")
        command, seconds = train(out, args.preset, args.n_epochs, args.corpus, extra)
    out.mkdir(parents=True, exist_ok=True)
    scores = vae.score_checkpoint(run)
    model, meta = vae.load(run)
    cfg = meta["config"]["data"]
    pieces = len(data.validation_pieces(meta["corpus"], model.cfg.grid, cfg["validation_prop"], 0,
                                        cfg["max_pieces"]))
    text = table(command, seconds, meta["preset"], meta["epoch"], pieces, scores)
    own = meta["metrics"]["val/ink_f1"]
    text += f"\nThe run's own final val/ink_f1: {own:.3f} (the scored checkpoint is its latest).\n"
    (out / "quality.md").write_text(text)
    picture(run, args.pairs, args.samples, out / "quality.png")
    print("\n" + text)
    print(f"wrote {out / 'quality.md'} and {out / 'quality.png'}")


if __name__ == "__main__":
    main()
