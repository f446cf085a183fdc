"""Model quality of a training recipe: train for a fixed budget, score the final checkpoint, draw it.

Trains with the real `asciiray train` command in a subprocess (any flag this
script does not know goes to it unchanged, e.g. `--kl-coeff 1e-4`), then scores
the run's final checkpoint on the run's validation pieces with z = mu
(`asciiray.inference.TrainedVAE.score`) and writes into --out:

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

from asciiray import data, pictures
from asciiray.inference import TrainedVAE

COLUMNS = ("char_acc", "ink_precision", "ink_recall", "ink_f1", "ink_ratio", "near_collapse", "space_collapse")


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


def picture(trained: TrainedVAE, pairs: int, samples: int, path: Path) -> None:
    """Validation inputs beside their reconstructions, then prior samples, at display size, cropped to ink."""
    cfg = trained.meta["config"]["data"]
    texts = data.validation_pieces(trained.meta["corpus"], trained.grid, cfg["validation_prop"], pairs,
                                   cfg["max_pieces"])
    inputs = trained.codes(texts)
    recons = trained.reconstruct(texts).codes
    drawn = trained.sample(samples, seed=0).codes
    sheet = pictures.sheet_picture(drawn, [f"prior sample {i + 1}" for i in range(len(drawn))], columns=samples)
    pictures.save_picture(str(path), pictures.stack_pictures([pictures.pairs_picture(inputs, recons), sheet]))


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
    trained = TrainedVAE.load(run, "cpu")
    scores, meta = trained.score(), trained.meta
    cfg = meta["config"]["data"]
    pieces = len(data.validation_pieces(meta["corpus"], trained.grid, cfg["validation_prop"], 0, cfg["max_pieces"]))
    text = table(command, seconds, meta["preset"], meta["epoch"], pieces, scores)
    own = meta["metrics"]["val/ink_f1"]
    text += f"\nThe run's own final val/ink_f1: {own:.3f} (the scored checkpoint is its latest).\n"
    (out / "quality.md").write_text(text)
    picture(trained, args.pairs, args.samples, out / "quality.png")
    print("\n" + text)
    print(f"wrote {out / 'quality.md'} and {out / 'quality.png'}")


if __name__ == "__main__":
    main()
